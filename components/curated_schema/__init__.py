"""CuratedSchemaGen: the curated raw-example schema adapted to the run's sizes, produced at run time."""
