"""Notebook views that talk to a running service through ``workbench.engine.client``."""
