# crossmodal: two commands.  `make run` = set up + run the default (toy) config + report.
#                            `make test` = set up + lint + tests.  Both are idempotent.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
CORES ?= 2
# greedy scheduler + a 10 s rate-limit window: Snakemake's defaults (ILP, 100/1s) re-plan every
# second while jobs wait for cores, which cost the 2-core toy run a sizeable share of its CPU
# (see README, Performance)
SNAKEMAKE := $(BIN)/snakemake --cores $(CORES) --printshellcmds --show-failed-logs \
	--scheduler greedy --max-jobs-per-timespan 1000/10s
PYTEST_ARGS ?=

.PHONY: setup kallisto slurm run report test lint bench clean help

help:
	@echo "make run    set up .venv, run the default config on $(CORES) cores, write results/report.html"
	@echo "make test   set up .venv, lint the workflow, run the test suite"
	@echo "make bench  benchmarks (tiler, LMDB, metrics); prints ratios"
	@echo "make clean delete results/ (but its README, checkpoints included), logs, benchmarks, .snakemake"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-*; touch $@

setup: $(STAMP) kallisto

# kallisto 0.48.0 (Debian bookworm); indices are not compatible across versions, so the
# conda env in envs/kallisto.yaml pins the same version.
kallisto:
	@if command -v kallisto >/dev/null 2>&1; then \
	  echo "kallisto: $$(kallisto version)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing kallisto from Debian"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kallisto >/dev/null; \
	else \
	  echo "kallisto is missing: 'sudo apt-get install kallisto' (Debian/Ubuntu) or" >&2; \
	  echo "  'conda env create -f envs/kallisto.yaml && conda activate crossmodal-kallisto'" >&2; \
	  exit 1; \
	fi

# SLURM 22.05 + munge (Debian bookworm) for tests/test_slurm.py, which starts a throw-away
# single-node cluster on loopback (tests/slurm/up.sh) and stops it by PID.  Without root and
# apt-get the test is skipped, saying why; as root an install failure fails `make test`.
slurm:
	@if command -v slurmctld >/dev/null 2>&1 && command -v munged >/dev/null 2>&1; then \
	  echo "slurm: $$(slurmctld -V)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing slurm-wlm munge from Debian (for tests/test_slurm.py)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends slurm-wlm munge >/dev/null; \
	else \
	  echo "slurm-wlm/munge missing and not installable (needs root + apt-get):" \
	    "tests/test_slurm.py will be skipped" >&2; \
	fi

run: setup
	$(SNAKEMAKE)
	$(BIN)/snakemake --cores 1 --report results/report.html
	@echo "report: results/report.html"

report: setup
	$(BIN)/snakemake --cores 1 --report results/report.html

lint: setup
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check .

test: setup lint slurm
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m crossmodal.bench

# everything under results/ but its tracked README.md (training checkpoints included), logs,
# benchmarks and .snakemake; relative paths only, like every recipe here (run from the repo root).
clean:
	if [ -d results ]; then find results -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +; fi
	rm -rf logs benchmarks .snakemake
