"""Custom ExampleGen: market-data files -> order-window tf.Examples with time-ordered, embargoed splits."""
