"""Kubeflow Pipelines: compile `pipeline.pipeline.create_pipeline(config)` to a KFP V2 pipeline spec (JSON).

See `kubeflow/README.md` (image, GPU request, Beam runners) and `kubeflow.runner.compile_pipeline`.
"""
