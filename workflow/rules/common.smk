# Configuration and target lists: the only place that turns the config into file names.
import json
import os
import re
import shlex
from pathlib import Path

import pandas as pd
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config

from core.config import typed_config_values, validate_config
from core.launch import torch_launch_prefix
from analysis.table_specs import ABLATION_TABLE, TABLES, sources_of
from core.errors import UserError

from prepare.roots import (BUILDABLE, check_dataset_root, check_image_set_root, check_protocol_root,
                           protocol_dataset)
from analysis.paper_coverage import coverage
from analysis.paper_reproduction import paper_table_names, table_slug
from analysis.reference import load_reference
from plan.runs import build_plan
from pretrain.runs import METHOD_EMBEDDING, METHOD_PREPARED

WORKFLOW_DIR = Path(workflow.basedir) / "workflow"
RESULTS = "results"

# The scale picks the base config; --config / --configfile values override it.
_scale = config.get("scale", "smoke")
_scale_file = WORKFLOW_DIR / "config" / f"{_scale}.yaml"
if not _scale_file.is_file():
    raise WorkflowError(f"unknown scale '{_scale}': use --config scale=smoke or scale=paper")
_resolved = yaml.safe_load(_scale_file.read_text())
update_config(_resolved, dict(config))
# `--config 'pretrain={batch_size: 8}'` (Snakemake takes no dotted keys): Snakemake reads such a value with
# YAML's BaseLoader, which leaves every nested scalar a string; read them as YAML does.
update_config(_resolved, typed_config_values(workflow.config_settings.config))
config.clear()
config.update(_resolved)
validate_config(config, WORKFLOW_DIR / "schemas" / "config.schema.yaml")

# The site's SLURM values (partition, account, GPU type, constraint): one file, named in the README.
_site_file = Path(config.get("slurm_site", WORKFLOW_DIR / "profiles" / "slurm" / "site.yaml"))
if not _site_file.is_file():
    raise WorkflowError(f"slurm_site: {_site_file} not found; copy workflow/profiles/slurm/site.yaml there, "
                        "or drop `slurm_site` to use that file.")
SITE = yaml.safe_load(_site_file.read_text()) or {}
validate_config(SITE, WORKFLOW_DIR / "schemas" / "site.schema.yaml")

PRE = config["pretrain"]
PREP = config["prepare"]
SEEDS = config["seeds"]
ARCH = PRE["arch"]


def image_set(name, where="image set"):
    """The spec of image set `name` (pretrain.image_sets); `where` names the config key that uses it."""
    if name not in PRE["image_sets"]:
        raise WorkflowError(f"{where}: unknown image set '{name}'; define it under pretrain.image_sets "
                            f"(defined: {', '.join(PRE['image_sets'])}).")
    spec = PRE["image_sets"][name]
    for member in spec.get("union", []):
        if "union" in image_set(member, f"pretrain.image_sets.{name}.union"):
            raise WorkflowError(f"pretrain.image_sets.{name}.union: '{member}' is a union itself; list its members.")
    if "union" not in spec and spec["dataset"] not in config["datasets"]:
        raise WorkflowError(f"pretrain.image_sets.{name}.dataset: '{spec['dataset']}' has no entry under `datasets`; "
                            f"add datasets.{spec['dataset']}: {{root: ..., build: ...}}.")
    return spec


# Image sets that join others (pretrain.image_sets.<name>.union) and those read from a dataset root.
UNIONS = [name for name, spec in PRE["image_sets"].items() if "union" in spec]
ROOTED_SETS = [name for name in PRE["image_sets"] if name not in UNIONS]


def dataset_root(name):
    return config["datasets"][name]["root"]


AU_SWEEP = PRE["sweeps"].get("alignment_uniformity")
_used_sets = {PRE["data"]: "pretrain.data"}
_used_sets.update({name: "pretrain.sweeps.alignment_uniformity.datasets" for name in (AU_SWEEP or {}).get("datasets", {})})
_used_sets.update({spec["data"]: f"pretrain.experiments.{key}.data" for key, spec in PRE.get("experiments", {}).items()})
_used_sets.update({spec["data"]: f"pretrain.ablations.{m}.data" for m, spec in PRE["ablations"].items() if "data" in spec})


def protocol_data(protocol):
    """The `datasets` entry a transfer protocol reads."""
    name = protocol_dataset(config["finetune"]["protocols"][protocol])
    if name not in config["datasets"]:
        raise WorkflowError(f"finetune.protocols.{protocol}.data: '{name}' has no entry under `datasets`; "
                            f"add datasets.{name}: {{root: ..., build: false}}.")
    return name


_used_sets.update({member: f"pretrain.image_sets.{name}.union" for name in list(_used_sets)
                   for member in image_set(name, _used_sets[name]).get("union", [])})
_used_datasets = ["coco", "voc", "openimages", "bsds500"]
_used_datasets += sorted({image_set(n, w)["dataset"] for n, w in _used_sets.items() if n not in UNIONS}
                         - set(_used_datasets))
_used_datasets += sorted({protocol_data(p) for p in config["finetune"]["protocols"]} - set(_used_datasets))

# External dataset roots (not built by the prepare stage) must exist before any job is planned.
for _name in _used_datasets:
    if config["datasets"][_name]["build"] and _name not in BUILDABLE:
        raise WorkflowError(f"datasets.{_name}.build: the prepare stage cannot build '{_name}'; set build: false "
                            f"and point datasets.{_name}.root at the official layout.")
    if not config["datasets"][_name]["build"]:
        try:
            check_dataset_root(_name, config["datasets"][_name]["root"])
        except UserError as err:
            raise WorkflowError(str(err)) from None
# ... and hold what each protocol and image set reads from them (a built root is checked by its builder).
try:
    for _protocol, _spec in config["finetune"]["protocols"].items():
        _name = protocol_data(_protocol)
        if not config["datasets"][_name]["build"]:
            check_protocol_root(_protocol, _spec, _name, dataset_root(_name))
    for _set in [name for name in _used_sets if name not in UNIONS]:
        _spec = image_set(_set)
        if not config["datasets"][_spec["dataset"]]["build"]:
            check_image_set_root(_set, _spec, dataset_root(_spec["dataset"]))
except UserError as err:
    raise WorkflowError(str(err)) from None
if PREP["edge_model"]["model"] and not os.path.isfile(PREP["edge_model"]["model"]):
    raise WorkflowError(
        f"prepare.edge_model.model not found: {PREP['edge_model']['model']}. Point it at a structured-edge "
        "model.yml.gz (e.g. OpenCV's official one) or set it to null to train ours on BSDS500."
    )


def dataset_manifest(name):
    """The prepare-stage output a job needs before reading dataset `name` (none for external roots)."""
    ds = config["datasets"][name]
    return [f"{ds['root']}/manifest.json"] if ds["build"] else []


# Every run the config trains and scores (plan/runs.py): table rows in config order (random init, one per
# pretraining method on pretrain.data, each imported published checkpoint), the alignment/uniformity
# sweep, table 12's ablation variants and the papers' experiments. Each protocol finetunes its runs once
# per seed in `seeds` (the papers' independent trials).
try:
    PLAN = build_plan(config)
except UserError as err:
    raise WorkflowError(str(err)) from None
FT = config["finetune"]
for _label, _spec in FT["imported"].items():
    if not os.path.isfile(_spec["checkpoint"]):
        raise WorkflowError(f"finetune.imported.{_label}.checkpoint not found: {_spec['checkpoint']}. Download the "
                            "published file there, point the key at it, or drop the entry (a dry run without the "
                            "files: `python -m cluster placeholders`).")
RANDOM_RUN = PLAN.random_run
TABLE_RUNS = PLAN.table_runs
IMPORTED_RUNS = PLAN.imported_runs
SWEEP_RUNS = PLAN.sweep_runs
ABLATION_ROWS = PLAN.ablation_rows
EXPERIMENT_RUN_OF = PLAN.experiment_run_of
PRETRAIN_RUNS = PLAN.pretrain_runs
TABLE_ROWS = PLAN.table_rows
PROTOCOLS = FT["protocols"]
# Keys the DAG reads; every other key of a protocol is its launcher's --protocol-json.
DAG_KEYS = ("task", "rows", "threads", "train_subset", "data", "layout")


def runs_of(rows, where):
    try:
        return PLAN.runs_of(rows, where)
    except UserError as err:
        raise WorkflowError(str(err)) from None


def protocols_of(task):
    return [name for name, spec in PROTOCOLS.items() if spec["task"] == task]


def one_of(names):
    """A wildcard regex matching exactly `names` (none: matches nothing)."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


def protocol_json(protocol):
    return json.dumps({k: v for k, v in PROTOCOLS[protocol].items() if k not in DAG_KEYS})


TRANSFER_JOBS = [(p, run) for p in PROTOCOLS for run in PLAN.scored_runs(p)]

# Analysis probes (analysis.probes.<name>): one measurement of a frozen backbone per run, written to
# results/analysis/<probe>/<run>/metrics.json; the same DAG keys as a protocol (task, rows, threads, data).
PROBES = config["analysis"]["probes"]
PCA_RGB = config["analysis"].get("pca_rgb")
PROBE_JOBS = [(probe, run) for probe in PROBES for run in PLAN.scored_runs(probe)]


def probe_metrics(probe, run):
    return f"{RESULTS}/analysis/{probe}/{run}/metrics.json"


def probe_resources():
    """A probe job's resources: resources.<probe>, else resources.analysis, with the probe's threads."""

    def of(probe):
        return resources_for(probe if probe in config["resources"] else "analysis", PROBES[probe]["threads"])

    keys = {key for probe in PROBES for key in of(probe)} or {"mem_mb", "runtime"}
    return {key: (lambda wc, key=key: of(wc.probe).get(key, 0)) for key in sorted(keys)}


def probe_json(probe):
    protocol = {k: v for k, v in PROBES[probe].items() if k not in DAG_KEYS}
    if PROBES[probe]["task"] == "correspondence":  # positive pairs by HoughCL's PHM too, with its pretraining settings
        protocol["phm"] = config["pretrain"]["houghcl"]
    return json.dumps(protocol)


def run_arch(wildcards):
    """The backbone of a finetune run: its pretraining run's, an import's, or pretrain.arch for random init."""
    if wildcards.run == RANDOM_RUN:
        return ARCH
    if wildcards.run in IMPORTED_RUNS:
        return IMPORTED_RUNS[wildcards.run]["arch"]
    return pretrain_run(wildcards)["cfg"]["arch"]


def backbone_file(wildcards):
    """backbone.pth of a run: the pretrain stage's export, or the imported published checkpoint."""
    if wildcards.run in IMPORTED_RUNS:
        return f"{RESULTS}/imported/{wildcards.run}/backbone.pth"
    return f"{RESULTS}/pretrain/{wildcards.run}/backbone.pth"


def pretrain_run(wildcards):
    if wildcards.run not in PRETRAIN_RUNS:
        raise WorkflowError(f"unknown pretraining run '{wildcards.run}'; configured: {', '.join(PRETRAIN_RUNS)}")
    return PRETRAIN_RUNS[wildcards.run]


def finetune_metrics(protocol, run, seed):
    return f"{RESULTS}/finetune/{protocol}/{run}/s{seed}/metrics.json"


def resources_for(section, threads):
    """Scheduler resources of a rule's jobs from `resources.<section>`: memory, runtime (minutes) and cpus;
    for a GPU section its GPUs (SLURM --gpus) over `nodes` nodes, with cpus_per_gpu cpus per GPU, and the
    site's GPU type and constraint; the site's partition and account (site.yaml) for every job."""
    res = config["resources"][section]
    out = {"mem_mb": res["mem_mb"], "runtime": res["runtime"], "cpus_per_task": threads}
    if res["gpus"]:
        nodes = res.get("nodes", 1)
        if res["gpus"] % nodes:
            raise WorkflowError(f"resources.{section}: gpus ({res['gpus']}) must be a multiple of nodes ({nodes}).")
        out |= {"gpu": res["gpus"], "nodes": nodes}
        if "cpus_per_gpu" in res:
            out["cpus_per_task"] = res["cpus_per_gpu"] * res["gpus"] // nodes  # one task per node
        out |= {key: SITE[key] for key in ("gpu_model", "constraint") if SITE.get(key)}
    partition = res.get("slurm_partition") or (res["gpus"] and SITE.get("gpu_partition")) or SITE.get("partition")
    if partition:
        out["slurm_partition"] = partition
    if SITE.get("account"):
        out["slurm_account"] = SITE["account"]
    return out


# A rule's resource keys are fixed, so a protocol without a key takes its neutral value.
_NEUTRAL_RESOURCES = {"gpu": 0, "nodes": 1}


def transfer_resources(*tasks):
    """Resources for the jobs of `tasks`, per protocol (resources.<protocol>, else resources.<its task>)."""

    def of(protocol):
        section = protocol if protocol in config["resources"] else PROTOCOLS[protocol]["task"]
        return resources_for(section, PROTOCOLS[protocol]["threads"])

    keys = {key for task in tasks for protocol in protocols_of(task) for key in of(protocol)} or {"mem_mb", "runtime"}
    return {key: (lambda wc, key=key: of(wc.protocol).get(key, _NEUTRAL_RESOURCES.get(key, "")))
            for key in sorted(keys)}


def gpus_of(section_or_protocol):
    """(GPUs per node, nodes) of a job's resources section (a protocol falls back to its task)."""
    section = section_or_protocol
    if section not in config["resources"]:
        section = PROTOCOLS[section]["task"]
    res = config["resources"][section]
    nodes = res.get("nodes", 1)
    return res["gpus"] // nodes, nodes


def detectron2_gpus(protocol):
    """The GPUs of a detection job, for Detectron2's own launcher (one process per GPU on one node)."""
    gpus, nodes = gpus_of(protocol)
    if nodes > 1:
        raise WorkflowError(f"resources of detection protocol {protocol}: Detectron2 jobs run on one node "
                            f"(the papers' 8 GPUs); set nodes: 1 (now {nodes}).")
    return gpus


FROZEN_EVAL_TASKS = ("linear_eval", "few_shot", "davis", "segment_search")


def frozen_eval_args(wildcards):
    """The classification commands' own arguments: the dataset layout and the device."""
    spec = PROTOCOLS[wildcards.protocol]
    return f"--layout {spec['layout']} --device {config['device']}" if "layout" in spec else ""


def protocol_threads(wildcards):
    return PROTOCOLS[wildcards.protocol]["threads"]


def pretrain_inputs(wildcards):
    """A run's image list, plus the prepare-stage store (proposals, region trees) a region-level method reads."""
    spec = pretrain_run(wildcards)
    inputs = {"images": pretrain_image_list(spec["data"])}
    if spec["method"] in METHOD_PREPARED:
        inputs["prepared"] = f"{RESULTS}/prepare/{METHOD_PREPARED[spec['method']]}/{spec['data']}/index.json"
    return inputs


def pretrain_image_list(data, split="pretrain"):
    """The image list of an image set: split "pretrain" (its train folders) or "heldout"."""
    return f"{RESULTS}/prepare/{split}-{data}/images.txt"


# Sharded per-image outputs: one job per shard (a SLURM array on a cluster), then an index.
SHARDS = [f"shard-{i:05d}-of-{PREP['shards']:05d}" for i in range(PREP["shards"])]
SHARDED = ("proposals", "region_trees")


def prepared_stores():
    """(store, image set) of every sharded store built: both of pretrain.data (table 13 scores them), and
    each one a pretraining run reads (an experiment's region-level method on its own image set)."""
    read = {(METHOD_PREPARED[spec["method"]], spec["data"]) for spec in PRETRAIN_RUNS.values()
            if spec["method"] in METHOD_PREPARED}
    return sorted({(kind, PRE["data"]) for kind in SHARDED} | read)


def shard_files(kind, data):
    return [f"{RESULTS}/prepare/{kind}/{data}/{shard}.npz" for shard in SHARDS]


def edge_model_file():
    """The structured-edge model: the configured file, or the one the prepare stage trains."""
    return PREP["edge_model"]["model"] or f"{RESULTS}/prepare/edges/model.yml.gz"


def coco_annotations(split):
    return f"{dataset_root('coco')}/annotations/instances_{split}.json"


def proposal_truth(wildcards):
    """Ground-truth boxes of the proposal store's images (pretrain.data), for table 13's recall."""
    spec = image_set(PRE["data"], "pretrain.data")
    if spec["dataset"] != "coco" or len(spec["train"]) != 1:
        raise WorkflowError(f"table 13 measures proposal recall on COCO boxes; pretrain.data '{PRE['data']}' is not "
                            "one COCO split. Build the other tables, or point pretrain.data at a COCO image set.")
    return coco_annotations(spec["train"][0])


def openimages_mini_files():
    out = f"{RESULTS}/prepare/openimages_mini"
    return [f"{out}/image_ids.txt", f"{out}/instances_openimages_mini.json", f"{out}/stats.json"]


# The prepare-stage selections an image set may keep (pretrain.image_sets.<name>.select): its image-id list.
SELECTIONS = {"openimages_mini": openimages_mini_files()[0]}


def image_set_selection(spec):
    """The prepare-stage image-id list an image set's train split keeps (`select`), or nothing."""
    return [SELECTIONS[spec["select"]]] if spec.get("select") else []


def image_set_ids_arg(wildcards, input):
    """--only-ids of an image list: the `select`ed prepare-stage list, or the set's `ids` file under its root."""
    spec = image_set(wildcards.data)
    if wildcards.split != "pretrain":
        return ""
    if spec.get("ids"):
        return f"--only-ids {shlex.quote(os.path.join(dataset_root(spec['dataset']), spec['ids']))}"
    return f"--only-ids {shlex.quote(input.selection[0])}" if input.get("selection") else ""


def coco_subset_file(percent):
    if percent not in PREP["coco_subsets"]["percents"]:
        raise WorkflowError(f"train_subset {percent}: add {percent} to prepare.coco_subsets.percents.")
    return f"{RESULTS}/prepare/coco_subsets/instances_train2017_{percent}pct.json"


def coco_subset_files():
    return [coco_subset_file(pct) for pct in PREP["coco_subsets"]["percents"]]


def detection_inputs(wildcards):
    """Dataset, backbone and (mini-COCO) the train subset of a detection job."""
    spec = PROTOCOLS[wildcards.protocol]
    inputs = {"dataset": dataset_manifest(protocol_data(wildcards.protocol)), "backbone": row_backbone(wildcards)}
    if "train_subset" in spec:
        inputs["train_json"] = coco_subset_file(spec["train_subset"])
    return inputs


# The BSDS500 test images predicted and scored (the first N by name at smoke scale; all when null).
BSDS_MAX_IMAGES = f"--max-images {PREP['bsds_eval']['max_images']}" if PREP["bsds_eval"]["max_images"] else ""


# The two BSDS500 maps predicted and scored: the SE edges and their OWT-UCM.
BSDS_MAPS = ("edges", "ucm")


def bsds_eval_files():
    return [f"{RESULTS}/prepare/edges/bsds_test.{ext}" for ext in ("csv", "md")]


def prepare_targets():
    data = PRE["data"]
    return [
        *dataset_manifest("coco"),
        *dataset_manifest("voc"),
        *dataset_manifest("bsds500"),
        pretrain_image_list(data),
        *[f"{RESULTS}/prepare/{kind}/{store_data}/index.json" for kind, store_data in prepared_stores()],
        *openimages_mini_files(),
        *coco_subset_files(),
        *bsds_eval_files(),
    ]


def alignment_uniformity_file(run):
    return f"{RESULTS}/pretrain/{run}/alignment_uniformity.json"


def sweep_spec():
    """The sweep's models with their settings and measurements; passed to `python -m analysis sweep-table`."""
    return [{"run": run, "data": spec["data"], "member": spec["member"], "metrics": alignment_uniformity_file(run)}
            for run, spec in SWEEP_RUNS.items()]


def table3_spec():
    """The sweep's models with their L_a/L_u files and, per evaluation protocol (analysis.table3), their
    metrics files over seeds; passed to `python -m analysis table3`."""
    evaluations = config["analysis"]["table3"]["evaluations"]
    for protocol in evaluations:
        if protocol not in PROTOCOLS or PROTOCOLS[protocol]["rows"] != "sweep":
            raise WorkflowError(f"analysis.table3.evaluations.{protocol}: define finetune.protocols.{protocol} with "
                                "`rows: sweep` (the sweep's models are its rows).")
    members = [{"run": run, "data": spec["data"], "member": spec["member"],
                "alignment_uniformity": alignment_uniformity_file(run),
                "metrics": {p: [finetune_metrics(p, run, s) for s in SEEDS] for p in evaluations}}
               for run, spec in SWEEP_RUNS.items()]
    return {"members": members, "evaluations": evaluations, "scale": config["scale"],
            "paper_image_sets": config["analysis"]["table3"]["paper_image_sets"]}


def table3_inputs(wildcards):
    spec = table3_spec()
    return [f for m in spec["members"] for f in [m["alignment_uniformity"], *[x for fs in m["metrics"].values() for x in fs]]]


def sweep_table_files():
    return [f"{RESULTS}/sweeps/alignment_uniformity.{ext}" for ext in ("csv", "md")] if SWEEP_RUNS else []


def pretrain_targets():
    return [f"{RESULTS}/pretrain/{run}/meta.json" for run in PRETRAIN_RUNS] + sweep_table_files()


def finetune_targets():
    return [finetune_metrics(p, run, s) for p, run in TRANSFER_JOBS for s in SEEDS]


def table_targets():
    names = [f"table{n}" for n in PAPER_TABLES] + ["table2", "table13", "transfer"] + (["table3"] if SWEEP_RUNS else [])
    return [f"{RESULTS}/{name}.{ext}" for name in names for ext in ("csv", "md")] + [
        f"{RESULTS}/report/{name}.html" for name in REPORT_TABLES if name != "benchmarks"] + reproduction_files()


def image_lists_used():
    """(split, image set) of every image list a configured job reads."""
    used = {("pretrain", spec["data"]) for spec in PRETRAIN_RUNS.values()}
    used |= {("heldout", spec["data"]) for spec in SWEEP_RUNS.values()}
    used |= {("pretrain", member) for split, data in list(used) if data in UNIONS for member in image_set(data)["union"]}
    return sorted(used)


# The rule that runs each transfer task (finetune.smk); the other tasks are frozen-feature evaluations.
TRANSFER_RULES = {"detection": "detection_transfer", "segmentation": "segmentation_transfer"}


def benchmarks_of(name, **wildcards):
    """The benchmark files of the jobs of `name` (a rule), its own `benchmark:` path once per job (equal-length
    wildcard lists, zipped). Called once every rule is defined (from input functions)."""
    template = str(getattr(rules, name).benchmark)
    return expand(template, zip, **wildcards) if wildcards else [template]


def _zipped(jobs, *names):
    """Wildcard lists from job tuples: _zipped([(a, b), ...], "x", "y") == {"x": [a, ...], "y": [b, ...]}."""
    return {name: [job[i] for job in jobs] for i, name in enumerate(names)}


def benchmark_files():
    """Every configured job's benchmark file, by stage (the rules file of the job's rule): the rules' own
    benchmark paths, expanded over the plan's jobs; the analysis stage summarises them."""
    built = [name for name in _used_datasets if config["datasets"][name]["build"]]
    prepare = [f for name in built for f in benchmarks_of(f"prepare_{name}")]
    lists = image_lists_used()
    prepare += benchmarks_of("prepare_image_list", **_zipped([job for job in lists if job[1] not in UNIONS],
                                                            "split", "data"))
    prepare += benchmarks_of("prepare_image_union", data=[data for _, data in lists if data in UNIONS])
    stores = prepared_stores()
    for kind in SHARDED:
        shards = [(data, shard) for store, data in stores if store == kind for shard in SHARDS]
        prepare += benchmarks_of(f"{kind}_shard", **_zipped(shards, "data", "shard"))
    prepare += benchmarks_of("shard_index", **_zipped(stores, "kind", "data"))
    if not PREP["edge_model"]["model"]:
        prepare += benchmarks_of("edge_model")
    prepare += benchmarks_of("bsds_predict") + benchmarks_of("bsds_eval", maps=BSDS_MAPS) + benchmarks_of("bsds_table")
    prepare += benchmarks_of("openimages_mini") + benchmarks_of("coco_subset", pct=PREP["coco_subsets"]["percents"])
    pretrain = benchmarks_of("pretrain_run", run=list(PRETRAIN_RUNS))
    pretrain += benchmarks_of("alignment_uniformity", run=list(SWEEP_RUNS))
    finetune = benchmarks_of("import_checkpoint", run=list(IMPORTED_RUNS))
    for protocol, run in TRANSFER_JOBS:
        launcher = TRANSFER_RULES.get(PROTOCOLS[protocol]["task"], "frozen_feature_eval")
        finetune += benchmarks_of(launcher, protocol=[protocol] * len(SEEDS), run=[run] * len(SEEDS), seed=SEEDS)
    analysis = benchmarks_of("analysis_probe", **_zipped(PROBE_JOBS, "probe", "run"))
    tables = benchmarks_of("paper_table", number=PAPER_TABLES)
    tables += benchmarks_of("paper_reproduction", **_zipped(
        [(paper, slug) for paper, slugs in REPRODUCED.items() for slug in slugs], "paper", "table"))
    tables += [f for name in ("table2", "proposal_quality", "table13", "transfer_table") for f in benchmarks_of(name)]
    if SWEEP_RUNS:
        tables += benchmarks_of("sweep_table")
    return {"prepare": prepare, "pretrain": pretrain, "finetune": finetune, "analysis": analysis, "tables": tables}


def benchmark_stage_args(files_by_stage):
    """`--stage NAME FILE...` per stage, for `python -m analysis benchmarks`."""
    return " ".join(f"--stage {stage} {' '.join(map(shlex.quote, files))}" for stage, files in files_by_stage.items()
                    if files)


def analysis_targets():
    return [f"{RESULTS}/benchmarks.csv", f"{RESULTS}/benchmarks.md", f"{RESULTS}/report/benchmarks.html",
            f"{RESULTS}/figures/pretrain_losses.png", *sweep_table_files(),
            *([f"{RESULTS}/figures/coupling_stages.png"] if 5 in PAPER_TABLES else []),
            *([f"{RESULTS}/figures/alignment_uniformity.png"] if SWEEP_RUNS else []),
            *[f"{RESULTS}/figures/pca_rgb/{run}.png" for run in (runs_of(PCA_RGB["rows"], "analysis.pca_rgb")
                                                                  if PCA_RGB else [])],
            *[f"{RESULTS}/figures/pairs/{run}.png" for probe, run in PROBE_JOBS if PROBES[probe]["task"] == "correspondence"]]


def row_backbone(wildcards):
    """backbone.pth of a transfer job's row, or nothing for random init."""
    return [] if wildcards.run == RANDOM_RUN else [backbone_file(wildcards)]


# A pretraining run's dense embedding head (pretrain/export.py; empty for a method without one).
PRETRAIN_EMBEDDING = f"{RESULTS}/pretrain/{{run}}/embedding.pth"


def row_embedding(run, wanted):
    """embedding.pth of a row whose method exports a dense embedding, where the evaluation reads embeddings
    (`embedding: true`); nothing for the other rows, which read the protocol's `layer`."""
    exports = run in PRETRAIN_RUNS and PRETRAIN_RUNS[run]["method"] in METHOD_EMBEDDING
    return [PRETRAIN_EMBEDDING.format(run=run)] if wanted and exports else []


def embedding_arg(wildcards, input):
    """--embedding of a job whose `row_embedding` input is not empty."""
    files = input.get("embedding", [])  # Snakemake may drop an empty named input
    return f"--embedding {shlex.quote(files[0])}" if files else ""


def weights_arg(wildcards, input):
    """A Detectron2 or mmseg job's weights: its row's backbone.pth, converted in the job (--backbone), or
    --weights none for random init."""
    return f"--backbone {shlex.quote(input.backbone[0])}" if input.backbone else "--weights none"


def run_meta(run):
    """meta.json of a row: the pretraining run's, an import's, or none for random init."""
    if run == RANDOM_RUN:
        return None
    return f"{RESULTS}/imported/{run}/meta.json" if run in IMPORTED_RUNS else f"{RESULTS}/pretrain/{run}/meta.json"


def transfer_spec():
    """Every (protocol, row) with its per-seed metrics files; passed to `python -m analysis transfer-table`."""
    labels = {run: key for key, run in EXPERIMENT_RUN_OF.items()} | {run: label for label, run in TABLE_ROWS}
    return [{"protocol": p, "task": PROTOCOLS[p]["task"], "label": labels.get(run, run), "run": run,
             "metrics": [finetune_metrics(p, run, s) for s in SEEDS]} for p, run in TRANSFER_JOBS]


ROW_KEYS = {run: ("random" if run == RANDOM_RUN else label) for label, run in TABLE_ROWS}


def paper_table_spec(number):
    """Rows of paper table `number` with, per source it reads (protocol or probe), the metrics files;
    passed to `python -m analysis paper-table`. Rows follow TABLE_ROWS, each with the sources whose
    `rows` name it (table 12: ABLATION_ROWS, with their method's `evaluate`); sources not configured
    are absent."""
    if number == ABLATION_TABLE:
        keyed = [(key, run, PRE["ablations"][method]["evaluate"]) for key, (method, run) in ABLATION_ROWS.items()]
    else:
        configured = [s for s in sources_of(number) if s in PROTOCOLS or s in PROBES]
        keyed = [(ROW_KEYS[run], run, [s for s in configured if run in PLAN.source_rows(s)])
                 for _, run in TABLE_ROWS]
    rows = []
    for key, run, evaluated in keyed:
        sources = {source: ([finetune_metrics(source, run, s) for s in SEEDS] if source in PROTOCOLS
                            else [probe_metrics(source, run)])
                   for source in sources_of(number) if source in evaluated}
        if sources:
            rows.append({"key": key, "run": run, "meta": run_meta(run), "sources": sources})
    return rows


# The generic paper tables with at least one configured cell at this scale.
PAPER_TABLES = [n for n in sorted(TABLES) if paper_table_spec(n)]

# Each paper's own tables (results/papers/<paper>/<table>): every published value with the cell the plan has
# for it (analysis/paper_coverage.py), or none.
try:
    _REFERENCE = load_reference()
    PAPER_CELLS = coverage(config, PLAN, _REFERENCE)
except UserError as err:
    raise WorkflowError(str(err)) from None
REPRODUCED = {paper: {table_slug(name): name for name in names}
              for paper, names in paper_table_names(_REFERENCE).items()}
REPRODUCTION = f"{RESULTS}/papers/{{paper}}/{{table}}"  # + .csv / .md


def reproduction_spec(paper, slug):
    """The cells of one paper table: its values with our run and metrics files where the plan measures them;
    passed to `python -m analysis paper-reproduction`."""
    cells = PAPER_CELLS[(PAPER_CELLS["paper"] == paper) & (PAPER_CELLS["paper_table"] == REPRODUCED[paper][slug])]
    spec = []
    for cell in cells.to_dict("records"):
        table = cell["table"]
        run = cell["runs"][0] if cell["planned"] and pd.isna(table) else ""
        files = []
        if run:
            files = ([finetune_metrics(cell["source"], run, s) for s in SEEDS] if cell["source"] in PROTOCOLS
                     else [probe_metrics(cell["source"], run)])
        elsewhere = "" if pd.isna(table) else f"{RESULTS}/table{int(table)}.md"
        spec.append({**{k: cell[k] for k in ("paper_row", "paper_column", "value", "like_for_like", "detail",
                                             "metric")},
                     "run": run, "files": files, "meta": run_meta(run) if run else None, "elsewhere": elsewhere})
    return spec


def reproduction_inputs(wildcards):
    """Its cells' metrics and runs, and the tables of ours it points to for statistics (table 2, 3)."""
    spec = reproduction_spec(wildcards.paper, wildcards.table)
    elsewhere = sorted({cell["elsewhere"] for cell in spec} - {""})
    return ([f for cell in spec for f in cell["files"]] + sorted({cell["meta"] for cell in spec if cell["meta"]})
            + elsewhere)


def reproduction_files():
    return [f"{REPRODUCTION.format(paper=paper, table=slug)}.{ext}" for paper, slugs in REPRODUCED.items()
            for slug in slugs for ext in ("csv", "md")]


# Tables shown in the report (as HTML pages made from their Markdown), with their captions.
REPORT_TABLES = {
    **{f"table{n}": f"{TABLES[n].title}. Mirrors {TABLES[n].mirrors}." for n in PAPER_TABLES},
    "table2": "Table 2: OpenImage-MINI and COCO statistics, ours next to D3SSL Table 2.",
    **({"table3": "Table 3: alignment/uniformity of the sweep's models vs their downstream performance, with "
                  "Kendall's tau (dense_alignment_uniformity.md Tables 1-2)."} if SWEEP_RUNS else {}),
    "table13": "Table 13: data-preparation quality: BSDS500 boundaries of our SE edges and OWT-UCM, proposal recall.",
    "transfer": "Every transfer protocol x row: each metric's mean ± std over the fine-tuning trials.",
    "benchmarks": "Wall time, peak memory and CPU time of every job (Snakemake benchmark files).",
}


def paper_table_inputs(wildcards):
    rows = paper_table_spec(int(wildcards.number))
    return [f for row in rows for files in row["sources"].values() for f in files] + [
        row["meta"] for row in rows if row["meta"]]


wildcard_constraints:
    run=r"[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+)*",
    seed=r"\d+",
    shard=r"shard-\d{5}-of-\d{5}",
    data=r"[a-z0-9_]+",
    split=r"pretrain|heldout",
