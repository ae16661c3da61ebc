# Stage tables: paper-style tables from metrics.json and meta.json files only (never logs).


rule table1:
    conda:
        "../../envs/pretrain.yml"
    input:
        table1_inputs,
    output:
        csv=f"{RESULTS}/table1.csv",
        md=f"{RESULTS}/table1.md",
    params:
        spec=json.dumps(table1_spec()),
        scale=config["scale"],
    log:
        f"{RESULTS}/logs/table1.log",
    benchmark:
        f"{RESULTS}/benchmarks/table1.tsv"
    shell:
        "python -m analysis table1 --spec-json {params.spec:q} --scale {params.scale}"
        " --out-csv {output.csv:q} --out-md {output.md:q} > {log:q} 2>&1"


rule table2:
    conda:
        "../../envs/pretrain.yml"
    input:
        f"{RESULTS}/prepare/openimages_mini/stats.json",
    output:
        csv=f"{RESULTS}/table2.csv",
        md=f"{RESULTS}/table2.md",
    log:
        f"{RESULTS}/logs/table2.log",
    benchmark:
        f"{RESULTS}/benchmarks/table2.tsv"
    shell:
        "python -m analysis table2 --stats {input:q} --out-csv {output.csv:q} --out-md {output.md:q} > {log:q} 2>&1"


rule sweep_table:
    conda:
        "../../envs/pretrain.yml"
    input:
        [alignment_uniformity_file(run) for run in SWEEP_RUNS],
    output:
        csv=f"{RESULTS}/sweeps/alignment_uniformity.csv",
        md=f"{RESULTS}/sweeps/alignment_uniformity.md",
    params:
        spec=json.dumps(sweep_spec()),
    log:
        f"{RESULTS}/logs/sweep_table.log",
    benchmark:
        f"{RESULTS}/benchmarks/sweep_table.tsv"
    shell:
        "python -m analysis sweep-table --spec-json {params.spec:q} --out-csv {output.csv:q} --out-md {output.md:q}"
        " > {log:q} 2>&1"


rule transfer_table:
    conda:
        "../../envs/pretrain.yml"
    input:
        [f for entry in transfer_spec() for f in entry["metrics"]],
    output:
        csv=f"{RESULTS}/transfer.csv",
        md=f"{RESULTS}/transfer.md",
    params:
        spec=json.dumps(transfer_spec()),
        scale=config["scale"],
    log:
        f"{RESULTS}/logs/transfer_table.log",
    benchmark:
        f"{RESULTS}/benchmarks/transfer_table.tsv"
    shell:
        "python -m analysis transfer-table --spec-json {params.spec:q} --scale {params.scale}"
        " --out-csv {output.csv:q} --out-md {output.md:q} > {log:q} 2>&1"
