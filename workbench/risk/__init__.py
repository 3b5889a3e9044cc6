"""Pure risk arithmetic over columns: aggregation, cells, limits, what-if shocks, recon.

No sockets, processes or event loops: the service, the batch path and the reports call it."""
