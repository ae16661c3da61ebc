# densebench: one DAG from raw images to paper-style tables.
#   snakemake -c2 results/table1.csv                      # smoke scale (default), local
#   snakemake -n --config scale=paper results/table1.csv  # paper protocols (dry run here)
# One target per stage, to rerun a single stage: snakemake prepare|pretrain|finetune|analysis|tables

from snakemake.utils import min_version

min_version("9.0")


# `snakemake --report results/report.html`: every table and figure with its caption; table 1 on the first page.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/tables.smk"


# Jobs that take seconds and little memory run where Snakemake runs (under --profile slurm, the
# submit host) instead of waiting in the queue: targets, tables, figures, indexes and COCO subsets.
localrules:
    all,
    prepare,
    pretrain,
    finetune,
    analysis,
    tables,
    shard_index,
    coco_subset,
    paper_table,
    paper_reproduction,
    table2,
    table3,
    table13,
    sweep_table,
    transfer_table,
    bsds_table,
    benchmark_summary,
    table_html,
    pretrain_losses,
    pair_figure,
    stage_figure,
    pca_rgb_figure,


rule all:
    default_target: True
    input:
        prepare_targets(),
        table_targets(),
        analysis_targets(),


rule prepare:
    input:
        prepare_targets(),


rule pretrain:
    input:
        pretrain_targets(),


rule finetune:
    input:
        finetune_targets(),


rule analysis:
    input:
        analysis_targets(),


rule tables:
    input:
        table_targets(),
