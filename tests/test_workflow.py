"""The Snakemake DAG: config validation, clear errors, paper-scale dry run, lint."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import yaml
from interpreter import PYTHON, PYTHON_BIN

from cluster.placeholders import make_placeholders

REPO = Path(__file__).resolve().parents[1]


def snakemake(*args: str) -> subprocess.CompletedProcess[str]:
    """Snakemake on the repo's Snakefile in an empty working directory (no results/, no lock)."""
    with tempfile.TemporaryDirectory() as workdir:
        return subprocess.run([PYTHON, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                               "--directory", workdir, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_smoke_dry_run_lists_every_stage() -> None:
    result = snakemake("-n", "--quiet", "rules", "--", "results/table1.csv")
    assert result.returncode == 0, result.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout + result.stderr, re.M))
    # 10 methods pretrained; 11 rows (random init + 10) x 2 protocols x 1 seed (each job converting its row's
    # backbone itself), plus
    # DenseCL's 4 other detection protocols of table 1 (VOC FPN, COCO Mask FPN / C4, RetinaNet) and its
    # Cityscapes FCN (with the Cityscapes build). SoCo and D3SSL read the proposals, hierarchical grouping the
    # region trees (2 shards + an index each; the trees need the edge model, trained on BSDS500).
    assert counts == {"prepare_coco": "1", "prepare_voc": "1", "prepare_image_list": "1", "pretrain_run": "10",
                      "proposals_shard": "2", "region_trees_shard": "2", "shard_index": "2", "edge_model": "1",
                      "prepare_bsds500": "1", "prepare_cityscapes": "1", "detection_transfer": "15",
                      "segmentation_transfer": "12", "paper_table": "1", "total": "50"}


def test_smoke_dry_run_of_everything_from_an_empty_directory() -> None:
    """`make demo`'s target on a fresh clone: every input of every job is a file some rule makes."""
    result = snakemake("-n", "--quiet", "rules", "--", "all")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    # Probes: coupling on 6 rows + D3SSL's no_dp ablation, O-KNN on 5 and the OpenImage-MINI D3SSL experiment,
    # correspondence on 6 and the ImageNet-layout LC-loss experiment (+ its 7 pair figures); tables 1, 4-12.
    assert counts["analysis_probe"] == "20" and counts["pair_figure"] == "7" and counts["paper_table"] == "10"
    # Each paper's own tables, one job each: HoughCL 3, LC-loss 11 (Tables 1-9, Sec. 4.6, Fig. 3b), D3SSL 7,
    # alignment-uniformity 3, hierarchical grouping 3.
    assert counts["paper_reproduction"] == str(3 + 11 + 7 + 3 + 3)
    # One tiny experiment per image set beside the table rows' (pretrain.experiments): LC-loss on the ImageNet
    # layout built from Tiny-ImageNet, D3SSL on OpenImage-MINI (its proposals: 2 shards + an index), HoughCL on
    # Tiny-ImageNet scored by VOC detection: 3 runs beside the 10 table rows, 12 sweep members and 3 ablation
    # variants, 1 detection job beside 23; image lists of the pretraining sets coco, tinyimagenet, imagenet,
    # openimages_mini, voc_train and the held-out tinyimagenet and coco.
    # Hierarchical grouping on the union of VOC's train list and the COCO set (16 of them: its image list of the
    # union, the VOC list, 2 region-tree shards + an index), scored by DAVIS.
    assert counts["prepare_imagenet"] == "1" and counts["prepare_image_list"] == "7"
    assert counts["prepare_image_union"] == "1" and counts["region_trees_shard"] == "4"
    assert counts["proposals_shard"] == "4" and counts["shard_index"] == "4"
    assert counts["pretrain_run"] == str(10 + 12 + 3 + 4) and counts["detection_transfer"] == str(23 + 1)
    assert counts["table3"] == counts["table13"] == counts["proposal_quality"] == counts["stage_figure"] == "1"
    assert counts["pca_rgb_figure"] == "2" and counts["table_html"] == "15"


def test_smoke_sweep_expands_image_sets_schemes_and_objectives() -> None:
    result = snakemake("-n", "-p", "--", "results/sweeps/alignment_uniformity.csv")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    # 2 schemes x (Tiny-ImageNet: 2 temperatures + 2 weight pairs; COCO: 1 + 1), each measured on its held-out split.
    assert counts["pretrain_run"] == counts["alignment_uniformity"] == "12" and counts["prepare_tinyimagenet"] == "1"
    runs = set(re.findall(r"results/pretrain/([^/\s]+)/meta.json", out))
    assert {"index_contrast_dense_t0.5-tinyimagenet-resnet18-smoke-s0",
            "index_contrast_dense_t0.2-tinyimagenet-resnet18-smoke-s0",
            "index_contrast_instance_a1u2-tinyimagenet-resnet18-smoke-s0",
            "index_contrast_instance_a1u1-coco-resnet18-smoke-s0"} <= runs and len(runs) == 12
    assert "results/prepare/heldout-tinyimagenet/images.txt" in out and "--max-images 64" in out


def test_smoke_ablations_reuse_the_table_run_for_default_variants() -> None:
    """Table 12: a variant equal to the method's own settings is its table run; the others train."""
    result = snakemake("-n", "-p", "--", "results/table12.csv")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    trained = set(re.findall(r"results/pretrain/([^/\s]+)/meta.json", out))
    assert {"d3ssl_no_dp-coco-resnet18-smoke-s0", "lcloss_alpha_0.7-coco-resnet18-smoke-s0",
            "hiergroup_cns_0-coco-resnet18-smoke-s0", "d3ssl-coco-resnet18-smoke-s0",
            "lcloss-coco-resnet18-smoke-s0", "hiergroup-coco-resnet18-smoke-s0"} == trained
    spec = json.loads(re.search(r"--spec-json '(.*?)' --scale", out).group(1))
    rows = {row["key"]: (row["run"], sorted(row["sources"])) for row in spec}
    assert rows == {
        "d3ssl/full": ("d3ssl-coco-resnet18-smoke-s0", ["coupling", "voc_detection"]),
        "d3ssl/no_dp": ("d3ssl_no_dp-coco-resnet18-smoke-s0", ["coupling", "voc_detection"]),
        "lcloss/alpha_0.1": ("lcloss-coco-resnet18-smoke-s0", ["voc_detection_fpn"]),
        "lcloss/alpha_0.7": ("lcloss_alpha_0.7-coco-resnet18-smoke-s0", ["voc_detection_fpn"]),
        "hiergroup/cns_0": ("hiergroup_cns_0-coco-resnet18-smoke-s0", ["davis", "voc_aspp_frozen"]),
        "hiergroup/cns_5": ("hiergroup-coco-resnet18-smoke-s0", ["davis", "voc_aspp_frozen"]),
    }
    assert re.search(r"d3ssl_no_dp-coco-resnet18-smoke-s0.*?\"depositioning\": false", out, re.S)


def test_ablation_errors_name_the_key(tmp_path: Path) -> None:
    base = {"pretrain": {"ablations": {"lcloss": {"evaluate": ["voc_detection_fpn"], "overrides": {},
                                                   "variants": {"a": {"lcloss": {"alpah": 0.2}}}}}}}
    result = snakemake("-n", "--configfile", configfile(tmp_path, base), "--", "results/table12.csv")
    assert result.returncode != 0
    assert "pretrain.ablations.lcloss.variants.a: unknown key(s) lcloss.alpah" in result.stdout + result.stderr
    base["pretrain"]["ablations"]["lcloss"] = {"evaluate": ["voc_detecton"], "overrides": {},
                                               "variants": {"a": {"lcloss": {"alpha": 0.2}}}}
    result = snakemake("-n", "--configfile", configfile(tmp_path, base), "--", "results/table12.csv")
    assert result.returncode != 0
    assert "pretrain.ablations.lcloss.evaluate: 'voc_detecton' is neither a protocol" in result.stdout + result.stderr


def test_unknown_image_set_names_the_fix(tmp_path: Path) -> None:
    result = snakemake("-n", "--configfile", configfile(tmp_path, {"pretrain": {"data": "imagenet21k"}}), "--",
                       "results/table1.csv")
    assert result.returncode != 0
    assert "pretrain.data: unknown image set 'imagenet21k'; define it under pretrain.image_sets" in result.stdout + \
        result.stderr


def configfile(tmp_path: Path, config: dict) -> str:
    path = tmp_path / "override.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_unknown_config_key_names_the_key(tmp_path: Path) -> None:
    result = snakemake("-n", "--configfile", configfile(tmp_path, {"pretrain": {"epochz": 3}}), "--",
                       "results/table1.csv")
    assert result.returncode != 0
    assert "config key pretrain: Additional properties are not allowed ('epochz' was unexpected). " \
           "Remove it or fix its spelling; allowed here: ablations, amp, arch, base_lr" in result.stdout + result.stderr


def test_wrong_type_names_the_key(tmp_path: Path) -> None:
    result = snakemake("-n", "--configfile", configfile(tmp_path, {"pretrain": {"epochs": "ten"}}), "--",
                       "results/table1.csv")
    assert result.returncode != 0
    assert "config key pretrain.epochs: 'ten' is not of type 'integer'." in result.stdout + result.stderr


def test_missing_dataset_root_names_the_fix() -> None:
    result = snakemake("-n", "--config", "scale=paper", "--", "results/table1.csv")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "dataset root for 'coco' not found: /datasets/coco. Set `datasets.coco.root` in a --configfile" in out
    assert "train2017/*.jpg" in out


def test_a_root_without_what_a_protocol_reads_stops_before_any_job(tmp_path: Path) -> None:
    roots = make_placeholders(tmp_path / "placeholders")
    (tmp_path / "placeholders" / "roots" / "coco" / "annotations" / "person_keypoints_val2017.json").unlink()
    result = snakemake("-n", "results/table1.csv", "--config", "scale=paper", "--configfile", roots)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "Job stats" not in out
    assert ("finetune.protocols.coco_keypoints reads annotations/person_keypoints_val2017.json from "
            f"datasets.coco.root ({tmp_path.resolve() / 'placeholders' / 'roots' / 'coco'}), which lacks them.") in out


def test_paper_dry_run_lists_gpu_jobs_and_sharded_prepare_jobs(tmp_path: Path) -> None:
    roots = make_placeholders(tmp_path / "placeholders")
    result = snakemake("-n", "-p", "all", "--config", "scale=paper", "--configfile", roots)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    # Nothing is built at paper scale: the DAG starts from the real dataset roots.
    assert not re.search(r"^prepare_(coco|voc|bsds500|openimages)\s", out, re.M)
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    # 12 rows (random init + 10 methods + the supervised import) x 2 seeds (HoughCL: averaged over 2 trials) per
    # protocol: 10 detection
    # protocols (VOC C4/FPN/FPN frozen, COCO Mask R-CNN C4/FPN, mini-COCO 5/10 %, keypoints, RetinaNet and frozen).
    # 5 segmentation protocols (VOC FCN and frozen, Cityscapes FCN and frozen, VOC frozen ASPP).
    # Table 3 scores the 320 sweep models (rows: sweep) with R18-C4 VOC detection and STL-10 linear evaluation.
    # Table 12: 7 D3SSL + 2 SoCo ablation runs (200 ep) on VOC C4, 4 LC-loss alphas on VOC FPN, and hierarchical
    # grouping's cns = 0 on frozen ASPP and DAVIS (its cns = 5 is the table run), 2 seeds each.
    # The papers' experiments (pretrain.experiments), per run the detection / segmentation protocols of the tables
    # it is printed in: HoughCL's Tiny-ImageNet rows 3 x 2 (VOC C4, COCO FPN); its ImageNet MoCo v2 shared with
    # LC-loss's (+ RetinaNet: 3 / 2), DenseCL likewise (LC-loss's 8 detection + VOC C4: 9 / 4), HoughCL 2 / 0;
    # LC-loss's own, BYOL 300 ep and PixPro 8 / 4 each, SoCo 400 ep 2 / 0; Table 5: BYOL 1000 ep and LC-loss
    # 100 and 200 ep 2 / 2 each, the 160 px run (the alpha = 0.1 ablation run) + COCO FPN 1 / 2; Table 6's BYOL
    # 200 ep 2 / 2; D3SSL's 800-epoch COCO BYOL and PixPro 2 / 0 each, and its OpenImage-MINI MoCo v2, DenseCL,
    # SoCo and D3SSL 2 / 0 each (Table 3).
    experiment_detection = 6 + 3 + 9 + 2 + 3 * 8 + 2 + 3 * 2 + 1 + 2 + 2 * 2 + 4 * 2
    experiment_segmentation = 2 + 4 + 3 * 4 + 3 * 2 + 2 + 2
    assert counts["detection_transfer"] == str(10 * 24 + 320 * 2 + (9 + 4) * 2 + experiment_detection * 2) == "1040"
    # Hierarchical grouping's cns 0 and 5 runs (PASCAL + COCO: neither is the table run) on frozen ASPP.
    assert counts["segmentation_transfer"] == str(5 * 24 + 2 * 2 + experiment_segmentation * 2) == "180"
    assert counts["import_checkpoint"] == "1"
    transfer = dict(re.findall(r"rule detection_transfer:\n.*?output: results/finetune/([a-z0-9_]+/[^/]+/s\d)/metrics"
                               r".*?resources: ([^\n]*)", out, re.S))
    assert len(transfer) == 1040 and all("gpu=8" in r for r in transfer.values())
    assert "voc_detection/d3ssl_no_dp_aug_prc_rbj-coco-resnet50-200ep-s0/s1" in transfer
    assert "voc_detection_fpn/lcloss_alpha_0.05-imagenet-resnet50-200ep-s0/s0" in transfer
    assert "coco_instance_fpn/lcloss_alpha_0.1-imagenet-resnet50-200ep-s0/s1" in transfer  # LC-loss Table 5 too
    assert "voc_detection/houghcl-tinyimagenet-resnet50-200ep-s0/s0" in transfer
    assert "coco_retinanet/mocov2-imagenet-resnet50-200ep-s0/s1" in transfer
    assert "au_voc_detection/index_contrast_dense_t0.05-coco-resnet18-200ep-s0/s1" in transfer
    assert "runtime=1440" in transfer["coco_retinanet/densecl-coco-resnet50-800ep-s0/s1"]
    assert "runtime=720" in transfer["voc_detection_fpn_frozen/random-resnet50/s0"]
    # Frozen features, 12 rows x 2 seeds each: linear eval, few-shot on 7 datasets, DAVIS, segment search; few-shot
    # for LC-loss Table 7's ImageNet SoCo, DenseCL, PixPro and LC-loss, and its BYOL (all LC-loss tables);
    # hierarchical grouping's cns 0 (DAVIS) and cns 5 (DAVIS, segment search) runs.
    assert counts["frozen_feature_eval"] == str((1 + 7 + 1 + 1) * 24 + 320 * 2 + 3 * 2 + 5 * 7 * 2) == "956"
    # Probes (coupling, O-KNN, correspondence) once per row (12), on CPU threads; O-KNN with its own runtime.
    probes = dict(re.findall(r"rule analysis_probe:\n.*?output: results/analysis/([a-z_]+/[^/]+)/metrics"
                             r".*?resources: ([^\n]*)", out, re.S))
    # + correspondence (LC-loss Sec. 4.6) of its ImageNet LC-loss, BYOL, PixPro and DenseCL, and O-KNN (D3SSL
    # Table 4) of its four OpenImage-MINI runs.
    assert counts["analysis_probe"] == "53" and len(probes) == 53 and not any("gpu" in r for r in probes.values())
    assert "correspondence/byol-imagenet-resnet50-300ep-s0" in probes
    assert "coupling/soco_d3ssl_aug-openimages_mini-resnet50-200ep-s0" in probes  # + 9 D3SSL / SoCo ablation runs
    assert "object_knn/d3ssl-openimages_mini-resnet50-800ep-s0" in probes
    assert "runtime=1440" in probes["object_knn/random-resnet50"]
    assert "runtime=240" in probes["coupling/random-resnet50"]
    assert counts["table3"] == counts["table13"] == counts["proposal_quality"] == "1"
    assert counts["paper_table"] == "10" and counts["paper_reproduction"] == "27"  # tables 1, 4-12; the papers' own
    shells = re.findall(r"python -m finetune detection --name (coco_mini5_instance_fpn) .*?--train-json (\S+)", out)
    assert shells and all(path.endswith("instances_train2017_5pct.json") for _, path in shells)
    # 10 table rows + the alignment/uniformity grid: STL-10 2 x (30 + 70), COCO 2 x (20 + 40) (Tables 1-2)
    # + 15 ablation runs (table 12; hierarchical grouping's cns 0 and 5 on PASCAL + COCO) + 20 experiment runs:
    # HoughCL's 3 Tiny-ImageNet and 3 ImageNet runs (the MoCo v2 and DenseCL ones shared with LC-loss),
    # LC-loss's own 400/200/100 ep, BYOL 300/1000/200 ep, PixPro and SoCo
    # (its 200 ep 160 px run is the alpha = 0.1 ablation run), D3SSL's 800-epoch COCO BYOL and PixPro and its
    # four OpenImage-MINI runs (hierarchical grouping's experiment is the cns_5 ablation run).
    assert counts["pretrain_run"] == str(10 + 320 + 15 + 20) and counts["alignment_uniformity"] == "320"
    # 64 shards of proposals for COCO, ImageNet (SoCo's 400-epoch ImageNet run) and OpenImage-MINI, of region
    # trees for COCO and PASCAL + COCO, one edge model, two mini-COCO subsets.
    assert counts["proposals_shard"] == str(3 * 64) and counts["region_trees_shard"] == str(2 * 64)
    assert counts["edge_model"] == "1"
    assert "results/prepare/proposals/imagenet/index.json" in out
    assert counts["coco_subset"] == "2" and counts["openimages_mini"] == "1"
    pretrain_jobs = [block for block in out.split("\n\n") if "rule pretrain_run:" in block]
    assert pretrain_jobs and all("gpu=8" in block and "runtime=4320" in block for block in pretrain_jobs)
    # Each job's GPUs reach its launcher: torchrun with one process per GPU (pretraining, mmseg), Detectron2's
    # own launch (--gpus); one task per node gets gpus x cpus_per_gpu cpus.
    signals = "--signals-to-handle SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"

    def commands(pattern: str) -> int:
        return len(re.findall(rf"^Shell command: {pattern}", out, re.M))

    assert commands(f"torchrun --standalone --nproc-per-node 8 {signals} -m pretrain train ") == 365
    assert commands(f"torchrun --standalone --nproc-per-node 4 {signals} -m finetune segmentation ") == 180
    assert commands(r"python -m finetune detection .* --device cuda --gpus 8 ") == 1040
    assert all("cpus_per_task=64" in block for block in pretrain_jobs)
    shard_resources = re.findall(r"rule proposals_shard:.*?resources: ([^\n]*)", out, re.S)
    assert len(shard_resources) == 3 * 64 and all("runtime=240" in r and "gpu" not in r for r in shard_resources)
    edge_resources = re.search(r"rule edge_model:.*?resources: ([^\n]*)", out, re.S).group(1)
    assert "runtime=480" in edge_resources and "mem_mb=16000" in edge_resources
    jobs = re.findall(r"^rule pretrain_run:\n(.*?)(?=^\[|\Z)", out, re.S | re.M)
    inputs = {re.search(r"run=(\S+)", job).group(1): re.search(r"input: ([^\n]*)", job).group(1) for job in jobs}

    def readers(store: str) -> set[str]:
        return {run.split("-")[0] for run, used in inputs.items() if f"prepare/{store}/index.json" in used}

    # Who reads which prepare-stage store: table rows and their ablation runs (sweep members: index_contrast_*),
    # and SoCo's ImageNet experiment its own image set's proposals.
    assert readers("proposals/imagenet") == {"soco"}
    assert readers("proposals/openimages_mini") == {"soco", "d3ssl", "soco_baseline", "soco_d3ssl_aug"}
    proposal_readers = readers("proposals/coco")
    assert proposal_readers == {"soco", "d3ssl", "d3ssl_full", "d3ssl_no_dp",
                                *(f"d3ssl_no_dp_aug_{a}" for a in ("none", "box_cutout", "box_jitter_prc", "prc",
                                                                   "prc_rbj"))}
    assert readers("region_trees/coco") == {"hiergroup"}
    # Hierarchical grouping's own runs (cns 0 and 5, Tables 1 and 3) on PASCAL train_aug + COCO-2014 train.
    assert readers("region_trees/pascal_coco") == {"hiergroup_cns_0", "hiergroup_cns_5"}
    assert counts["prepare_image_union"] == "1" and counts["region_trees_shard"] == str(2 * 64)
    for run in ("densecl-coco-resnet50-800ep-s0", "lcloss-coco-resnet50-400ep-s0", "pixpro-coco-resnet50-400ep-s0",
                "soco-coco-resnet50-800ep-s0", "d3ssl-coco-resnet50-800ep-s0", "hiergroup-coco-resnet50-80ep-s0",
                "index_contrast-coco-resnet18-200ep-s0", "index_contrast_dense_t0.05-stl10-resnet18-200ep-s0",
                "index_contrast_instance_a16u8-stl10-resnet18-200ep-s0",
                "index_contrast_dense_a8u8-coco-resnet18-200ep-s0"):
        assert f"results/pretrain/{run}/meta.json" in out, run


def test_lint_reports_no_errors() -> None:
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_dataset_builders_without_shared_data_build_procedural_layouts(tmp_path: Path) -> None:
    """A user's clone has no ../shared: the prepare stage generates COCO, VOC and BSDS500 instead.

    Then proposals in 2 shards: after a killed shard job, the rerun redoes only that shard and the index.
    """
    override = {"datasets": {"source_root": str(tmp_path / "absent"),
                             "procedural": {"train_images": 12, "val_images": 6, "bsds_images": 2, "image_size": 128}},
                "prepare": {"proposals": {"max_side": 96}}}
    targets = ["results/prepare/coco/manifest.json", "results/prepare/VOCdevkit/manifest.json",
               "results/prepare/BSDS500/manifest.json", "results/prepare/proposals/coco/index.json"]
    workdir = tmp_path / "run"
    workdir.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [PYTHON, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
             "--cores", "1", "--configfile", configfile(tmp_path, override), *args, "--", *targets],
            cwd=REPO, capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{PYTHON_BIN}:{os.environ['PATH']}"},
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    run()
    prepared = workdir / "results" / "prepare"
    assert json.loads((prepared / "coco" / "manifest.json").read_text())["source"] == "procedural"
    assert (prepared / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").read_text().strip()
    images = (prepared / "pretrain-coco" / "images.txt").read_text().split()
    assert len(images) == 12 and all(Path(p).is_file() for p in images)
    assert json.loads((prepared / "BSDS500" / "manifest.json").read_text())["splits"]["test"]["images"] == 2
    assert json.loads((prepared / "proposals" / "coco" / "index.json").read_text())["images"] == 12
    # A job killed while writing shard 1: shard 0 is done, shard 1 and the index were never written.
    (prepared / "proposals" / "coco" / "shard-00001-of-00002.npz").unlink()
    (prepared / "proposals" / "coco" / "index.json").unlink()
    out = run("-n").stdout
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    assert counts == {"proposals_shard": "1", "shard_index": "1", "total": "2"}, out
    assert "shard-00001-of-00002" in out and "shard-00000-of-00002.npz" not in out.split("rule shard_index")[0]


def test_imported_checkpoint_becomes_a_row_of_every_all_rows_protocol(tmp_path: Path) -> None:
    checkpoint = tmp_path / "resnet18-supervised.pth"
    checkpoint.touch()
    override = {"finetune": {"imported": {"supervised": {"checkpoint": str(checkpoint), "layout": "torchvision",
                                                         "arch": "resnet18"}},
                             "protocols": {"coco_keypoints": {"rows": ["supervised", "random"]}}}}
    result = snakemake("-n", "-p", "--configfile", configfile(tmp_path, override), "--", "results/transfer.csv")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    assert counts["import_checkpoint"] == "1"
    backbone = "results/imported/imported-supervised/backbone.pth"
    assert f"--checkpoint {checkpoint} --layout torchvision --out {backbone}" in out
    for protocol in ("voc_detection", "voc_segmentation", "coco_keypoints"):
        assert f"results/finetune/{protocol}/imported-supervised/s0/metrics.json" in out, protocol
    assert "results/finetune/coco_keypoints/random-resnet18/s0/metrics.json" in out
    assert "results/finetune/coco_keypoints/densecl-coco-resnet18-smoke-s0/s0/metrics.json" not in out
    bad = {"finetune": {"protocols": {"davis": {"rows": ["imagenet-supervised"]}}}}
    result = snakemake("-n", "--configfile", configfile(tmp_path, bad), "--", "results/transfer.csv")
    assert result.returncode != 0
    assert "finetune.protocols.davis.rows: unknown rows ['imagenet-supervised']" in result.stdout + result.stderr
    checkpoint.unlink()  # a missing published file is refused before any job, naming the key
    result = snakemake("-n", "--configfile", configfile(tmp_path, override), "--", "results/transfer.csv")
    assert result.returncode != 0 and "Job stats" not in result.stdout + result.stderr
    assert (f"finetune.imported.supervised.checkpoint not found: {checkpoint}. Download the published file there"
            in result.stdout + result.stderr)
