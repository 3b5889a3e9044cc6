"""Bearer tokens of the HTTP API: a file of hashed tokens, one per line, each with its scope.

The file holds no secret: each line is the SHA-256 of a token (hex) and its scope::

    # workbench API tokens: sha256 hex, then the scope (read or control)
    3f1c…9a0e read
    77d2…41bb control

``read`` may read every resource; ``control`` may also ask what changes or costs the service
work (``POST /v1/whatif``). Blank lines and lines starting with ``#`` are ignored.
:func:`add_token` makes a new token, appends its hash and returns the token: it is shown once
and never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

Scope = Literal["read", "control"]
SCOPES: Final[tuple[Scope, ...]] = ("read", "control")
"""Every scope, each one granting the ones before it (``control`` may also read)."""
_HEADER: Final = (
    "# workbench API tokens: sha256 hex of each token, then its scope (read or control)\n"
)
_BY_NAME: Final[dict[str, Scope]] = {s: s for s in SCOPES}
_TOKEN_BYTES: Final = 32
"""Random bytes in a new token (256 bits, URL-safe base64 text)."""


class TokenFileError(ValueError):
    """A tokens file that cannot be read or has a line that is not ``<sha256 hex> <scope>``."""


def token_hash(token: str) -> str:
    """The SHA-256 of ``token`` (UTF-8) as 64 lower-case hex digits, as the file stores it."""
    return hashlib.sha256(token.encode()).hexdigest()


def grants(held: Scope, needed: Scope) -> bool:
    """Whether a token of scope ``held`` may do what needs ``needed``."""
    return SCOPES.index(held) >= SCOPES.index(needed)


def _parse_line(line: str, where: str) -> tuple[str, Scope] | None:
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    parts = text.split()
    if len(parts) != 2:
        raise TokenFileError(f"{where}: expected '<sha256 hex> <scope>', got {text[:80]!r}")
    digest, scope = parts[0].lower(), parts[1]
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise TokenFileError(f"{where}: {parts[0][:80]!r} is not a SHA-256 hex digest")
    if scope in _BY_NAME:
        return digest, _BY_NAME[scope]
    raise TokenFileError(f"{where}: scope {scope!r} is not one of {', '.join(SCOPES)}")


@dataclass(frozen=True)
class TokenBook:
    """The tokens an API accepts, by hash.

    Parameters
    ----------
    scopes
        SHA-256 hex digest → scope.
    """

    scopes: dict[str, Scope]

    @classmethod
    def load(cls, path: str | Path) -> TokenBook:
        """Read a tokens file (see the module docstring).

        Raises
        ------
        TokenFileError
            The file cannot be read, a line is malformed, or it holds no token.
        """
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise TokenFileError(f"tokens file {path}: {exc.strerror or exc}") from None
        scopes: dict[str, Scope] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            parsed = _parse_line(line, f"tokens file {path}, line {number}")
            if parsed is not None:
                scopes[parsed[0]] = parsed[1]
        if not scopes:
            raise TokenFileError(f"tokens file {path} holds no token (workbench api token)")
        return cls(scopes)

    def scope_of(self, token: str) -> Scope | None:
        """The scope of ``token``, or None if it is not in the book (compared in constant
        time per entry)."""
        digest = token_hash(token)
        found: Scope | None = None
        for known, scope in self.scopes.items():
            if hmac.compare_digest(known, digest):
                found = scope
        return found


def add_token(path: str | Path, scope: Scope) -> str:
    """Make a new token of ``scope``, append its hash to the tokens file at ``path`` (created
    with mode 0600 and a header line if missing) and return the token.

    Raises
    ------
    TokenFileError
        ``scope`` is not one of :data:`SCOPES`, or the file cannot be written.
    """
    if scope not in _BY_NAME:
        raise TokenFileError(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as out:
            if out.tell() == 0:
                out.write(_HEADER)
            out.write(f"{token_hash(token)} {scope}\n")
    except OSError as exc:
        raise TokenFileError(f"tokens file {path}: {exc.strerror or exc}") from None
    return token
