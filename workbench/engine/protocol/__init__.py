"""What crosses a socket: the messages, the configuration, and what a request may ask."""
