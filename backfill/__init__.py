"""Backfill: historical LEM schedules and slippage for every order window of a period (`lems backfill`).

raw bar files -> the ExampleGen's Beam logic (`components.example_gen.ingest.MarketDataToExamples`)
-> windows of the requested dates/assets -> pushed SavedModel (transform graph inside; loaded once per
worker, batched) -> one row per (order window, scenario) with the ONE slippage evaluator
(`lem_model.slippage`) -> Parquet partitioned by date and asset, committed atomically (`backfill.commit`).

Modules: `spec` (what to backfill), `rows` (allocations -> rows), `commit` (staging, journal, manifest),
`beam_pipeline` (the Beam graph and `run_backfill`).
"""
