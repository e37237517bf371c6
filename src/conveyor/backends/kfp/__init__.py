"""Kubeflow Pipelines: a conveyor Pipeline compiled into a KFP v2 PipelineSpec (kfp's own types).

`compile_pipeline` builds the spec from a traced Pipeline and a `KfpBuild` (images by digest,
code bundles, runtime hashes: resolved by `conveyor.ops.compile`); `check.validate` parses it
strictly and checks every reference in it. See docs/kubeflow.md.
"""
