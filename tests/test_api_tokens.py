"""The API's pieces that need no service: the tokens file, format negotiation, the loopback
rule, and the ``workbench api token`` command."""

from __future__ import annotations

import hashlib
import stat
import subprocess
import sys
from pathlib import Path

import msgspec
import polars as pl
import pytest

from workbench.api.formats import FormatError, headers, negotiate, table_bytes
from workbench.api.server import ApiConfigError, check, is_loopback
from workbench.api.settings import ApiSettings
from workbench.api.tokens import TokenBook, TokenFileError, add_token, grants, token_hash

ARROW = "application/vnd.apache.arrow.stream"


def test_a_new_token_is_stored_only_as_its_hash_with_its_scope(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "api-tokens"
    read, control = add_token(path, "read"), add_token(path, "control")
    text = path.read_text()
    assert read not in text
    assert control not in text
    assert f"{hashlib.sha256(read.encode()).hexdigest()} read" in text
    assert text.startswith("#")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    book = TokenBook.load(path)
    assert book.scope_of(read) == "read"
    assert book.scope_of(control) == "control"
    assert book.scope_of(read + "x") is None
    assert book.scope_of("") is None
    assert len(read) >= 40  # 256 random bits


def test_scopes_grant_what_they_should() -> None:
    assert grants("read", "read")
    assert grants("control", "read")
    assert grants("control", "control")
    assert not grants("read", "control")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("abc read\n", "line 1: 'abc' is not a SHA-256"),
        (f"# c\n\n{'0' * 64} admin\n", "line 3: scope 'admin'"),
        (f"{'0' * 64}\n", "line 1: expected '<sha256 hex> <scope>'"),
        (f"{'0' * 64} read extra\n", "line 1: expected"),
        (f"{'g' * 64} read\n", "is not a SHA-256"),
        ("# only comments\n\n", "holds no token"),
    ],
)
def test_a_malformed_tokens_file_is_refused_naming_the_line(
    tmp_path: Path, text: str, needle: str
) -> None:
    path = tmp_path / "tokens"
    path.write_text(text)
    with pytest.raises(TokenFileError, match="tokens file") as err:
        TokenBook.load(path)
    assert needle in str(err.value)


def test_a_missing_tokens_file_and_a_bad_scope_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="No such file"):
        TokenBook.load(tmp_path / "none")
    with pytest.raises(TokenFileError, match="scope 'admin'"):
        add_token(tmp_path / "t", "admin")  # type: ignore[arg-type]
    assert token_hash("abc") == hashlib.sha256(b"abc").hexdigest()


def test_the_format_follows_the_parameter_then_the_accept_header() -> None:
    assert negotiate(None, None) == "json"
    assert negotiate("text/html, */*", None) == "json"
    assert negotiate(f"text/html;q=0.9, {ARROW}", None) == "arrow"
    assert negotiate("TEXT/CSV; charset=utf-8", None) == "csv"
    assert negotiate(ARROW, "csv") == "csv"
    with pytest.raises(FormatError, match="format='xlsx'"):
        negotiate(None, "xlsx")


def test_tables_render_in_each_format_with_non_finite_numbers_as_null() -> None:
    frame = pl.DataFrame({"desk": ["A", "B"], "pv": [1.5, float("inf")], "n": [1, 2]})
    assert table_bytes(frame, "json", {"seq": 3}) == (
        b'{"seq":3,"rows":[{"desk":"A","pv":1.5,"n":1},{"desk":"B","pv":null,"n":2}]}'
    )
    assert pl.read_ipc_stream(table_bytes(frame, "arrow", {})).equals(frame)
    assert table_bytes(frame, "csv", {}).decode().splitlines()[0] == "desk,pv,n"
    assert headers({"snapshot_seq": 4, "rows": [1]}) == {"X-Workbench-Snapshot-Seq": "4"}


def test_json_rows_are_the_values_of_a_dict_per_row_for_every_column_type() -> None:
    frame = pl.DataFrame(
        {
            "desk": pl.Series(["A", None, 'C"\n'], dtype=pl.Categorical),
            "kind": pl.Series(["fx", "rates", "fx"], dtype=pl.Enum(["fx", "rates"])),
            "pv": [0.1 + 0.2, float("nan"), -1e300],
            "n": [1, None, 2**62],
            "stale": [True, False, None],
            "note": ["é", "", None],
        }
    )
    rows = frame.with_columns(pl.col(pl.Categorical, pl.Enum).cast(pl.String)).to_dicts()
    body = table_bytes(frame, "json", {"seq": 3, "g": "desk"})
    assert body.startswith(b'{"seq":3,"g":"desk","rows":[{"desk":"A","kind":"fx","pv":0.30000000')
    assert msgspec.json.decode(body) == {"seq": 3, "g": "desk", "rows": [
        {k: None if isinstance(v, float) and v != v else v for k, v in r.items()} for r in rows
    ]}  # fmt: skip
    assert table_bytes(frame.clear(), "json", {}) == b'{"rows":[]}'


def test_a_niceness_beyond_19_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "api", "--service", "x", "--nice", "20"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--nice: must be 0 to 19: 20" in done.stderr


def test_only_loopback_may_bind_without_tokens(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("10.1.2.3")
    assert not is_loopback("no-such-host.invalid")
    open_server = ApiSettings(service="x")
    check(open_server, "127.0.0.1")
    with pytest.raises(ApiConfigError, match=r"--host 0\.0\.0\.0 is reachable"):
        check(open_server, "0.0.0.0")
    add_token(tmp_path / "t", "read")
    check(ApiSettings(service="x", tokens=TokenBook.load(tmp_path / "t")), "0.0.0.0")


def test_the_token_command_prints_a_token_that_the_file_accepts(tmp_path: Path) -> None:
    path = tmp_path / "api-tokens"
    done = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "api", "token", "--scope", "control",
         "--tokens", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    token = done.stdout.split()[0]
    assert TokenBook.load(path).scope_of(token) == "control"
    assert "shown only once" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "api", "token", "--scope", "root"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "invalid choice: 'root'" in bad.stderr


def test_the_tokens_file_may_be_named_before_or_after_token(tmp_path: Path) -> None:
    for order in (["api", "--tokens", str(tmp_path / "a"), "token"],
                  ["api", "token", "--tokens", str(tmp_path / "b")]):  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "workbench.cli", *order],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        path = Path(order[order.index("--tokens") + 1])
        assert TokenBook.load(path).scope_of(done.stdout.split()[0]) == "read"
    bad = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "api", "--service", "x", "--max-rows", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "--max-rows: must be positive: 0" in bad.stderr
