"""The layers import one way: the pure libraries load none of the service or the notebook."""

from __future__ import annotations

import subprocess
import sys

import pytest

_SERVICE = ("zmq", "ipywidgets", "bqplot", "workbench.engine", "workbench.widgets")


@pytest.mark.parametrize("module", ["workbench.pricing", "workbench.market", "workbench.book"])
def test_a_pure_library_loads_no_service_or_widget_code(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {_SERVICE!r} "
        f"or any(m == s or m.startswith(s + '.') for s in {_SERVICE!r}))\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", f"import {module} loaded {done.stdout.strip()}"


def test_the_client_names_still_load_from_the_package() -> None:
    import workbench

    assert workbench.start.__module__.startswith("workbench.client")
    assert workbench.RemoteConfig.__name__ == "RemoteConfig"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = workbench.nothing  # type: ignore[attr-defined]
