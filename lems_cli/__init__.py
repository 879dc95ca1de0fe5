"""The `lems` command line: thin entry points over lem_model, components and pipeline."""
