# The two entry points: `make lab` (set-up + main job) and `make test` (set-up + every check).
# Both work on a fresh Debian machine with Python 3.11; nothing here needs more than the PyPI and
# Debian registries.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out
POSITIONS ?= 40000
export NUMBA_CACHE_DIR ?= $(CURDIR)/.cache/numba
# the tests give themselves a private HOME; pip's download cache stays the user's (the Binder
# test installs the pinned set into a fresh venv and should not download it every run)
export PIP_CACHE_DIR ?= $(HOME)/.cache/pip

.PHONY: setup kernel lab test lint typecheck unit bench data price clean

# The installed set is the pinned set of binder/requirements.txt (as constraints): what the tests
# run with does not change when a dependency publishes a new release, and Binder gets the same.
PINS := binder/requirements.txt

$(BIN)/python:
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq python3-venv)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c $(PINS) setuptools wheel

$(VENV)/.installed: $(BIN)/python pyproject.toml setup.py $(PINS) $(wildcard workbench/_ext/*.pyx)
	$(BIN)/pip install -q -c $(PINS) -e '.[test]'
	$(BIN)/python setup.py -q build_ext --inplace
	touch $@

setup: $(VENV)/.installed

# The reference market and book, generated once (deterministic seeds).
$(OUT)/market.json: | setup
	@mkdir -p $(OUT)
	$(BIN)/workbench market generate --out $@

$(OUT)/book.parquet: $(OUT)/market.json | setup
	$(BIN)/workbench book generate --market $(OUT)/market.json --positions $(POSITIONS) --seed 1 --out $@

data: $(OUT)/market.json $(OUT)/book.parquet

price: data
	$(BIN)/workbench price --book $(OUT)/book.parquet --market $(OUT)/market.json --out $(OUT)/risk.parquet

# The workbench kernel: this venv's Python, a shared Numba cache, the desk service's name.
kernel: setup
	$(BIN)/python -m ipykernel install --user --name workbench --display-name "Workbench" \
		--env NUMBA_CACHE_DIR $(NUMBA_CACHE_DIR) --env WORKBENCH_SERVICE desk >/dev/null

# Main job: the live service on the reference book with the synthetic feed, and JupyterLab on
# the desk notebook. Stopping JupyterLab (Ctrl-C) stops the service too.
# (JupyterLab refuses to run as root unless told: containers and CI machines often are root.)
LAB_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)
# The service (its risk store under its run folder), its HTTP API on 127.0.0.1:$(API_PORT) and
# JupyterLab on the desk notebook; stopping JupyterLab stops the other two.
API_PORT ?= 8000
lab: price kernel
	$(BIN)/workbench serve --book $(OUT)/book.parquet --market $(OUT)/market.json --name desk --detach
	$(BIN)/workbench api --service desk --port $(API_PORT) > $(OUT)/api.log 2>&1 & api=$$!; \
		$(BIN)/jupyter lab notebooks/desk.ipynb --ip 127.0.0.1 --no-browser $(LAB_ROOT); \
		status=$$?; kill $$api; $(BIN)/workbench stop --name desk; exit $$status

lint: setup
	$(BIN)/ruff check workbench tests benchmarks
	$(BIN)/ruff format --check workbench tests benchmarks

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/python -m pytest -q --durations=15

test: lint typecheck unit

bench: data
	$(BIN)/python benchmarks/run_all.py --out $(OUT)/benchmarks.txt

clean:
	rm -rf build $(OUT) .cache workbench/_ext/*.so workbench/_ext/*.c
