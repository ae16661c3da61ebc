# Stage pretrain: one job per run <name>-<data>-<arch>-<schedule>-s<seed> (a table row's method,
# or a sweep member); each resumes from its state.pth.


rule pretrain_run:
    conda:
        "../../envs/pretrain.yml"
    input:
        unpack(pretrain_inputs),
    output:
        backbone=f"{RESULTS}/pretrain/{{run}}/backbone.pth",
        meta=f"{RESULTS}/pretrain/{{run}}/meta.json",
        embedding=PRETRAIN_EMBEDDING,
    params:
        method=lambda wc: pretrain_run(wc)["method"],
        cfg=lambda wc: json.dumps(pretrain_run(wc)["cfg"]),
        out=lambda wc, output: os.path.dirname(output.meta),
        data=lambda wc: pretrain_run(wc)["data"],
        prepared=lambda wc, input: f"--prepared {shlex.quote(input.prepared)}" if "prepared" in input.keys() else "",
        seed=PRE["seed"],
        device=config["device"],
        launch=torch_launch_prefix(*gpus_of("pretrain")),
    threads: PRE["threads"]
    resources:
        **resources_for("pretrain", PRE["threads"]),
    log:
        f"{RESULTS}/logs/pretrain/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain/{{run}}.tsv"
    shell:
        "{params.launch} -m pretrain train --method {params.method} --image-list {input.images:q}"
        " --config-json {params.cfg:q} --data-name {params.data} {params.prepared} --seed {params.seed}"
        " --device {params.device} --threads {threads} --out {params.out:q} > {log:q} 2>&1"


rule alignment_uniformity:
    """L_a and L_u of a sweep model's instance and dense features on its image set's held-out split."""
    conda:
        "../../envs/pretrain.yml"
    input:
        backbone=f"{RESULTS}/pretrain/{{run}}/backbone.pth",
        images=lambda wc: pretrain_image_list(pretrain_run(wc)["data"], "heldout"),
    output:
        alignment_uniformity_file("{run}"),
    params:
        arch=run_arch,
        size=lambda wc: pretrain_run(wc)["cfg"]["image_size"],
        measure=lambda wc: pretrain_run(wc)["cfg"]["index_contrast"],
        max_images=f"--max-images {AU_SWEEP['heldout_images']}" if AU_SWEEP and AU_SWEEP["heldout_images"] else "",
        seed=PRE["seed"],
    threads: PRE["threads"]
    resources:
        **resources_for("alignment_uniformity", PRE["threads"]),
    log:
        f"{RESULTS}/logs/alignment_uniformity/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/alignment_uniformity/{{run}}.tsv"
    shell:
        "python -m analysis alignment-uniformity --backbone {input.backbone:q} --image-list {input.images:q}"
        " --arch {params.arch} --image-size {params.size} {params.max_images} --seed {params.seed}"
        " --views {params.measure[views]} --align-alpha {params.measure[align_alpha]}"
        " --uniform-t {params.measure[uniform_t]}"
        " --threads {threads} --out {output:q} > {log:q} 2>&1"
