# Stage prepare: smoke datasets in official layouts, and the pretraining image list.


rule prepare_coco:
    conda:
        "../../envs/pretrain.yml"
    output:
        f"{config['datasets']['coco']['root']}/manifest.json",
    params:
        out=lambda wc, output: os.path.dirname(output[0]),
        source=config["datasets"]["source_root"],
        proc=config["datasets"]["procedural"],
        seed=PRE["seed"],
    log:
        f"{RESULTS}/logs/prepare_coco.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_coco.tsv"
    shell:
        "python -m prepare coco --source-root {params.source:q} --out {params.out:q} --seed {params.seed}"
        " --procedural-train {params.proc[train_images]} --procedural-val {params.proc[val_images]}"
        " --procedural-size {params.proc[image_size]} > {log:q} 2>&1"


rule prepare_voc:
    conda:
        "../../envs/pretrain.yml"
    input:
        dataset_manifest("coco"),
    output:
        f"{config['datasets']['voc']['root']}/manifest.json",
    params:
        coco=lambda wc: dataset_root("coco"),
        out=lambda wc, output: os.path.dirname(output[0]),
    log:
        f"{RESULTS}/logs/prepare_voc.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_voc.tsv"
    shell:
        "python -m prepare voc --coco-root {params.coco:q} --out {params.out:q} > {log:q} 2>&1"


rule prepare_image_list:
    conda:
        "../../envs/pretrain.yml"
    input:
        dataset_manifest("coco"),
    output:
        f"{RESULTS}/prepare/pretrain-coco/images.txt",
    params:
        coco=lambda wc: dataset_root("coco"),
        # COCO's unlabeled photos (val2017_unannotated) join the smoke pretraining set when present.
        extra=lambda wc: f"--extra-dir {config['datasets']['source_root']}/coco_mini/val2017_unannotated"
        if config["datasets"]["coco"]["build"]
        else "",
    log:
        f"{RESULTS}/logs/prepare_image_list_coco.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_image_list_coco.tsv"
    shell:
        "python -m prepare image-list --root {params.coco:q} --subdirs train2017 {params.extra}"
        " --out {output:q} > {log:q} 2>&1"
