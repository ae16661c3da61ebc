"""Tables read only metrics.json/meta.json and compute means by hand-checkable rules."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from analysis.benchmarks import summarise_benchmarks
from analysis.figures import plot_pretrain_losses
from analysis.sweep_table import write_sweep_table
from analysis.table1 import write_table1
from core.errors import UserError


def _metrics(path: Path, protocol: str, values: dict[str, float], seed: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"protocol": protocol, "metrics": values, "iterations": 60, "weights": None,
                                "provenance": {"commit": "abc", "config_hash": f"h{protocol}", "seed": seed}}))
    return str(path)


def test_table1_means_over_seeds_with_provenance(tmp_path: Path) -> None:
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"pretrain_data": {"name": "coco"}, "iterations": 50,
                                "provenance": {"commit": "abc", "config_hash": "p", "seed": 0}}))
    det = [_metrics(tmp_path / f"d{s}.json", "voc_detection", {"AP": 10.0 + s, "AP50": 20.0, "AP75": 5.0}, s)
           for s in (0, 1)]
    seg = [_metrics(tmp_path / f"s{s}.json", "voc_segmentation", {"mIoU": 30.0 + 2 * s}, s) for s in (0, 1)]
    spec = [{"label": "densecl", "run": "densecl-coco-resnet18-smoke-s0", "meta": str(meta),
             "metrics": {"voc_detection": det, "voc_segmentation": seg}}]
    write_table1(spec, "smoke", tmp_path / "t.csv", tmp_path / "t.md")
    row = pd.read_csv(tmp_path / "t.csv").iloc[0]
    assert row["VOC AP"] == pytest.approx(10.5) and row["VOC mIoU"] == pytest.approx(31.0)
    assert row["VOC AP std"] == pytest.approx(0.71, abs=0.01)  # sample std of (10, 11)
    assert row["pretrain_data"] == "coco" and row["pretrain_iterations"] == 50 and row["finetune_seeds"] == "0 1"
    assert row["commit"] == "abc"
    markdown = (tmp_path / "t.md").read_text()
    assert "| DenseCL" in markdown and "not comparable with the papers" in markdown


def test_table1_names_a_missing_result(tmp_path: Path) -> None:
    spec = [{"label": "random init", "run": "random-resnet18", "meta": None,
             "metrics": {"voc_detection": [str(tmp_path / "nope.json")], "voc_segmentation": []}}]
    with pytest.raises(UserError, match="missing result .*nope.json: run `snakemake .*nope.json` first"):
        write_table1(spec, "smoke", tmp_path / "t.csv", tmp_path / "t.md")


def test_benchmark_summary(tmp_path: Path) -> None:
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    files = []
    for name, secs, rss in (("pretrain/a", 10.0, 100.0), ("prepare_coco", 2.5, 50.0)):
        path = tmp_path / "benchmarks" / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + f"{secs}\t0:00:10\t{rss}\t1\t1\t1\t0\t0\t50\t{secs / 2}\n")
        files.append(str(path))
    frame = summarise_benchmarks(files, str(tmp_path / "b.csv"), str(tmp_path / "b.md"))
    assert frame["job"].tolist() == ["pretrain/a", "prepare_coco", "total (sum over jobs)"]
    assert frame.iloc[-1]["wall_s"] == pytest.approx(12.5) and frame.iloc[-1]["max_rss_mb"] == 100.0


def test_pretrain_loss_figure(tmp_path: Path) -> None:
    for run, columns in (("a", "loss,loss_global"), ("b", "loss,loss_global,loss_dense")):
        (tmp_path / run).mkdir()
        rows = [",".join(["1", "0.03"] + ["5.0"] * len(columns.split(","))),
                ",".join(["2", "0.02"] + ["4.0"] * len(columns.split(",")))]
        (tmp_path / run / "train_log.csv").write_text("\n".join([f"iteration,lr,{columns}", *rows]) + "\n")
    out = tmp_path / "fig.png"
    plot_pretrain_losses([str(tmp_path / "a"), str(tmp_path / "b")], str(out))
    from PIL import Image

    with Image.open(out) as img:  # three panels side by side: loss, loss_dense, loss_global
        assert img.format == "PNG" and img.width == 3 * 4.5 * 120
    with pytest.raises(UserError, match="train_log.csv is missing: rerun the pretraining of c"):
        plot_pretrain_losses([str(tmp_path / "c")], str(out))


def test_sweep_table_lists_each_model_with_its_objective(tmp_path: Path) -> None:
    measured = {"instance": {"align": 0.5, "uniform": -2.0}, "dense": {"align": 0.75, "uniform": -1.5}, "images": 8}
    (tmp_path / "m.json").write_text(json.dumps(measured))
    members = [{"run": "r1", "data": "coco", "member": {"scheme": "dense", "loss": "infonce", "temperature": 0.2},
                "metrics": str(tmp_path / "m.json")},
               {"run": "r2", "data": "coco", "member": {"scheme": "instance", "loss": "align_uniform",
                                                        "align_weight": 1.0, "uniform_weight": 2.0},
                "metrics": str(tmp_path / "m.json")}]
    frame = write_sweep_table(members, tmp_path / "s.csv", tmp_path / "s.md")
    assert frame["tau"].tolist()[0] == 0.2 and frame["w_u"].tolist()[1] == 2.0
    assert frame["dense L_a"].tolist() == [0.75, 0.75] and frame["instance L_u"].tolist() == [-2.0, -2.0]
    members[0]["metrics"] = str(tmp_path / "absent.json")
    with pytest.raises(UserError, match="missing .*absent.json"):
        write_sweep_table(members, tmp_path / "s.csv", tmp_path / "s.md")
