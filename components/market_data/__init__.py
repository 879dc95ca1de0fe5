"""Market data: readers, synthetic generator, grid alignment/resampling and the ONE window cutter (pandas/NumPy)."""
