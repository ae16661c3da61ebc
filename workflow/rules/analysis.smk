# Stage analysis: for now, the time and memory of every job (Snakemake `benchmark:` files).


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
