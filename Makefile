# densebench: `make demo` runs the DAG to results/table1.csv; `make test` runs the tests.
# Both install the pinned environment into .venv first (idempotent; see tools/install.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= 2
SNAKEMAKE := $(PY) -m snakemake --profile workflow/profiles/default --cores $(CORES)
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: demo report test lint dryrun-paper install clean

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

dryrun-paper: $(VENV)/.installed
	$(PY) -m snakemake -n --config scale=paper -- results/table1.csv

clean:
	rm -rf results/prepare results/pretrain results/imported results/finetune results/logs results/benchmarks \
	  results/analysis results/report results/report.html results/report.png results/figures results/sweeps \
	  results/table*.csv results/table*.md results/transfer.csv results/transfer.md results/benchmarks.csv \
	  results/benchmarks.md
