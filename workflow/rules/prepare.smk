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


rule prepare_cityscapes:
    conda:
        "../../envs/pretrain.yml"
    input:
        dataset_manifest("coco"),
    output:
        f"{config['datasets']['cityscapes']['root']}/manifest.json",
    params:
        coco=lambda wc: dataset_root("coco"),
        out=lambda wc, output: os.path.dirname(output[0]),
    log:
        f"{RESULTS}/logs/prepare_cityscapes.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_cityscapes.tsv"
    shell:
        "python -m prepare cityscapes --coco-root {params.coco:q} --out {params.out:q} > {log:q} 2>&1"


rule prepare_image_list:
    conda:
        "../../envs/pretrain.yml"
    input:
        dataset=lambda wc: dataset_manifest(image_set(wc.data)["dataset"]),
        selection=lambda wc: image_set_selection(image_set(wc.data)),
    output:
        f"{RESULTS}/prepare/{{split}}-{{data}}/images.txt",
    params:
        root=lambda wc: dataset_root(image_set(wc.data)["dataset"]),
        folders=lambda wc: image_set(wc.data)[wc.split if wc.split == "heldout" else "train"],
        # COCO's unlabeled photos (val2017_unannotated) join the smoke pretraining set when present.
        extra=lambda wc: f"--extra-dir {config['datasets']['source_root']}/coco_mini/val2017_unannotated"
        if wc.split == "pretrain" and image_set(wc.data)["dataset"] == "coco" and config["datasets"]["coco"]["build"]
        else "",
        limit=lambda wc: f"--max-images {image_set(wc.data)['max_images']}"
        if wc.split == "pretrain" and image_set(wc.data).get("max_images")
        else "",
        only=lambda wc, input: image_set_ids_arg(wc, input),
    wildcard_constraints:
        data=one_of(ROOTED_SETS),
    log:
        f"{RESULTS}/logs/prepare_image_list/{{split}}-{{data}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_image_list/{{split}}-{{data}}.tsv"
    shell:
        "python -m prepare image-list --root {params.root:q} --subdirs {params.folders:q} {params.extra} {params.limit}"
        " {params.only} --out {output:q} > {log:q} 2>&1"


rule prepare_image_union:
    """The pretraining images of a union of image sets (pretrain.image_sets.<name>.union), each image once."""
    conda:
        "../../envs/pretrain.yml"
    input:
        lambda wc: [pretrain_image_list(member) for member in image_set(wc.data)["union"]],
    output:
        f"{RESULTS}/prepare/pretrain-{{data}}/images.txt",
    params:
        limit=lambda wc: f"--max-images {image_set(wc.data)['max_images']}" if image_set(wc.data).get("max_images")
        else "",
    wildcard_constraints:
        data=one_of(UNIONS),
    log:
        f"{RESULTS}/logs/prepare_image_list/pretrain-{{data}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_image_list/pretrain-{{data}}.tsv"
    shell:
        "python -m prepare image-list --union {input:q} {params.limit} --out {output:q} > {log:q} 2>&1"


rule prepare_tinyimagenet:
    conda:
        "../../envs/pretrain.yml"
    output:
        f"{config['datasets']['tinyimagenet']['root']}/manifest.json",
    params:
        out=lambda wc, output: os.path.dirname(output[0]),
        source=config["datasets"]["source_root"],
        proc=config["datasets"]["procedural"],
        seed=PRE["seed"],
    log:
        f"{RESULTS}/logs/prepare_tinyimagenet.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_tinyimagenet.tsv"
    shell:
        "python -m prepare tinyimagenet --source-root {params.source:q} --out {params.out:q} --seed {params.seed}"
        " --procedural-train {params.proc[train_images]} --procedural-val {params.proc[val_images]} > {log:q} 2>&1"


# The ImageNet layout of the Tiny-ImageNet root: smoke scale's ImageNet-pretrained experiments.
if config["datasets"].get("imagenet", {}).get("build"):

    rule prepare_imagenet:
        conda:
            "../../envs/pretrain.yml"
        input:
            f"{config['datasets']['tinyimagenet']['root']}/manifest.json",
        output:
            f"{config['datasets']['imagenet']['root']}/manifest.json",
        params:
            tinyimagenet=lambda wc, input: os.path.dirname(input[0]),
            out=lambda wc, output: os.path.dirname(output[0]),
        log:
            f"{RESULTS}/logs/prepare_imagenet.log",
        benchmark:
            f"{RESULTS}/benchmarks/prepare_imagenet.tsv"
        shell:
            "python -m prepare imagenet --tinyimagenet-root {params.tinyimagenet:q} --out {params.out:q}"
            " > {log:q} 2>&1"


rule prepare_davis:
    conda:
        "../../envs/pretrain.yml"
    output:
        f"{config['datasets']['davis']['root']}/manifest.json",
    params:
        out=lambda wc, output: os.path.dirname(output[0]),
        source=config["datasets"]["source_root"],
        seed=PRE["seed"],
    log:
        f"{RESULTS}/logs/prepare_davis.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_davis.tsv"
    shell:
        "python -m prepare davis --source-root {params.source:q} --out {params.out:q} --seed {params.seed} > {log:q} 2>&1"


rule prepare_bsds500:
    conda:
        "../../envs/pretrain.yml"
    output:
        f"{config['datasets']['bsds500']['root']}/manifest.json",
    params:
        out=lambda wc, output: os.path.dirname(output[0]),
        source=config["datasets"]["source_root"],
        proc=config["datasets"]["procedural"],
        seed=PRE["seed"],
    log:
        f"{RESULTS}/logs/prepare_bsds500.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_bsds500.tsv"
    shell:
        "python -m prepare bsds --source-root {params.source:q} --out {params.out:q} --seed {params.seed}"
        " --procedural-count {params.proc[bsds_images]} --procedural-size {params.proc[image_size]} > {log:q} 2>&1"


# Selective-search proposals (D3SSL Sec. 4, SoCo's filters), one job per shard.
rule proposals_shard:
    conda:
        "../../envs/pretrain.yml"
    input:
        images=pretrain_image_list("{data}"),
    output:
        f"{RESULTS}/prepare/proposals/{{data}}/{{shard}}.npz",
    params:
        index=lambda wc: int(wc.shard.split("-")[1]),
        shards=PREP["shards"],
        mode=PREP["proposals"]["mode"],
        max_side=lambda wc: f"--max-side {PREP['proposals']['max_side']}" if PREP["proposals"]["max_side"] else "",
        every=PREP["checkpoint_every"],
    resources:
        **resources_for("prepare", 1),
    log:
        f"{RESULTS}/logs/proposals/{{data}}-{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/proposals/{{data}}-{{shard}}.tsv"
    shell:
        "python -m prepare proposals --images {input.images:q} --shard {params.index} --shards {params.shards}"
        " --mode {params.mode} {params.max_side} --checkpoint-every {params.every} --out {output:q} > {log:q} 2>&1"


# Structured-edge forest trained on BSDS500 (skipped when prepare.edge_model.model names a file).
rule edge_model:
    conda:
        "../../envs/pretrain.yml"
    input:
        dataset_manifest("bsds500"),
    output:
        f"{RESULTS}/prepare/edges/model.yml.gz",
    params:
        bsds=lambda wc: dataset_root("bsds500"),
        opts=PREP["edge_model"],
        max_images=lambda wc: f"--max-images {PREP['edge_model']['max_images']}"
        if PREP["edge_model"]["max_images"]
        else "",
    resources:
        **resources_for("edge_model", 1),
    log:
        f"{RESULTS}/logs/edge_model.log",
    benchmark:
        f"{RESULTS}/benchmarks/edge_model.tsv"
    shell:
        "python -m prepare edge-model --bsds-root {params.bsds:q} --trees {params.opts[trees]}"
        " --trees-eval {params.opts[trees_eval]} --samples-per-tree {params.opts[samples_per_tree]}"
        " --seed {params.opts[seed]} {params.max_images} --out {output:q} > {log:q} 2>&1"


# OWT-UCM region trees (hierarchical grouping Sec. 3-4.1), one job per shard.
rule region_trees_shard:
    conda:
        "../../envs/pretrain.yml"
    input:
        images=pretrain_image_list("{data}"),
        model=edge_model_file(),
    output:
        f"{RESULTS}/prepare/region_trees/{{data}}/{{shard}}.npz",
    params:
        index=lambda wc: int(wc.shard.split("-")[1]),
        shards=PREP["shards"],
        opts=PREP["region_trees"],
        max_side=lambda wc: f"--max-side {PREP['region_trees']['max_side']}" if PREP["region_trees"]["max_side"] else "",
        every=PREP["checkpoint_every"],
    resources:
        **resources_for("prepare", 1),
    log:
        f"{RESULTS}/logs/region_trees/{{data}}-{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/region_trees/{{data}}-{{shard}}.tsv"
    shell:
        "python -m prepare region-trees --images {input.images:q} --edge-model {input.model:q}"
        " --shard {params.index} --shards {params.shards} {params.max_side} --max-regions {params.opts[max_regions]}"
        " --spectral-weight {params.opts[spectral_weight]} --checkpoint-every {params.every}"
        " --out {output:q} > {log:q} 2>&1"


rule shard_index:
    conda:
        "../../envs/pretrain.yml"
    input:
        images=pretrain_image_list("{data}"),
        shards=lambda wc: shard_files(wc.kind, wc.data),
    output:
        f"{RESULTS}/prepare/{{kind}}/{{data}}/index.json",
    wildcard_constraints:
        kind="|".join(SHARDED),
    log:
        f"{RESULTS}/logs/{{kind}}/{{data}}-index.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{kind}}/{{data}}-index.tsv"
    shell:
        "python -m prepare shard-index --images {input.images:q} --out {output:q} {input.shards:q} > {log:q} 2>&1"


# The edge model and its OWT-UCM hierarchies scored on BSDS500 test with the BSDS protocol.
rule bsds_predict:
    conda:
        "../../envs/pretrain.yml"
    input:
        dataset_manifest("bsds500"),
        model=edge_model_file(),
    output:
        edges=directory(f"{RESULTS}/prepare/edges/bsds_test/edges"),
        ucm=directory(f"{RESULTS}/prepare/edges/bsds_test/ucm"),
        timing=f"{RESULTS}/prepare/edges/bsds_test/timing.json",
    params:
        bsds=lambda wc: dataset_root("bsds500"),
        spectral=PREP["region_trees"]["spectral_weight"],
        max_images=BSDS_MAX_IMAGES,
    resources:
        **resources_for("prepare", 1),
    log:
        f"{RESULTS}/logs/bsds_predict.log",
    benchmark:
        f"{RESULTS}/benchmarks/bsds_predict.tsv"
    shell:
        "python -m prepare bsds-predict --bsds-root {params.bsds:q} --edge-model {input.model:q}"
        " --spectral-weight {params.spectral} {params.max_images} --out-edges {output.edges:q}"
        " --out-ucm {output.ucm:q} --out-timing {output.timing:q} > {log:q} 2>&1"


rule bsds_eval:
    conda:
        "../../envs/pretrain.yml"
    input:
        f"{RESULTS}/prepare/edges/bsds_test/{{maps}}",
    output:
        f"{RESULTS}/prepare/edges/bsds_test/{{maps}}_eval/eval_bdry.txt",
    wildcard_constraints:
        maps=one_of(BSDS_MAPS),
    params:
        gt=lambda wc: f"{dataset_root('bsds500')}/data/groundTruth/test",
        nthresh=PREP["bsds_eval"]["nthresh"],
        max_images=BSDS_MAX_IMAGES,
        out=lambda wc, output: os.path.dirname(output[0]),
    resources:
        **resources_for("prepare", 1),
    log:
        f"{RESULTS}/logs/bsds_eval_{{maps}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/bsds_eval_{{maps}}.tsv"
    shell:
        "python -m prepare bsds-eval --pred-dir {input:q} --gt-dir {params.gt:q} --nthresh {params.nthresh}"
        " {params.max_images} --out-dir {params.out:q} > {log:q} 2>&1"


rule bsds_table:
    conda:
        "../../envs/pretrain.yml"
    input:
        edges=f"{RESULTS}/prepare/edges/bsds_test/edges_eval/eval_bdry.txt",
        ucm=f"{RESULTS}/prepare/edges/bsds_test/ucm_eval/eval_bdry.txt",
        timing=f"{RESULTS}/prepare/edges/bsds_test/timing.json",
    output:
        csv=f"{RESULTS}/prepare/edges/bsds_test.csv",
        md=f"{RESULTS}/prepare/edges/bsds_test.md",
    log:
        f"{RESULTS}/logs/bsds_table.log",
    benchmark:
        f"{RESULTS}/benchmarks/bsds_table.tsv"
    shell:
        "python -m analysis bsds-table --edges {input.edges:q} --ucm {input.ucm:q} --timing {input.timing:q}"
        " --out-csv {output.csv:q} --out-md {output.md:q} > {log:q} 2>&1"


# OpenImage-MINI (D3SSL Sec. 5.1) and mini-COCO (LC-loss Table 9).
# A small OpenImages-layout dataset from COCO-mini val2017's real boxes (smoke scale only).
if config["datasets"]["openimages"]["build"]:

    rule prepare_openimages:
        conda:
            "../../envs/pretrain.yml"
        input:
            dataset_manifest("coco"),
        output:
            f"{config['datasets']['openimages']['root']}/train-annotations-bbox.csv",
            f"{config['datasets']['openimages']['root']}/class-descriptions-boxable.csv",
            *dataset_manifest("openimages"),
        params:
            coco=lambda wc: dataset_root("coco"),
            meta=f"{config['datasets']['source_root']}/openimages_meta",
            out=lambda wc, output: os.path.dirname(output[0]),
        log:
            f"{RESULTS}/logs/prepare_openimages.log",
        benchmark:
            f"{RESULTS}/benchmarks/prepare_openimages.tsv"
        shell:
            "python -m prepare openimages --coco-root {params.coco:q} --split val2017 --meta {params.meta:q}"
            " --out {params.out:q} > {log:q} 2>&1"


rule openimages_mini:
    conda:
        "../../envs/pretrain.yml"
    input:
        boxes=f"{dataset_root('openimages')}/train-annotations-bbox.csv",
        classes=f"{dataset_root('openimages')}/class-descriptions-boxable.csv",
        coco=dataset_manifest("coco"),
    output:
        openimages_mini_files(),
    params:
        coco=lambda wc: coco_annotations("train2017"),
        mapping=PREP["openimages_mini"]["mapping"],
        images=lambda wc, input: os.path.join(os.path.dirname(input.boxes), "train"),
        seed=PREP["openimages_mini"]["seed"],
        out=lambda wc, output: os.path.dirname(output[0]),
    resources:
        **resources_for("prepare", 1),
    log:
        f"{RESULTS}/logs/openimages_mini.log",
    benchmark:
        f"{RESULTS}/benchmarks/openimages_mini.tsv"
    shell:
        "python -m prepare openimages-mini --boxes {input.boxes:q} --classes {input.classes:q}"
        " --mapping {params.mapping:q} --coco-annotations {params.coco:q} --images-dir {params.images:q}"
        " --seed {params.seed} --out-dir {params.out:q} > {log:q} 2>&1"


rule coco_subset:
    conda:
        "../../envs/pretrain.yml"
    input:
        dataset_manifest("coco"),
    output:
        f"{RESULTS}/prepare/coco_subsets/instances_train2017_{{pct}}pct.json",
    wildcard_constraints:
        pct=r"\d+",
    params:
        annotations=lambda wc: coco_annotations("train2017"),
        fraction=lambda wc: int(wc.pct) / 100,
        seed=PREP["coco_subsets"]["seed"],
    log:
        f"{RESULTS}/logs/coco_subset_{{pct}}pct.log",
    benchmark:
        f"{RESULTS}/benchmarks/coco_subset_{{pct}}pct.tsv"
    shell:
        "python -m prepare coco-subset --annotations {params.annotations:q} --fraction {params.fraction}"
        " --seed {params.seed} --out {output:q} > {log:q} 2>&1"
