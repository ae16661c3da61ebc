# Stage tables: paper-style tables from metrics.json and meta.json files only (never logs).


rule paper_table:
    conda:
        "../../envs/pretrain.yml"
    input:
        paper_table_inputs,
        reference=str(Path(workflow.basedir) / "analysis" / "reference" / "paper_values.csv"),
    output:
        csv=f"{RESULTS}/table{{number}}.csv",
        md=f"{RESULTS}/table{{number}}.md",
    params:
        spec=lambda wc: json.dumps(paper_table_spec(int(wc.number))),
        scale=config["scale"],
    wildcard_constraints:
        number=one_of([str(n) for n in PAPER_TABLES]),
    log:
        f"{RESULTS}/logs/table{{number}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/table{{number}}.tsv"
    shell:
        "python -m analysis paper-table --table {wildcards.number} --spec-json {params.spec:q} --scale {params.scale}"
        " --out-csv {output.csv:q} --out-md {output.md:q} > {log:q} 2>&1"


rule paper_reproduction:
    """One of a paper's own tables: its rows and columns, our cells beside its values (README "Results")."""
    conda:
        "../../envs/pretrain.yml"
    input:
        reproduction_inputs,
    output:
        csv=f"{REPRODUCTION}.csv",
        md=f"{REPRODUCTION}.md",
    params:
        spec=lambda wc: json.dumps(reproduction_spec(wc.paper, wc.table)),
        name=lambda wc: REPRODUCED[wc.paper][wc.table],
        scale=config["scale"],
    wildcard_constraints:
        paper=one_of(REPRODUCED),
        table=r"[a-z0-9.]+",
    log:
        f"{RESULTS}/logs/papers/{{paper}}/{{table}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/papers/{{paper}}/{{table}}.tsv"
    shell:
        "python -m analysis paper-reproduction --paper {wildcards.paper} --table {params.name:q}"
        " --spec-json {params.spec:q} --scale {params.scale} --out-csv {output.csv:q} --out-md {output.md:q}"
        " > {log:q} 2>&1"


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


rule table_html:
    conda:
        "../../envs/pretrain.yml"
    input:
        f"{RESULTS}/{{name}}.md",
    output:
        report(f"{RESULTS}/report/{{name}}.html", caption="../report/table.rst", category="Tables",
               labels=lambda wc: {"table": wc.name}),
    params:
        caption=lambda wc: REPORT_TABLES[wc.name],
    wildcard_constraints:
        name=one_of(REPORT_TABLES),
    log:
        f"{RESULTS}/logs/table_html/{{name}}.log",
    shell:
        "python -m analysis html --md {input:q} --out {output:q} > {log:q} 2>&1"


rule proposal_quality:
    conda:
        "../../envs/pretrain.yml"
    input:
        index=f"{RESULTS}/prepare/proposals/{PRE['data']}/index.json",
        coco=dataset_manifest("coco"),
        benchmarks=[f"{RESULTS}/benchmarks/proposals/{PRE['data']}-{shard}.tsv" for shard in SHARDS],
    output:
        f"{RESULTS}/analysis/proposal_quality.json",
    params:
        instances=proposal_truth,
    log:
        f"{RESULTS}/logs/proposal_quality.log",
    benchmark:
        f"{RESULTS}/benchmarks/proposal_quality.tsv"
    shell:
        "python -m analysis proposal-quality --index {input.index:q} --instances {params.instances:q}"
        " --benchmarks {input.benchmarks:q} --out {output:q} > {log:q} 2>&1"


rule table13:
    conda:
        "../../envs/pretrain.yml"
    input:
        bsds=f"{RESULTS}/prepare/edges/bsds_test.csv",
        proposals=f"{RESULTS}/analysis/proposal_quality.json",
    output:
        csv=f"{RESULTS}/table13.csv",
        md=f"{RESULTS}/table13.md",
    params:
        scale=config["scale"],
    log:
        f"{RESULTS}/logs/table13.log",
    benchmark:
        f"{RESULTS}/benchmarks/table13.tsv"
    shell:
        "python -m analysis table13 --bsds {input.bsds:q} --proposals {input.proposals:q} --scale {params.scale}"
        " --out-csv {output.csv:q} --out-md {output.md:q} > {log:q} 2>&1"


rule table3:
    conda:
        "../../envs/pretrain.yml"
    input:
        table3_inputs,
    output:
        csv=f"{RESULTS}/table3.csv",
        md=f"{RESULTS}/table3.md",
        models=f"{RESULTS}/sweeps/models.csv",
        figure=report(f"{RESULTS}/figures/alignment_uniformity.png", caption="../report/figure.rst",
                      category="Figures"),
    params:
        spec=lambda wc: json.dumps(table3_spec()),
        caption="Held-out L_u (x) and L_a (y) of every sweep model, coloured by its downstream score; one panel per "
        "pretraining image set and evaluation (dense_alignment_uniformity.md Fig. 2/3).",
    log:
        f"{RESULTS}/logs/table3.log",
    benchmark:
        f"{RESULTS}/benchmarks/table3.tsv"
    shell:
        "python -m analysis table3 --spec-json {params.spec:q} --out-csv {output.csv:q} --out-md {output.md:q}"
        " --out-models-csv {output.models:q} --figure {output.figure:q} > {log:q} 2>&1"
