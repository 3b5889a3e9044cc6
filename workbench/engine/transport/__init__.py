"""How bytes move between the service's processes: shared memory, sockets, remote access."""
