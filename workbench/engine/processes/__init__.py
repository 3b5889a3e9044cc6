"""The service's processes (supervisor, feed, ingest, workers, standby, aggregator) and
what each runs."""
