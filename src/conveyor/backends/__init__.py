"""Engines users already trust, over the same immutable Pipeline: Prefect (flows, the managed
server, deployments). The only package that imports Prefect (and kfp)."""
