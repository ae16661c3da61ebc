# Configuration and target lists: the only place that turns the config into file names.
import json
import os
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config

from core.config import validate_config
from core.errors import UserError

from prepare.roots import check_dataset_root

WORKFLOW_DIR = Path(workflow.basedir) / "workflow"
RESULTS = "results"

# The scale picks the base config; --config / --configfile values override it.
_scale = config.get("scale", "smoke")
_scale_file = WORKFLOW_DIR / "config" / f"{_scale}.yaml"
if not _scale_file.is_file():
    raise WorkflowError(f"unknown scale '{_scale}': use --config scale=smoke or scale=paper")
_resolved = yaml.safe_load(_scale_file.read_text())
update_config(_resolved, dict(config))
config.clear()
config.update(_resolved)
validate_config(config, WORKFLOW_DIR / "schemas" / "config.schema.yaml")

PRE = config["pretrain"]
PREP = config["prepare"]
SEEDS = config["seeds"]
ARCH = PRE["arch"]


# External dataset roots (not built by the prepare stage) must exist before any job is planned.
for _name in ("coco", "voc", "openimages", "bsds500"):
    if not config["datasets"][_name]["build"]:
        try:
            check_dataset_root(_name, config["datasets"][_name]["root"])
        except UserError as err:
            raise WorkflowError(str(err)) from None
if PREP["edge_model"]["model"] and not os.path.isfile(PREP["edge_model"]["model"]):
    raise WorkflowError(
        f"prepare.edge_model.model not found: {PREP['edge_model']['model']}. Point it at a structured-edge "
        "model.yml.gz (e.g. OpenCV's official one) or set it to null to train ours on BSDS500."
    )


def dataset_root(name):
    return config["datasets"][name]["root"]


def dataset_manifest(name):
    """The prepare-stage output a job needs before reading dataset `name` (none for external roots)."""
    ds = config["datasets"][name]
    return [f"{ds['root']}/manifest.json"] if ds["build"] else []


def pretrain_run_id(method):
    """<method>-<data>-<arch>-<schedule>-s<seed>: the id of a table row (ARCHITECTURE.md)."""
    return f"{method}-{PRE['data']}-{ARCH}-{PRE['schedule']}-s{PRE['seed']}"


# Table rows in config order: random init first, then one per pretraining method. Each row is
# finetuned once per seed in `seeds` (the papers' independent trials) and averaged.
RANDOM_RUN = f"random-{ARCH}"
PRETRAIN_RUNS = {pretrain_run_id(m): m for m in PRE["methods"]}
TABLE_ROWS = [("random init", RANDOM_RUN)] + [(m, pretrain_run_id(m)) for m in PRE["methods"]]
FINETUNE_RUNS = [RANDOM_RUN, *PRETRAIN_RUNS]
PROTOCOLS = ("voc_detection", "voc_segmentation")


def pretrain_method(wildcards):
    if wildcards.run not in PRETRAIN_RUNS:
        raise WorkflowError(f"unknown pretraining run '{wildcards.run}'; configured: {', '.join(PRETRAIN_RUNS)}")
    return PRETRAIN_RUNS[wildcards.run]


def finetune_metrics(protocol, run, seed):
    return f"{RESULTS}/finetune/{protocol}/{run}/s{seed}/metrics.json"


def resources_for(section, threads):
    """Scheduler resources of a rule; `gpu` only when the config asks for GPUs (SLURM --gpus)."""
    res = config["resources"][section]
    out = {"mem_mb": res["mem_mb"], "runtime": res["runtime"], "cpus_per_task": threads}
    if res["gpus"]:
        out["gpu"] = res["gpus"]
    if "slurm_partition" in res:
        out["slurm_partition"] = res["slurm_partition"]
    return out


def pretrain_image_list(data):
    return f"{RESULTS}/prepare/pretrain-{data}/images.txt"


# Sharded per-image outputs: one job per shard (a SLURM array on a cluster), then an index.
SHARDS = [f"shard-{i:05d}-of-{PREP['shards']:05d}" for i in range(PREP["shards"])]
SHARDED = ("proposals", "region_trees")


def shard_files(kind, data):
    return [f"{RESULTS}/prepare/{kind}/{data}/{shard}.npz" for shard in SHARDS]


def edge_model_file():
    """The structured-edge model: the configured file, or the one the prepare stage trains."""
    return PREP["edge_model"]["model"] or f"{RESULTS}/prepare/edges/model.yml.gz"


def coco_annotations(split):
    return f"{dataset_root('coco')}/annotations/instances_{split}.json"


def openimages_mini_files():
    out = f"{RESULTS}/prepare/openimages_mini"
    return [f"{out}/image_ids.txt", f"{out}/instances_openimages_mini.json", f"{out}/stats.json"]


def coco_subset_files():
    return [f"{RESULTS}/prepare/coco_subsets/instances_train2017_{pct}pct.json" for pct in PREP["coco_subsets"]["percents"]]


def bsds_eval_files():
    return [f"{RESULTS}/prepare/edges/bsds_test.{ext}" for ext in ("csv", "md")]


def prepare_targets():
    data = PRE["data"]
    return [
        *dataset_manifest("coco"),
        *dataset_manifest("voc"),
        *dataset_manifest("bsds500"),
        pretrain_image_list(data),
        *[f"{RESULTS}/prepare/{kind}/{data}/index.json" for kind in SHARDED],
        *openimages_mini_files(),
        *coco_subset_files(),
        *bsds_eval_files(),
    ]


def pretrain_targets():
    return [f"{RESULTS}/pretrain/{run}/meta.json" for run in PRETRAIN_RUNS]


def finetune_targets():
    return [finetune_metrics(p, run, s) for p in PROTOCOLS for run in FINETUNE_RUNS for s in SEEDS]


def table_targets():
    return [f"{RESULTS}/table1.csv", f"{RESULTS}/table1.md", f"{RESULTS}/table2.csv", f"{RESULTS}/table2.md"]


def benchmark_files():
    """Every job's benchmark file on the way to table 1 (the analysis stage summarises them)."""
    built = ("coco", "voc", "bsds500", "openimages")
    files = [f"{RESULTS}/benchmarks/prepare_{name}.tsv" for name in built if config["datasets"][name]["build"]]
    files.append(f"{RESULTS}/benchmarks/prepare_image_list_{PRE['data']}.tsv")
    files += [f"{RESULTS}/benchmarks/{kind}/{PRE['data']}-{shard}.tsv" for kind in SHARDED for shard in SHARDS]
    files += [f"{RESULTS}/benchmarks/{kind}/{PRE['data']}-index.tsv" for kind in SHARDED]
    if not PREP["edge_model"]["model"]:
        files.append(f"{RESULTS}/benchmarks/edge_model.tsv")
    files += [f"{RESULTS}/benchmarks/{name}.tsv" for name in ("bsds_predict", "bsds_eval_edges", "bsds_eval_ucm",
                                                                "bsds_table", "table2")]
    files.append(f"{RESULTS}/benchmarks/openimages_mini.tsv")
    files += [f"{RESULTS}/benchmarks/coco_subset_{pct}pct.tsv" for pct in PREP["coco_subsets"]["percents"]]
    files += [f"{RESULTS}/benchmarks/pretrain/{run}.tsv" for run in PRETRAIN_RUNS]
    files += [f"{RESULTS}/benchmarks/convert/{run}-{fmt}.tsv" for run in PRETRAIN_RUNS for fmt in ("d2", "mmseg")]
    files += [f"{RESULTS}/benchmarks/{p}/{run}-s{s}.tsv" for p in PROTOCOLS for run in FINETUNE_RUNS for s in SEEDS]
    return [*files, f"{RESULTS}/benchmarks/table1.tsv"]


def analysis_targets():
    return [f"{RESULTS}/benchmarks.csv", f"{RESULTS}/benchmarks.md", f"{RESULTS}/figures/pretrain_losses.png"]


def pretrained_weights(fmt):
    """The converted checkpoint of a run, or nothing for random init."""

    def weights(wildcards):
        if wildcards.run == RANDOM_RUN:
            return []
        return [f"{RESULTS}/finetune/weights/{wildcards.run}/{fmt}"]

    return weights


def weights_arg(wildcards, input):
    """The --weights argument of a finetune job: its converted checkpoint, or 'none' for random init."""
    return input.weights[0] if input.weights else "none"


def table1_spec():
    """Rows of table 1 with the files each reads; passed to `python -m analysis table1`."""
    rows = []
    for label, run in TABLE_ROWS:
        rows.append(
            {
                "label": label,
                "run": run,
                "meta": None if run == RANDOM_RUN else f"{RESULTS}/pretrain/{run}/meta.json",
                "metrics": {p: [finetune_metrics(p, run, s) for s in SEEDS] for p in PROTOCOLS},
            }
        )
    return rows


def table1_inputs(wildcards):
    files = [f for row in table1_spec() for paths in row["metrics"].values() for f in paths]
    return files + [row["meta"] for row in table1_spec() if row["meta"]]


wildcard_constraints:
    run=r"[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+)*",
    seed=r"\d+",
    shard=r"shard-\d{5}-of-\d{5}",
    data=r"[a-z0-9_]+",
