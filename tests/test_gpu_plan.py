"""The paper-scale GPU-hour plan (cluster/): dry-run parsing, estimates, the union total, errors, the real CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from interpreter import PYTHON

from cluster.estimate import CPU_SOURCE, JobPlan, plan_job
from cluster.gpu_plan import UNION, by_kind, summary, with_union
from cluster.jobs import Job, parse_jobs
from cluster.jobs import job_stats as stats_of
from cluster.placeholders import PAPER_CONFIG, RULE_INPUTS, make_placeholders, placeholder_layouts
from cluster.throughput import Throughput
from core.errors import UserError

REPO = Path(__file__).resolve().parents[1]

# A hand-written `snakemake -n -p` printout in Snakemake 9's layout: three GPU jobs and a CPU job inside a
# group. Long printed lines are split here only to fit the source.
PRETRAIN_OUT = "results/pretrain/mocov2-coco-resnet50-72ep-s0"
SAMPLE = "\n".join([
    "Building DAG of jobs...",
    "Job stats:",
    "job                    count",
    "-------------------  -------",
    "pretrain_run               1",
    "detection_transfer         1",
    "frozen_feature_eval        1",
    "proposals_shard            1",
    "total                      4",
    "",
    "",
    "[Mon Nov 23 02:51:09 2026]",
    "rule pretrain_run:",
    "    input: results/prepare/pretrain-coco/images.txt",
    f"    output: {PRETRAIN_OUT}/backbone.pth, {PRETRAIN_OUT}/meta.json",
    "    wildcards: run=mocov2-coco-resnet50-72ep-s0",
    "    resources: tmpdir=/tmp, mem_mb=128000, mem=128 GB, disk_mb=<TBD>, runtime=4320, cpus_per_task=64, gpu=8, "
    "nodes=1",
    "Shell command: python -m pretrain train --method mocov2 --image-list results/prepare/pretrain-coco/images.txt "
    "--config-json '{\"arch\": \"resnet50\", \"epochs\": 72, \"batch_size\": 256, \"image_size\": 112}' "
    f"--data-name coco  --seed 0 --device cuda --threads 1 --out {PRETRAIN_OUT} > results/logs/p.log 2>&1",
    "",
    "[Mon Nov 23 02:51:09 2026]",
    "rule detection_transfer:",
    "    output: results/finetune/voc_detection/index_contrast-coco-resnet18-200ep-s0/s0/metrics.json",
    "    wildcards: protocol=voc_detection, run=index_contrast-coco-resnet18-200ep-s0, seed=0",
    "    resources: tmpdir=/tmp, mem_mb=64000, mem=64 GB, runtime=720, cpus_per_task=32, gpu=8, nodes=1",
    "Shell command: python -m finetune detection --name voc_detection --data-root /data/voc  --weights w/d2.pkl "
    "--arch resnet18 --protocol-json '{\"model\": \"faster_rcnn_c4\", \"frozen_backbone\": false, "
    "\"max_iter\": 900, \"ims_per_batch\": 8}' --seed 0 --threads 1 --device cuda --out o > l 2>&1",
    "",
    "[Mon Nov 23 02:51:09 2026]",
    "rule frozen_feature_eval:",
    "    output: results/finetune/few_shot_dtd/random-resnet50/s0/metrics.json",
    "    wildcards: protocol=few_shot_dtd, run=random-resnet50, seed=0",
    "    resources: tmpdir=/tmp, mem_mb=32000, mem=32 GB, runtime=120, cpus_per_task=4, gpu=1, nodes=1",
    "Shell command: python -m finetune few-shot --data-root /data/dtd --layout imagefolder --device cuda "
    "--backbone none --arch resnet50 --protocol-json '{\"ways\": 5, \"shots\": 5, \"queries\": 15, "
    "\"episodes\": 36, \"crop\": 224}' --seed 0 --threads 1 --out o > l 2>&1",
    "[Mon Nov 23 02:51:09 2026] Group job prepare_shards (jobs in lexicogr. order):",
    "",
    "    [Mon Nov 23 02:51:09 2026]",
    "    rule proposals_shard:",
    "        input: results/prepare/pretrain-coco/images.txt",
    "        output: results/prepare/proposals/coco/shard-00000-of-00064.npz",
    "        wildcards: data=coco, shard=shard-00000-of-00064",
    "        resources: tmpdir=/tmp, mem_mb=8000, mem=8 GB, runtime=240, cpus_per_task=1",
    "Shell command: python -m prepare proposals --images results/prepare/pretrain-coco/images.txt --shard 0 "
    "--shards 64 --out x.npz > l 2>&1",
    "Job stats:",
    "job                    count",
    "-------------------  -------",
    "pretrain_run               1",
    "total                      1",
])


def entry(value: float) -> dict:
    return {"value": value, "kind": "estimate", "source": "test"}


# Round numbers, so every estimate below is checked against arithmetic done by hand.
TABLE = {
    "datasets": {"coco": entry(1000)},
    "pretrain": {"images_per_s_per_gpu": {"mocov2": {"resnet50": entry(100)}},
                 "reference_size": entry(224), "size_exponent": entry(2)},
    "detection": {"reference_gpus": entry(8), "reference_ims_per_batch": entry(16),
                  "s_per_iter": {"faster_rcnn_c4": entry(0.5)}, "syncbn_factor": entry(2)},
    "arch_factor": {"resnet50": entry(1), "resnet18": entry(0.5)},
    "frozen": {"forward_images_per_s_per_gpu": entry(100), "reference_pixels": entry(50176)},
}


def throughput(table: dict = TABLE) -> Throughput:
    return Throughput(table, Path("throughput.yaml"))


def test_parse_dry_run_sample_and_estimate_by_hand() -> None:
    jobs = parse_jobs(SAMPLE)
    assert [job.rule for job in jobs] == ["pretrain_run", "detection_transfer", "frozen_feature_eval",
                                          "proposals_shard"]
    assert stats_of(SAMPLE) == {"pretrain_run": 1, "detection_transfer": 1, "frozen_feature_eval": 1,
                                "proposals_shard": 1}  # the first table; the run's closing one is ignored
    pretrain, detection, few_shot, shard = (plan_job(job, throughput()) for job in jobs)
    # 72 epochs x 1000 images / 100 images/s x (112 / 224) ** 2 = 180 s; requested 4320 min x 8 GPUs = 576 h.
    assert pretrain.gpu_hours == pytest.approx(180 / 3600) and pretrain.requested_gpu_hours == 576
    assert (pretrain.stage, pretrain.kind, pretrain.gpus) == ("pretrain", "mocov2 resnet50 coco", 8)
    # 900 iterations x 0.5 s x 8 zoo GPUs x 8 / 16 images x 0.5 (ResNet-18) x 2 (SyncBN) = 1800 s.
    assert detection.gpu_hours == pytest.approx(0.5) and detection.requested_gpu_hours == 96
    assert detection.kind == "voc_detection resnet18" and detection.stage == "transfer"
    # 36 episodes x 5 ways x (5 + 15) images = 3600 forwards at 224 px / 100 per s = 36 s.
    assert few_shot.gpu_hours == pytest.approx(0.01) and few_shot.requested_gpu_hours == 2
    # No GPU: 0 GPU-hours; 240 min x 1 core = 4 core-hours as the upper bound.
    assert (shard.stage, shard.gpu_hours, shard.cpu_core_hours, shard.source) == ("cpu", 0, 4, CPU_SOURCE)
    assert "detection.syncbn_factor (estimate)" in detection.source and detection.basis == "estimate"


def _alignment_uniformity_job(image_list: str, limit: str) -> Job:
    return Job("alignment_uniformity", {"output": "results/analysis/au/run.json", "resources": "gpu=1, nodes=1"},
               f"python -m analysis alignment-uniformity --backbone b.pth --image-list {image_list} --arch resnet18 "
               f"--image-size 224 {limit} --seed 0 --views densecl --threads 1 --out o.json > l 2>&1")


def test_alignment_uniformity_counts_the_whole_heldout_split_or_the_sample() -> None:
    table = {**TABLE, "datasets": {"coco_heldout": entry(5000)}}
    heldout = "results/prepare/heldout-coco/images.txt"
    # 2 views x 5000 images at 224 px / 100 forwards per s x 0.5 (ResNet-18) = 50 s; a sample of 1000: 10 s.
    whole = plan_job(_alignment_uniformity_job(heldout, ""), throughput(table))
    assert whole.gpu_hours == pytest.approx(50 / 3600) and "datasets.coco_heldout" in whole.source
    sample = plan_job(_alignment_uniformity_job(heldout, "--max-images 1000"), throughput(table))
    assert sample.gpu_hours == pytest.approx(10 / 3600)
    with pytest.raises(UserError, match="datasets.stl10_heldout"):
        plan_job(_alignment_uniformity_job("results/prepare/heldout-stl10/images.txt", ""), throughput(table))


def plan(output: str, rule: str, stage: str, gpu_hours: float) -> JobPlan:
    return JobPlan(output, rule, stage, rule, 8, gpu_hours, 576.0, 0.0)


def test_union_counts_a_shared_job_once() -> None:
    shared = plan("results/pretrain/densecl/meta.json", "pretrain_run", "pretrain", 10)
    plans = with_union({"table1": [shared, plan("a/metrics.json", "detection_transfer", "transfer", 1)],
                        "table4": [shared, plan("b/metrics.json", "detection_transfer", "transfer", 2)]})
    rows = summary(by_kind(plans)).set_index("table")
    assert rows.loc["table1", "total GPU-h (estimate)"] == 11 and rows.loc["table4", "total GPU-h (estimate)"] == 12
    assert rows.loc[UNION, "total GPU-h (estimate)"] == 13 and rows.loc[UNION, "pretrain GPU-h"] == 10
    assert rows.loc[UNION, "GPU jobs"] == 3 and rows.loc[UNION, "requested GPU-h (runtime x GPUs)"] == 3 * 576


def test_missing_throughput_entry_names_the_key() -> None:
    job = parse_jobs(SAMPLE.replace("--method mocov2", "--method pixpro"))[0]
    with pytest.raises(UserError, match=rf"no entry pretrain\.images_per_s_per_gpu\.pixpro\.resnet50 \(needed by "
                                        rf"{PRETRAIN_OUT}/backbone\.pth"):
        plan_job(job, throughput())


def test_gpu_rule_without_estimator_and_entries_without_source_are_refused() -> None:
    job = parse_jobs(SAMPLE.replace("rule proposals_shard:", "rule coupling_gpu:").replace(
        "cpus_per_task=1", "cpus_per_task=1, gpu=1"))[-1]
    with pytest.raises(UserError, match="rule coupling_gpu requests 1 GPUs but cluster/estimate.py has no estimator"):
        plan_job(job, throughput())
    with pytest.raises(UserError, match="entry datasets.coco needs `kind`"):
        throughput({"datasets": {"coco": {"value": 1000, "kind": "estimate"}}})
    with pytest.raises(UserError, match="datasets.coco is not an entry"):
        throughput({"datasets": {"coco": 1000}})


def test_placeholders_cover_every_paper_dataset(tmp_path: Path) -> None:
    config = yaml.safe_load(PAPER_CONFIG.read_text())
    layouts = placeholder_layouts(config)
    assert {"coco", "voc", "openimages", "stl10", "davis", "eurosat", "omniglot"} <= set(layouts)
    overrides = yaml.safe_load(make_placeholders(tmp_path).read_text())
    datasets = overrides["datasets"]
    assert set(datasets) == set(layouts) and all(spec["build"] is False for spec in datasets.values())
    # ... and an empty file per published checkpoint the config imports, at the key that names it.
    assert overrides["finetune"] == {"imported": {"supervised": {
        "checkpoint": str((tmp_path / "checkpoints" / "resnet50-0676ba61.pth").resolve())}}}
    assert (tmp_path / "checkpoints" / "resnet50-0676ba61.pth").is_file()
    # What the keypoint protocol, SBD-augmented VOC segmentation and Tiny-ImageNet pretraining read is there.
    coco, voc, tiny = (Path(datasets[name]["root"]) for name in ("coco", "voc", "tinyimagenet"))
    assert (coco / "annotations" / "person_keypoints_val2017.json").is_file() and (coco / "train2017").is_dir()
    assert (voc / "VOC2012" / "ImageSets" / "Segmentation" / "aug.txt").is_file()
    assert (tiny / "train" / "placeholder" / "images").is_dir()
    for name, files in RULE_INPUTS.items():
        assert all((Path(datasets[name]["root"]) / file).is_file() for file in files)


def test_gpu_plan_of_table1_counts_its_jobs(tmp_path: Path) -> None:
    """The CLI on the real paper config: one row group per rule of table 1, with the jobs its dry run lists."""
    out_csv, out_md = tmp_path / "plan" / "gpu_hours.csv", tmp_path / "plan" / "gpu_hours.md"
    result = subprocess.run([PYTHON, "-m", "cluster", "gpu-plan", "--tables", "1", "--papers", "--out-csv",
                             str(out_csv), "--out-md", str(out_md)], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    # Table 1's columns: 5 Detectron2 protocols (VOC C4, VOC FPN, COCO Mask R-CNN FPN and C4, RetinaNet) and 2
    # mmseg ones (VOC, Cityscapes), each for 12 rows (random init + 10 methods + the supervised import) x 2 seeds;
    # 10 pretraining runs and the import; the prepare stage of the region-level methods: 64 shards each of
    # proposals and region trees, their two indexes, one edge model and the COCO image list.
    stats = {"detection_transfer": 5 * 12 * 2, "segmentation_transfer": 2 * 12 * 2, "pretrain_run": 10,
             "import_checkpoint": 1,
             "proposals_shard": 64, "region_trees_shard": 64, "shard_index": 2, "edge_model": 1,
             "prepare_image_list": 1, "paper_table": 1}
    rows = pd.read_csv(out_csv)
    table1, union = rows[rows["table"] == "table1"], rows[rows["table"] == UNION]
    assert table1.groupby("rule")["jobs"].sum().to_dict() == stats
    gpu_rules = {"pretrain_run", "detection_transfer", "segmentation_transfer"}
    assert set(table1.loc[table1["gpu_hours"] > 0, "rule"]) == gpu_rules
    same = [frame.drop(columns="table").reset_index(drop=True) for frame in (union, table1)]
    assert same[0].equals(same[1])  # one table: its union is itself
    assert "| all tables |" in result.stdout and out_md.read_text() == result.stdout.rstrip("\n") + "\n"
    assert "whole command" in result.stderr
