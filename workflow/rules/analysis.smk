# Stage analysis: pretraining loss curves, and the time and memory of every job.


rule benchmark_summary:
    conda:
        "../../envs/pretrain.yml"
    input:
        lambda wc: [file for files in benchmark_files().values() for file in files],
    output:
        csv=f"{RESULTS}/benchmarks.csv",
        md=f"{RESULTS}/benchmarks.md",
    log:
        f"{RESULTS}/logs/benchmark_summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/benchmark_summary.tsv"  # its own time is not in the summary it writes
    params:
        stages=lambda wc: benchmark_stage_args(benchmark_files()),
    shell:
        "python -m analysis benchmarks {params.stages} --out-csv {output.csv:q}"
        " --out-md {output.md:q} > {log:q} 2>&1"


rule pretrain_losses:
    conda:
        "../../envs/pretrain.yml"
    input:
        # meta.json marks a finished run; train_log.csv beside it is not a declared output
        # because Snakemake would delete it before a resumed job appends to it.
        [f"{RESULTS}/pretrain/{run}/meta.json" for run in TABLE_RUNS],
    output:
        report(f"{RESULTS}/figures/pretrain_losses.png", caption="../report/figure.rst", category="Figures"),
    params:
        runs=lambda wc, input: [os.path.dirname(path) for path in input],
        caption="Pretraining losses per iteration of every table run (global and dense terms in their own panels).",
    log:
        f"{RESULTS}/logs/pretrain_losses.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain_losses.tsv"
    shell:
        "python -m analysis pretrain-losses {params.runs:q} --out {output:q} > {log:q} 2>&1"


rule analysis_probe:
    conda:
        "../../envs/pretrain.yml"
    input:
        dataset=lambda wc: dataset_manifest(PROBES[wc.probe]["data"]),
        backbone=lambda wc: [] if wc.run == RANDOM_RUN else backbone_file(wc),
    output:
        probe_metrics("{probe}", "{run}"),
    params:
        command=lambda wc: PROBES[wc.probe]["task"].replace("_", "-"),
        root=lambda wc: dataset_root(PROBES[wc.probe]["data"]),
        backbone=lambda wc, input: input.backbone or "none",
        protocol=lambda wc: probe_json(wc.probe),
        out=lambda wc, output: os.path.dirname(output[0]),
        arch=run_arch,
        seed=PRE["seed"],
    wildcard_constraints:
        probe=one_of(PROBES),
    threads: lambda wc: PROBES[wc.probe]["threads"]
    resources:
        **probe_resources(),
    log:
        f"{RESULTS}/logs/{{probe}}/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{probe}}/{{run}}.tsv"
    shell:
        "python -m analysis {params.command} --data-root {params.root:q} --backbone {params.backbone:q}"
        " --arch {params.arch} --protocol-json {params.protocol:q} --seed {params.seed}"
        " --threads {threads} --out {params.out:q} > {log:q} 2>&1"


rule stage_figure:
    conda:
        "../../envs/pretrain.yml"
    input:
        f"{RESULTS}/table5.csv",
    output:
        report(f"{RESULTS}/figures/coupling_stages.png", caption="../report/figure.rst", category="Figures"),
    params:
        caption="Coupling rate and mean cosine similarity of each method's frozen features per ResNet stage "
        "(table 5; D3SSL Fig. 3b / 4b).",
    log:
        f"{RESULTS}/logs/stage_figure.log",
    shell:
        "python -m analysis stage-figure --table5 {input:q} --out {output:q} > {log:q} 2>&1"


rule pair_figure:
    conda:
        "../../envs/pretrain.yml"
    input:
        probe_metrics("correspondence", "{run}"),
    output:
        report(f"{RESULTS}/figures/pairs/{{run}}.png", caption="../report/figure.rst", category="Figures",
               subcategory="Positive pairs"),
    params:
        caption=lambda wc: f"Best (5) and worst (20) argmax-cosine positive pairs between two views of real COCO "
        f"images, {wc.run} (HoughCL Fig. 1 style; green: the true location, red: a wrong match).",
        figure=lambda wc, input: os.path.join(os.path.dirname(input[0]), "pairs.png"),
    log:
        f"{RESULTS}/logs/pair_figure/{{run}}.log",
    shell:
        "cp {params.figure:q} {output:q} > {log:q} 2>&1"


rule pca_rgb_figure:
    conda:
        "../../envs/pretrain.yml"
    input:
        backbone=lambda wc: [] if wc.run == RANDOM_RUN else backbone_file(wc),
        embedding=lambda wc: row_embedding(wc.run, PCA_RGB["embedding"]),
        dataset=lambda wc: dataset_manifest(PCA_RGB["data"]),
    output:
        report(f"{RESULTS}/figures/pca_rgb/{{run}}.png", caption="../report/figure.rst", category="Figures",
               subcategory="PCA-RGB"),
    params:
        images=lambda wc: [f"{dataset_root(PCA_RGB['data'])}/{image}" for image in PCA_RGB["images"]],
        backbone=lambda wc, input: input.backbone or "none",
        embedding=embedding_arg,
        arch=run_arch,
        layer=lambda wc: PCA_RGB["layer"],
        size=lambda wc: PCA_RGB["image_size"],
        caption=lambda wc: f"First three principal components of {wc.run}'s frozen "
        f"{'embedding' if row_embedding(wc.run, PCA_RGB['embedding']) else PCA_RGB['layer']} features as RGB beside "
        "each image (hierarchical grouping Fig. 2 style).",
    log:
        f"{RESULTS}/logs/pca_rgb/{{run}}.log",
    shell:
        "python -m analysis pca-rgb --backbone {params.backbone:q} {params.embedding} --arch {params.arch}"
        " --images {params.images:q}"
        " --layer {params.layer} --image-size {params.size} --seed 0 --out {output:q} > {log:q} 2>&1"
