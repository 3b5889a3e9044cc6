"""The one error a client raises."""

from __future__ import annotations


class ServiceError(RuntimeError):
    """The service refused a request or could not be reached (the message says which)."""
