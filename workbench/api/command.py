"""``workbench api``: serve the HTTP API of a running service; ``workbench api token``: make a
bearer token. FastAPI and uvicorn load only when the command runs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

_TOKENS_ENV = "WORKBENCH_API_TOKENS"


def default_tokens() -> Path:
    """``$WORKBENCH_API_TOKENS`` or ``~/.workbench/api-tokens``."""
    env = os.environ.get(_TOKENS_ENV)
    return Path(env) if env else Path.home() / ".workbench" / "api-tokens"


def _cmd_api(args: argparse.Namespace) -> int:
    from workbench.api.server import serve
    from workbench.api.settings import ApiSettings
    from workbench.api.tokens import TokenBook

    if not args.service:
        raise ValueError("workbench api: --service NAME is required (the service to follow)")
    if args.nice:
        os.nice(args.nice)  # the service's processes before the API's answers
    path: Path | None = args.tokens
    if path is None and default_tokens().is_file():
        path = default_tokens()
    config = ApiSettings(
        service=args.service,
        tokens=None if path is None else TokenBook.load(path),
        store=args.store,
        max_rows=args.max_rows,
    )
    guard = f"tokens from {path}" if path else "no tokens (loopback only)"
    print(f"workbench api: service {args.service} on http://{args.host}:{args.port}/docs; {guard}")
    serve(config, host=args.host, port=args.port)
    return 0


def _cmd_token(args: argparse.Namespace) -> int:
    from workbench.api.tokens import add_token

    path = args.tokens or default_tokens()
    token = add_token(path, args.scope)
    print(token)
    print(f"(its {args.scope} hash appended to {path}; the token is shown only once)", flush=True)
    return 0


def _whole(text: str, low: int, high: int, what: str) -> int:
    """``text`` as a whole number in ``[low, high]``; ``what`` names the range in the error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be {what}: {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {value}")
    return value


def _rows(text: str) -> int:
    return _whole(text, 1, sys.maxsize, "positive")


def _niceness(text: str) -> int:
    return _whole(text, 0, 19, "0 to 19")


def add_api_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``api`` (and ``api token``) to the ``workbench`` command's subcommands."""
    api = sub.add_parser("api", help="serve the HTTP API of a running service (docs/api.md)")
    api.add_argument("--service", help="name of the running service to follow")
    api.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    api.add_argument("--port", type=_port, default=8000)
    api.add_argument(
        "--tokens",
        type=Path,
        help=f"bearer tokens file (default: ${_TOKENS_ENV} or ~/.workbench/api-tokens if it "
        "exists; none: no token asked, loopback only)",
    )
    api.add_argument("--store", type=Path, help="risk store folder (default: <run dir>/store)")
    api.add_argument("--max-rows", type=_rows, default=50_000, dest="max_rows",
                     help="most rows in one answer (more: 413)")  # fmt: skip
    api.add_argument("--nice", type=_niceness, default=0,
                     help="niceness added to the API process (0-19; default 0)")  # fmt: skip
    api.set_defaults(func=_cmd_api)
    more = api.add_subparsers(dest="api_command", metavar="{token}")
    token = more.add_parser("token", help="make a bearer token, append its hash to the file")
    token.add_argument("--scope", choices=("read", "control"), default="read")
    token.add_argument("--tokens", type=Path, default=argparse.SUPPRESS,
                       help="tokens file (default as for workbench api)")  # fmt: skip
    token.set_defaults(func=_cmd_token)
