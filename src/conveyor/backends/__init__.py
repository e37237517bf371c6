"""Engines users already trust, over the same immutable Pipeline: Prefect (flows, the managed
server, deployments) and Kubeflow Pipelines (a compiled v2 spec, `backends/kfp/`). The only
package that imports Prefect and kfp."""
