"""Trainer module (`run_fn`) and SavedModel export with the transform graph embedded."""
