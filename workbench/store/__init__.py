"""The risk store: every published snapshot's roll-ups and breaches, and the per-position risk
at intervals, kept as date-partitioned Parquet files (docs/store.md).

``query`` reads it (:func:`history`, :func:`breaches`, :func:`positions`), ``layout`` says
where its files are and writes them atomically, ``rows`` gives their schemas, ``writer``
buffers rows and writes a file per interval (the ``store_writer`` process of a service runs it).
"""

from workbench.store.query import breaches, history, positions, store_root

__all__ = ["breaches", "history", "positions", "store_root"]
