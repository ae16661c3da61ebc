# Stage finetune: import published checkpoints, then train and evaluate every transfer protocol of
# finetune.protocols (one rule per launcher; the protocol is a wildcard). Detectron2 and mmseg jobs convert
# their row's backbone.pth themselves (`--backbone`): a second's work, where a job of its own cost a
# process start (~5-10 s) per row and framework.


rule import_checkpoint:
    conda:
        "../../envs/pretrain.yml"
    input:
        lambda wc: IMPORTED_RUNS[wc.run]["checkpoint"],
    output:
        backbone=f"{RESULTS}/imported/{{run}}/backbone.pth",
        meta=f"{RESULTS}/imported/{{run}}/meta.json",
    params:
        layout=lambda wc: IMPORTED_RUNS[wc.run]["layout"],
    wildcard_constraints:
        run=one_of(IMPORTED_RUNS),
    log:
        f"{RESULTS}/logs/import/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/import/{{run}}.tsv"
    shell:
        "python -m finetune import-checkpoint --checkpoint {input:q} --layout {params.layout}"
        " --out {output.backbone:q} > {log:q} 2>&1"


rule detection_transfer:
    conda:
        "../../envs/detectron2.yml"
    input:
        unpack(detection_inputs),
    output:
        finetune_metrics("{protocol}", "{run}", "{seed}"),
    params:
        root=lambda wc: dataset_root(protocol_data(wc.protocol)),
        train_json=lambda wc, input: f"--train-json {shlex.quote(input.train_json)}" if "train_json" in input.keys() else "",
        weights=weights_arg,
        protocol=lambda wc: protocol_json(wc.protocol),
        out=lambda wc, output: os.path.dirname(output[0]),
        arch=run_arch,
        device=config["device"],
        gpus=lambda wc: detectron2_gpus(wc.protocol),
    wildcard_constraints:
        protocol=one_of(protocols_of("detection")),
    threads: protocol_threads
    resources:
        **transfer_resources("detection"),
    log:
        f"{RESULTS}/logs/{{protocol}}/{{run}}-s{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{protocol}}/{{run}}-s{{seed}}.tsv"
    shell:
        "python -m finetune detection --name {wildcards.protocol} --data-root {params.root:q} {params.train_json}"
        " {params.weights} --arch {params.arch} --protocol-json {params.protocol:q} --seed {wildcards.seed}"
        " --threads {threads} --device {params.device} --gpus {params.gpus} --out {params.out:q} > {log:q} 2>&1"


rule segmentation_transfer:
    conda:
        "../../envs/mmseg.yml"
    input:
        dataset=lambda wc: dataset_manifest(protocol_data(wc.protocol)),
        backbone=row_backbone,
    output:
        finetune_metrics("{protocol}", "{run}", "{seed}"),
    params:
        root=lambda wc: dataset_root(protocol_data(wc.protocol)),
        weights=weights_arg,
        protocol=lambda wc: protocol_json(wc.protocol),
        out=lambda wc, output: os.path.dirname(output[0]),
        arch=run_arch,
        device=config["device"],
        launch=lambda wc: torch_launch_prefix(*gpus_of(wc.protocol)),
    wildcard_constraints:
        protocol=one_of(protocols_of("segmentation")),
    threads: protocol_threads
    resources:
        **transfer_resources("segmentation"),
    log:
        f"{RESULTS}/logs/{{protocol}}/{{run}}-s{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{protocol}}/{{run}}-s{{seed}}.tsv"
    shell:
        "{params.launch} -m finetune segmentation --name {wildcards.protocol} --data-root {params.root:q}"
        " {params.weights} --arch {params.arch} --protocol-json {params.protocol:q} --seed {wildcards.seed}"
        " --threads {threads}"
        " --device {params.device} --out {params.out:q} > {log:q} 2>&1"


# Evaluations on frozen features of backbone.pth itself (no converter): linear, few-shot, DAVIS, segment search.
rule frozen_feature_eval:
    conda:
        "../../envs/pretrain.yml"
    input:
        dataset=lambda wc: dataset_manifest(protocol_data(wc.protocol)),
        backbone=row_backbone,
        embedding=lambda wc: row_embedding(wc.run, PROTOCOLS[wc.protocol].get("embedding", False)),
    output:
        finetune_metrics("{protocol}", "{run}", "{seed}"),
    params:
        command=lambda wc: PROTOCOLS[wc.protocol]["task"].replace("_", "-"),
        root=lambda wc: dataset_root(protocol_data(wc.protocol)),
        extra=frozen_eval_args,
        backbone=lambda wc, input: input.backbone[0] if input.backbone else "none",
        embedding=embedding_arg,
        protocol=lambda wc: protocol_json(wc.protocol),
        out=lambda wc, output: os.path.dirname(output[0]),
        arch=run_arch,
    wildcard_constraints:
        protocol=one_of([p for task in FROZEN_EVAL_TASKS for p in protocols_of(task)]),
    threads: protocol_threads
    resources:
        **transfer_resources(*FROZEN_EVAL_TASKS),
    log:
        f"{RESULTS}/logs/{{protocol}}/{{run}}-s{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{protocol}}/{{run}}-s{{seed}}.tsv"
    shell:
        "python -m finetune {params.command} --data-root {params.root:q} {params.extra}"
        " --backbone {params.backbone:q} {params.embedding} --arch {params.arch} --protocol-json {params.protocol:q}"
        " --seed {wildcards.seed}"
        " --threads {threads} --out {params.out:q} > {log:q} 2>&1"
