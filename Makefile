# lbam — every target sets up its own environment (.venv) from requirements.txt when missing or stale.
SHELL := /bin/bash
# The interpreter that builds .venv: PYTHON=/path/to/python wins, else the first of PYTHONS whose version is in
# PY_VERSIONS, the versions every exact pin of requirements.txt has wheels for (numpy 2.4, pandas 3 and scipy 1.17
# need 3.11+; 3.11 first: the version of environment.yml and of the committed results).
PYTHONS := python3.11 python3.12 python3
PY_VERSIONS := 3.11 3.12
PY_CHECK = import sys; print(sys.executable if "%d.%d" % sys.version_info[:2] in "$(PY_VERSIONS)".split() else "")
PYTHON ?= $(firstword $(foreach p,$(PYTHONS),$(shell $(p) -c '$(PY_CHECK)' 2>/dev/null)))
PY_VERSION = $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The data folder follows lbam.paths (LBAM_DATA_DIR, paths.data_dir, ../shared/data, data/): one rule for make,
# the command-line tools and the tests.
# Extra pytest arguments, e.g. make test PYTEST_ARGS="-k attention"
PYTEST_ARGS ?=
# Runs at once in make quick / curve / reproduce, per experiment (scripts/pool.py): auto = 1 on the CPU, on a GPU
# as many as its free memory holds at the largest model's probed peak (the plan prints the number); N = N.
JOBS ?= auto
# make train ARGS="experiment=embodiment1_quick attention=lbam": the overrides of one training run.
ARGS ?=
# Runs and the report write to results/local/ (yours, git-ignored) and never change a tracked file; make plots
# shows your runs beside the committed reference (results/runs). REFERENCE=1 is the maintainers' path: rows into
# results/runs, and make plots regenerates results/tables, results/figures and the README block.
REFERENCE ?=
REF := $(if $(filter 1,$(REFERENCE)),--reference)
# make device-check OUT=/tmp/x DEVICE=cpu: where it writes (default: a fresh temp folder) and on what (default:
# cuda; without a GPU it fails in one line unless DEVICE=cpu).
OUT ?=
DEVICE ?=
# make device-check runs on a fresh GPU machine that may have no package index: with this checkout's .venv where
# there is one, else the machine's python3 and its own torch, plus what its image lacks, installed from the
# wheels that `make wheels` put in .whl/ beforehand (git-ignored; four pure-Python wheels, 0.4 MB).
DEVICE_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
WHEELS := hydra-core omegaconf antlr4-python3-runtime hydra-joblib-launcher

.DEFAULT_GOAL := help
.PHONY: help venv lint format test data train quick curve bridge reproduce plots report bench wheels device-check \
	gpu-check clean

help: ## List the targets
	@grep -E '^[a-z][a-zA-Z_-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	$(if $(wildcard $(PY)),,$(if $(filter $(PY_VERSIONS),$(PY_VERSION)),,$(error the pinned environment needs \
	  Python $(PY_VERSIONS) but PYTHON='$(PYTHON)' is $(or $(PY_VERSION),not found): install one or run \
	  make PYTHON=/path/to/python3.11)))
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
	@$(PY) -m pytest -n 2 --dist worksteal --durations=12 $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests -- failing on purpose"; exit 1; fi; \
	  exit $$rc

data: $(STAMP) ## Download what is missing of BCCD and Oxford-IIIT Pet into LBAM_DATA_DIR
	@# Try both, fail at the end if either failed (each prints its own clear error).
	@rc=0; for d in bccd oxford_pets; do $(PY) -m lbam.data download dataset=$$d || rc=1; done; exit $$rc

train: $(STAMP) ## One training run: make train ARGS="experiment=embodiment1_quick attention=lbam"
	$(PY) -m lbam.train $(strip $(if $(REF),paths=reference) $(ARGS))

# The reproduction commands print their plan first (runs, finished, remaining, a time estimate, what is skipped
# and why); a missing dataset is fetched there, or its experiment skipped with the command that gets it.
quick: $(STAMP) ## Both embodiments, quick CPU profile, seed 0 (2.5 min of runs on 2 cores), then the report
	$(PY) scripts/reproduce.py --profile quick --jobs $(JOBS) $(REF)

curve: $(STAMP) ## Embodiment 1 learning curve, real BCCD, 693 CPU runs (2.85 h at JOBS=2), then the report
	$(PY) scripts/reproduce.py --profile curve --jobs $(JOBS) $(REF)

bridge: $(STAMP) ## Embodiment 1 at 32/64/128 px, none/bam/lbam, 225 CPU runs (3.65 h at JOBS=2), then the report
	$(PY) scripts/reproduce.py --profile bridge --jobs $(JOBS) $(REF)

reproduce: $(STAMP) ## Full protocol: embodiments 1+2 x 7 settings x 3 seeds, then the report (JOBS=auto or N)
	$(PY) scripts/reproduce.py --profile full --jobs $(JOBS) $(REF)

plots: $(STAMP) ## Your runs (results/local) beside the reference; REFERENCE=1: the committed tables and figures
	$(PY) -m lbam.report $(REF)

report: plots ## Same as plots

bench: $(STAMP) ## Module-cost and training-step benchmarks -> results/local/bench/ (REFERENCE=1: results/bench/)
	$(PY) -m lbam.bench $(REF)

wheels: $(STAMP) ## Fill .whl/ with the wheels a GPU image lacks (hydra, omegaconf), for make device-check there
	rm -rf .whl && mkdir -p .whl
	$(PY) -m pip wheel -q --no-deps -w .whl $(shell $(PY) -c 'import importlib.metadata as m; \
	  print(" ".join(f"{n}=={m.version(n)}" for n in "$(WHEELS)".split()))')
	@ls .whl

device-check: ## Check a fresh GPU in <= 9 min, no index needed (make wheels first): E2, E1, projection, steps
	@$(DEVICE_PY) -c 'import hydra, omegaconf' 2>/dev/null || ls .whl/*.whl >/dev/null 2>&1 || { echo \
	  "make device-check: $(DEVICE_PY) lacks hydra-core and .whl/ has no wheels: run make wheels where pip reaches an index, then bring .whl/ along"; exit 2; }
	@$(DEVICE_PY) -c 'import hydra, omegaconf' 2>/dev/null || $(DEVICE_PY) -m pip install -q --no-index --no-deps \
	  --no-compile --upgrade --target .whl/site .whl/*.whl
	@PYTHONPATH=$(CURDIR)/.whl/site$${PYTHONPATH:+:$$PYTHONPATH} $(DEVICE_PY) scripts/device_check.py $(if $(OUT),--out $(OUT)) $(if $(DEVICE),--device $(DEVICE))

gpu-check: device-check ## Same as device-check (its former name)

clean: ## Remove caches (keeps .venv, data and results)
	rm -rf .pytest_cache .ruff_cache **/__pycache__
