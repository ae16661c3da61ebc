"""Planning without Snakemake: config in, what the DAG runs out (experiments, their runs)."""
