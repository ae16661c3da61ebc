# densebench: `make demo` runs the DAG to results/table1.csv; `make test` runs the tests.
# Both install the pinned environment into .venv first (idempotent; see tools/install.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= 2
SNAKEMAKE := $(PY) -m snakemake --profile workflow/profiles/default --cores $(CORES)
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: demo report test lint dryrun-paper plan install clean

$(VENV)/.installed: tools/install.sh requirements/lock.txt
	bash tools/install.sh
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	@VENV=$(VENV) bash tools/release_stale_lock.sh
	$(SNAKEMAKE) all
	@for table in results/table*.md results/prepare/edges/bsds_test.md results/benchmarks.md; do cat $$table; echo; done
	$(MAKE) report

# The HTML report of every table and figure, rendered in headless Chromium (screenshot: results/report.png).
report: $(VENV)/.installed
	$(SNAKEMAKE) --report results/report.html all
	$(PY) -m analysis check-report --report results/report.html --screenshot results/report.png \
	  --expect "Table 1: main transfer benchmark"

test: $(VENV)/.installed
	$(PY) -m pytest -q

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

clean:
	rm -rf results/prepare results/pretrain results/imported results/finetune results/logs results/benchmarks \
	  results/analysis results/report results/report.html results/report.png results/figures results/sweeps \
	  results/table*.csv results/table*.md results/transfer.csv results/transfer.md results/benchmarks.csv \
	  results/benchmarks.md results/plan
