# Stage pretrain: one job per (method, data, arch, schedule, seed); resumes from state.pth.


rule pretrain_run:
    conda:
        "../../envs/pretrain.yml"
    input:
        images=f"{RESULTS}/prepare/pretrain-{PRE['data']}/images.txt",
    output:
        backbone=f"{RESULTS}/pretrain/{{run}}/backbone.pth",
        meta=f"{RESULTS}/pretrain/{{run}}/meta.json",
    params:
        method=pretrain_method,
        cfg=json.dumps(PRE),
        out=lambda wc, output: os.path.dirname(output.meta),
        data=PRE["data"],
        seed=PRE["seed"],
        device=config["device"],
    threads: PRE["threads"]
    resources:
        **resources_for("pretrain", PRE["threads"]),
    log:
        f"{RESULTS}/logs/pretrain/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain/{{run}}.tsv"
    shell:
        "python -m pretrain train --method {params.method} --image-list {input.images:q}"
        " --config-json {params.cfg:q} --data-name {params.data} --seed {params.seed}"
        " --device {params.device} --threads {threads} --out {params.out:q} > {log:q} 2>&1"
