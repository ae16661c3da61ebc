# Stage finetune: convert each backbone, then train and evaluate each transfer protocol.


rule convert_detectron2:
    conda:
        "../../envs/detectron2.yml"
    input:
        f"{RESULTS}/pretrain/{{run}}/backbone.pth",
    output:
        f"{RESULTS}/finetune/weights/{{run}}/d2.pkl",
    log:
        f"{RESULTS}/logs/convert/{{run}}-d2.log",
    benchmark:
        f"{RESULTS}/benchmarks/convert/{{run}}-d2.tsv"
    shell:
        "python -m finetune convert-d2 --backbone {input:q} --out {output:q} > {log:q} 2>&1"


rule convert_mmseg:
    conda:
        "../../envs/mmseg.yml"
    input:
        f"{RESULTS}/pretrain/{{run}}/backbone.pth",
    output:
        f"{RESULTS}/finetune/weights/{{run}}/mmseg.pth",
    log:
        f"{RESULTS}/logs/convert/{{run}}-mmseg.log",
    benchmark:
        f"{RESULTS}/benchmarks/convert/{{run}}-mmseg.tsv"
    shell:
        "python -m finetune convert-mmseg --backbone {input:q} --out {output:q} > {log:q} 2>&1"


rule voc_detection:
    conda:
        "../../envs/detectron2.yml"
    input:
        dataset=dataset_manifest("voc"),
        weights=pretrained_weights("d2.pkl"),
    output:
        finetune_metrics("voc_detection", "{run}", "{seed}"),
    params:
        voc=lambda wc: dataset_root("voc"),
        weights=weights_arg,
        protocol=json.dumps({k: v for k, v in config["finetune"]["voc_detection"].items() if k != "threads"}),
        out=lambda wc, output: os.path.dirname(output[0]),
        arch=run_arch,
        device=config["device"],
    threads: config["finetune"]["voc_detection"]["threads"]
    resources:
        **resources_for("voc_detection", config["finetune"]["voc_detection"]["threads"]),
    log:
        f"{RESULTS}/logs/voc_detection/{{run}}-s{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/voc_detection/{{run}}-s{{seed}}.tsv"
    shell:
        "python -m finetune voc-detection --voc-root {params.voc:q} --weights {params.weights:q} --arch {params.arch}"
        " --protocol-json {params.protocol:q} --seed {wildcards.seed} --threads {threads}"
        " --device {params.device} --out {params.out:q} > {log:q} 2>&1"


rule voc_segmentation:
    conda:
        "../../envs/mmseg.yml"
    input:
        dataset=dataset_manifest("voc"),
        weights=pretrained_weights("mmseg.pth"),
    output:
        finetune_metrics("voc_segmentation", "{run}", "{seed}"),
    params:
        voc=lambda wc: dataset_root("voc"),
        weights=weights_arg,
        protocol=json.dumps({k: v for k, v in config["finetune"]["voc_segmentation"].items() if k != "threads"}),
        out=lambda wc, output: os.path.dirname(output[0]),
        arch=run_arch,
        device=config["device"],
    threads: config["finetune"]["voc_segmentation"]["threads"]
    resources:
        **resources_for("voc_segmentation", config["finetune"]["voc_segmentation"]["threads"]),
    log:
        f"{RESULTS}/logs/voc_segmentation/{{run}}-s{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/voc_segmentation/{{run}}-s{{seed}}.tsv"
    shell:
        "python -m finetune voc-segmentation --voc-root {params.voc:q} --weights {params.weights:q} --arch {params.arch}"
        " --protocol-json {params.protocol:q} --seed {wildcards.seed} --threads {threads}"
        " --device {params.device} --out {params.out:q} > {log:q} 2>&1"
