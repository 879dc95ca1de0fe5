"""The LEM TFX pipeline: configuration (`configs`), `create_pipeline` (`pipeline`), local runner."""
