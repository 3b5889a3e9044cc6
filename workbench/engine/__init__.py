"""Processes of the running service (feed, ingest, workers, aggregator, supervisor)."""
