"""Transform module: `preprocessing_fn` applies `lem_model.features.build_features` in the TFT graph."""
