# lbam — every target sets up its own environment (.venv) from requirements.txt when missing or stale.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The data folder follows lbam.paths (LBAM_DATA_DIR, paths.data_dir, ../shared/data, data/): one rule for make,
# the command-line tools and the tests.
# Extra pytest arguments, e.g. make test PYTEST_ARGS="-k attention"
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv lint format test data quick curve reproduce plots report bench clean

help: ## List the targets
	@grep -E '^[a-z][a-zA-Z_-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

venv: $(STAMP) ## Create or refresh .venv from requirements.txt (exact pins)

lint: $(STAMP) ## ruff lint + format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP) ## Apply ruff fixes and formatting
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

test: lint ## Lint, then the test suite (CPU only, no network)
	@# pytest exits 5 when it collects nothing: that is a broken suite, not a pass.
	@$(PY) -m pytest -n 2 $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests -- failing on purpose"; exit 1; fi; \
	  exit $$rc

data: $(STAMP) ## Download what is missing of BCCD and Oxford-IIIT Pet into LBAM_DATA_DIR
	@# Try both, fail at the end if either failed (each prints its own clear error).
	@rc=0; for d in bccd oxford_pets; do $(PY) -m lbam.data download dataset=$$d || rc=1; done; exit $$rc

quick: $(STAMP) ## Quick CPU profile of both embodiments (one seed), then the report
	$(PY) scripts/reproduce.py --profile quick

curve: $(STAMP) ## Embodiment 1 learning curve on real BCCD (7 settings x sizes x seeds, CPU), then the report
	$(PY) scripts/reproduce.py --profile curve

reproduce: $(STAMP) ## Full protocol: data, embodiments 1+2 x 7 settings x 3 seeds, then the report
	@# A dataset that cannot be fetched is reported by make data; the runner then skips its runs and says so.
	-$(MAKE) data
	$(PY) scripts/reproduce.py --profile full

plots: $(STAMP) ## Regenerate tables and figures from results/runs (never retrains)
	$(PY) -m lbam.report

report: plots ## Same as plots

bench: $(STAMP) ## Module-cost and pipeline-efficiency benchmarks -> results/bench/
	$(PY) -m lbam.bench

clean: ## Remove caches (keeps .venv, data and results)
	rm -rf .pytest_cache .ruff_cache **/__pycache__
