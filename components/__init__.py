"""Custom TFX components of lems-tfx and their Beam/TF code (built on `lem_model`)."""
