# densebench: `make demo` runs the DAG to results/table1.csv; `make test` runs the tests.
# Both install the pinned environment into .venv first (idempotent; see tools/install.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
# Every core of the machine by default (`make demo CORES=1` to use fewer).
CORES ?= $(shell nproc 2>/dev/null || echo 2)
SNAKEMAKE := $(PY) -m snakemake --profile workflow/profiles/default --cores $(CORES)
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: demo report test lint dryrun-paper plan gpu-check install clean

$(VENV)/.installed: tools/install.sh requirements/lock.txt
	bash tools/install.sh
	touch $@

install: $(VENV)/.installed

# One shell, so the closing line can give the wall time of the whole demo (DAG and report). The jobs'
# `python -m ...` start as forks of a server that has imported torch and torchvision once (core/prefork.py:
# ~6.5 s saved per job); the server stops when the DAG ends.
PREFORK := results/.prefork
demo: $(VENV)/.installed
	@set -e; start=$$(date +%s); \
	echo "densebench smoke scale: a check that every stage runs for real at tiny size, not a ranking of methods."; \
	VENV=$(VENV) bash tools/release_stale_lock.sh; \
	echo "$(SNAKEMAKE) all"; $(PY) -m core.prefork run --dir $(PREFORK) -- $(SNAKEMAKE) all; \
	for table in results/table*.md results/prepare/edges/bsds_test.md results/benchmarks.md; do cat $$table; echo; done; \
	$(MAKE) --no-print-directory report; \
	echo "make demo: $$(( $$(date +%s) - start )) s wall on $(CORES) cores (per stage: results/benchmarks.md;" \
	  "per rule and the critical path: $(PY) benchmarks/demo_profile.py)"

# The HTML report of every table and figure, rendered in headless Chromium (screenshot: results/report.png).
report: $(VENV)/.installed
	$(SNAKEMAKE) --report results/report.html all
	$(PY) -m analysis check-report --report results/report.html --screenshot results/report.png \
	  --expect "Table 1: main transfer benchmark"

# pytest-xdist over $(CORES) processes, with the SLURM integration tests in a second run beside them.
test: $(VENV)/.installed
	WORKERS=$(CORES) VENV=$(VENV) bash tools/run_tests.sh

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m snakemake --lint

# Paper scale without the data: empty placeholder dataset roots, the slurm profile's resources.
PLACEHOLDERS := results/plan/placeholders
dryrun-paper: $(VENV)/.installed
	$(PY) -m cluster placeholders --out $(PLACEHOLDERS)
	$(PY) -m snakemake -n --profile slurm --config scale=paper --configfile $(PLACEHOLDERS)/roots.yaml -- results/table1.csv

# Estimated GPU-hours per table and in total (README: Paper-scale GPU-hour plan).
plan: $(VENV)/.installed
	$(PY) -m cluster gpu-plan --out-csv results/plan/gpu_hours.csv --out-md results/plan/gpu_hours.md

# On a GPU machine: every method's steps at 224 px on ResNet-50 (images/s, peak memory, AMP), one float32 step
# on the GPU against the CPU, DDP over NCCL with SyncBatchNorm (benchmarks/gpu_check.py; --short: CPU mode).
gpu-check: $(VENV)/.installed
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf results/prepare results/pretrain results/imported results/finetune results/logs results/benchmarks \
	  results/analysis results/report results/report.html results/report.png results/figures results/sweeps \
	  results/table*.csv results/table*.md results/transfer.csv results/transfer.md results/benchmarks.csv \
	  results/benchmarks.md results/plan $(PREFORK) results/.prefork.log
