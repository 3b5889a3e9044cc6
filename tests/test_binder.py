"""``binder/``: the pins, ``postBuild`` and ``start`` really work.

What this checks, and what it does not:

* ``requirements.txt`` pins every runtime dependency of ``pyproject.toml`` (plus matplotlib for
  the report), each pin satisfies the pyproject specifier, and each pin is the version installed
  in the environment the test suite runs in, so the pinned set is the tested set.
* The pins install from the package index into a fresh virtual environment and ``postBuild``
  succeeds there: the package imports with its compiled kernels and the kernelspec runs that
  environment's interpreter (pip's download cache, ``PIP_CACHE_DIR``, spares the downloads).
* ``postBuild`` runs, unmodified, in a temporary copy of the repository (sources only, no
  compiled extension), with the test environment's interpreter on ``PATH`` and its two
  overrides pointing the editable install and the kernelspec at temporary prefixes (so the
  environment itself is not touched): the Cython extension is compiled in the copy and
  imports, the ``workbench`` kernelspec is installed and runs this interpreter, the package's
  install record is in the prefix, and the reference market and book are generated.
* ``start`` launches the service on those files and then runs the command it is given.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import workbench

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (BINDER / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"not pinned: {line}"
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_requirements_pin_the_tested_versions() -> None:
    pins = _pins()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in map(Requirement, deps):
        name = dep.name.lower().replace("_", "-")
        assert name in pins, f"{dep.name} is not in binder/requirements.txt"
        assert dep.specifier.contains(pins[name]), f"{name}=={pins[name]} does not satisfy {dep}"
    assert "matplotlib" in pins  # the EOD report's figures
    for name, version in pins.items():
        assert importlib.metadata.version(name) == version, f"{name}: tested with another version"


def _copy_sources(target: Path) -> Path:
    repo = target / "repo"
    repo.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, repo / name)
    skip = shutil.ignore_patterns("__pycache__", "*.so", "*.c")
    shutil.copytree(ROOT / "workbench", repo / "workbench", ignore=skip)
    shutil.copytree(BINDER, repo / "binder")
    return repo


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k in ("HOME", "NUMBA_CACHE_DIR", "WORKBENCH_RUN_DIR", "LANG") or k.startswith("JUPYTER")
    }
    env["PATH"] = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    env.update(extra)
    return env


def _installed() -> list[tuple[str, int]]:
    """This environment's own installation of the package (names and mtimes)."""
    dist = importlib.metadata.distribution("workbench")
    site = Path(str(dist.locate_file("")))
    return sorted((p.name, p.stat().st_mtime_ns) for p in site.glob("*workbench*"))


@pytest.mark.slow
def test_postbuild_builds_extension_kernelspec_and_data(tmp_path: Path) -> None:
    installed = _installed()
    assert installed
    repo = _copy_sources(tmp_path)
    assert not list((repo / "workbench" / "_ext").glob("*.so"))
    env = _env(
        tmp_path,
        WORKBENCH_PIP_PREFIX=str(tmp_path / "prefix"),
        WORKBENCH_KERNEL_PREFIX=str(tmp_path / "kernels"),
        WORKBENCH_POSITIONS="200",
    )
    run = subprocess.run(
        ["bash", str(repo / "binder" / "postBuild")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    built = list((repo / "workbench" / "_ext").glob("curve_kernels*.so"))
    assert len(built) == 1
    assert f"compiled kernels: {built[0]}" in run.stdout
    spec = json.loads(
        (tmp_path / "kernels/share/jupyter/kernels/workbench/kernel.json").read_text()
    )
    assert Path(spec["argv"][0]).resolve() == Path(sys.executable).resolve()
    assert spec["language"] == "python"
    records = list((tmp_path / "prefix").glob("lib/python*/site-packages/workbench-*.dist-info"))
    assert len(records) == 1
    assert (repo / "out" / "market.json").is_file()
    assert (repo / "out" / "book.parquet").is_file()
    assert _installed() == installed  # this environment's installation untouched

    # binder/start: the service starts on the generated files, then the command runs
    name = "bindertest"
    probe = (
        "import workbench; c = workbench.connect('bindertest'); "
        "print('ready', c.status()['ready'], c.status()['positions']); c.close()"
    )
    try:
        started = subprocess.run(
            ["bash", str(repo / "binder" / "start"), sys.executable, "-c", probe],
            cwd=tmp_path,
            env={**env, "WORKBENCH_SERVICE": name, "WORKBENCH_RATE": "50"},
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert started.returncode == 0, started.stdout + started.stderr
        assert "ready True 200" in started.stdout
    finally:
        for desc in workbench.running():
            if desc.name == name:
                workbench.connect(name).stop()


def test_pins_install_and_postbuild_succeed_in_a_fresh_virtual_environment(
    tmp_path: Path,
) -> None:
    """What Binder does, in a new venv: install binder/requirements.txt from the package index
    (``PIP_CACHE_DIR`` from the caller's environment, if set, saves the downloads), then run
    ``postBuild`` unmodified; the package, its compiled kernels and the kernelspec work there."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    env = _env(tmp_path, WORKBENCH_POSITIONS="200")
    env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"
    env["VIRTUAL_ENV"] = str(venv)
    for key in ("PIP_CACHE_DIR", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST"):
        if key in os.environ:
            env[key] = os.environ[key]
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-r", str(BINDER / "requirements.txt")],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    repo = _copy_sources(tmp_path)
    run = subprocess.run(
        ["bash", str(repo / "binder" / "postBuild")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    check = subprocess.run(
        [str(py), "-c",
         "import workbench, workbench._ext.curve_kernels as k, numba, polars; "
         "print(workbench.__version__, k.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert str(repo / "workbench" / "_ext") in check.stdout  # the editable install, built
    spec = json.loads((venv / "share/jupyter/kernels/workbench/kernel.json").read_text())
    assert Path(spec["argv"][0]).parent == py.parent  # the fresh venv's interpreter
    assert (repo / "out" / "book.parquet").is_file()
