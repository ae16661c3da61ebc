# densebench: `make demo` runs the DAG to results/table1.csv; `make test` runs the tests.
# Both install the pinned environment into .venv first (idempotent; see tools/install.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= 2
SNAKEMAKE := $(PY) -m snakemake --profile workflow/profiles/default --cores $(CORES)
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: demo test lint dryrun-paper install clean

$(VENV)/.installed: tools/install.sh requirements/lock.txt
	bash tools/install.sh
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	@VENV=$(VENV) bash tools/release_stale_lock.sh
	$(SNAKEMAKE) all
	@cat results/table1.md
	@echo
	@cat results/table2.md
	@echo
	@cat results/transfer.md
	@echo
	@cat results/prepare/edges/bsds_test.md
	@echo
	@cat results/benchmarks.md

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m snakemake --lint

dryrun-paper: $(VENV)/.installed
	$(PY) -m snakemake -n --config scale=paper -- results/table1.csv

clean:
	rm -rf results/prepare results/pretrain results/imported results/finetune results/logs results/benchmarks \
	  results/table*.csv results/table*.md results/transfer.csv results/transfer.md results/benchmarks.csv \
	  results/benchmarks.md
