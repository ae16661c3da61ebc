# Stage analysis: pretraining loss curves, and the time and memory of every job.


rule benchmark_summary:
    conda:
        "../../envs/pretrain.yml"
    input:
        benchmark_files(),
    output:
        csv=f"{RESULTS}/benchmarks.csv",
        md=f"{RESULTS}/benchmarks.md",
    log:
        f"{RESULTS}/logs/benchmark_summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/benchmark_summary.tsv"  # its own time is not in the summary it writes
    shell:
        "python -m analysis benchmarks {input:q} --out-csv {output.csv:q}"
        " --out-md {output.md:q} > {log:q} 2>&1"


rule pretrain_losses:
    conda:
        "../../envs/pretrain.yml"
    input:
        # meta.json marks a finished run; train_log.csv beside it is not a declared output
        # because Snakemake would delete it before a resumed job appends to it.
        [f"{RESULTS}/pretrain/{run}/meta.json" for run in TABLE_RUNS],
    output:
        f"{RESULTS}/figures/pretrain_losses.png",
    params:
        runs=lambda wc, input: [os.path.dirname(path) for path in input],
    log:
        f"{RESULTS}/logs/pretrain_losses.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain_losses.tsv"
    shell:
        "python -m analysis pretrain-losses {params.runs:q} --out {output:q} > {log:q} 2>&1"
