"""Tables read only metrics.json/meta.json and compute means by hand-checkable rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis.benchmarks import summarise_benchmarks
from analysis.figures import plot_pretrain_losses
from analysis.paper_tables import write_paper_table
from analysis.proposal_quality import best_overlaps, gt_boxes, seconds_per_image
from analysis.report_check import check_report
from analysis.report_html import write_markdown_page
from analysis.stage_figure import STAGES, plot_stage_curves
from analysis.sweep_table import write_sweep_table
from analysis.table13 import write_table13
from core.errors import UserError


def _metrics(path: Path, protocol: str, values: dict[str, float], seed: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"protocol": protocol, "metrics": values, "iterations": 60, "weights": None,
                                "provenance": {"commit": "abc", "config_hash": f"h{protocol}", "seed": seed}}))
    return str(path)


REFERENCE = pd.DataFrame([
    {"table": 1, "row": "densecl", "column": "voc_detection/AP", "value": 58.7, "paper": "houghcl",
     "paper_table": "Table 1", "paper_row": "DenseCL", "paper_column": "AP", "note": ""},
    {"table": 1, "row": "mocov2", "column": "voc_detection/AP", "value": 57.0, "paper": "houghcl",
     "paper_table": "Table 1", "paper_row": "MoCo v2", "paper_column": "AP", "note": ""},
])


def test_paper_table_means_over_seeds_next_to_the_paper(tmp_path: Path) -> None:
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"pretrain_data": {"name": "coco"}, "iterations": 50,
                                "provenance": {"commit": "abc", "config_hash": "p", "seed": 0}}))
    det = [_metrics(tmp_path / f"d{s}.json", "voc_detection", {"AP": 10.0 + s, "AP50": 20.0, "AP75": 5.0}, s)
           for s in (0, 1)]
    seg = [_metrics(tmp_path / f"s{s}.json", "voc_segmentation", {"mIoU": 30.0 + 2 * s}, s) for s in (0, 1)]
    rows = [{"key": "densecl", "run": "densecl-coco-resnet18-smoke-s0", "meta": str(meta),
             "sources": {"voc_detection": det, "voc_segmentation": seg}},
            {"key": "random", "run": "random-resnet18", "meta": None, "sources": {"voc_segmentation": seg[:1]}}]
    cells = write_paper_table(1, rows, "smoke", tmp_path / "t.csv", tmp_path / "t.md", reference=REFERENCE)
    table = pd.read_csv(tmp_path / "t.csv").set_index(["row", "column"])
    ap = table.loc[("densecl", "voc_detection/AP")]
    assert ap["ours"] == pytest.approx(10.5) and ap["std"] == pytest.approx(0.7071, abs=1e-4)  # sample std
    assert ap["paper"] == 58.7 and ap["difference"] == pytest.approx(10.5 - 58.7) and ap["trials"] == 2
    assert ap["paper_source"] == "houghcl Table 1"
    assert pd.isna(table.loc[("densecl", "voc_segmentation/mIoU"), "paper"])  # no paper value: none invented
    assert table.loc[("random", "voc_segmentation/mIoU"), "ours"] == pytest.approx(30.0)
    # Absent, never invented: random init has no detection result, MoCo v2 no row, COCO no source.
    assert ("random", "voc_detection/AP") not in table.index and "mocov2" not in table.index.get_level_values(0)
    assert len(cells) == 5
    markdown = (tmp_path / "t.md").read_text()
    assert "| DenseCL" in markdown and "10.50 ± 0.71 (58.7, -48.20)" in markdown
    assert "coco_instance_fpn/AP" not in markdown and "not comparable with the papers" in markdown
    provenance = markdown.split("## Provenance")[1]
    assert "densecl-coco-resnet18-smoke-s0" in provenance and "| 0 1 " in provenance and "abc" in provenance


def test_ablation_table_rows_name_method_and_variant_beside_the_transcribed_values(tmp_path: Path) -> None:
    """Table 12 against the reference file itself: D3SSL Table 7 "w/o L_dp" (AP 55.5, CR 1.33)."""
    det = [_metrics(tmp_path / "d.json", "voc_detection", {"AP": 1.25, "AP50": 3.0, "AP75": 0.5}, 0)]
    coupling = [_metrics(tmp_path / "c.json", "coupling", {"CR_C5": 1.01, "MCS_C5": 0.9}, 0)]
    rows = [{"key": "d3ssl/no_dp", "run": "d3ssl_no_dp-coco-resnet18-smoke-s0", "meta": None,
             "sources": {"voc_detection": det, "coupling": coupling}}]
    write_paper_table(12, rows, "smoke", tmp_path / "t.csv", tmp_path / "t.md")
    table = pd.read_csv(tmp_path / "t.csv").set_index(["row", "column"])
    assert table.loc[("d3ssl/no_dp", "voc_detection/AP"), "paper"] == 55.5
    assert table.loc[("d3ssl/no_dp", "coupling/CR_C5"), "difference"] == pytest.approx(1.01 - 1.33)
    assert pd.isna(table.loc[("d3ssl/no_dp", "voc_detection/AP50"), "paper"])  # Table 7 prints AP only
    assert set(table["method"]) == {"D3SSL / no_dp"}
    assert "| D3SSL / no_dp" in (tmp_path / "t.md").read_text()


def test_paper_table_names_a_missing_result_and_a_missing_metric(tmp_path: Path) -> None:
    rows = [{"key": "random", "run": "random-resnet18", "meta": None,
             "sources": {"voc_detection": [str(tmp_path / "nope.json")]}}]
    with pytest.raises(UserError, match="missing result .*nope.json: run `snakemake .*nope.json` first"):
        write_paper_table(1, rows, "smoke", tmp_path / "t.csv", tmp_path / "t.md", reference=REFERENCE)
    rows[0]["sources"] = {"voc_detection": [_metrics(tmp_path / "d.json", "voc_detection", {"AP": 1.0}, 0)]}
    with pytest.raises(UserError, match="has no metric 'AP50'"):
        write_paper_table(1, rows, "smoke", tmp_path / "t.csv", tmp_path / "t.md", reference=REFERENCE)


def test_table_page_renders_markdown_tables(tmp_path: Path) -> None:
    md = tmp_path / "table9.md"
    md.write_text("# Table 9\n\n| method | AP |\n|:--|--:|\n| DenseCL | 1.50 |\n")
    write_markdown_page(md, tmp_path / "t.html")
    page = (tmp_path / "t.html").read_text()
    assert "<h1>Table 9</h1>" in page and '<td style="text-align:left">DenseCL</td>' in page
    assert '<td style="text-align:right">1.50</td>' in page and "<th" in page


def test_report_check_reads_the_page_chromium_rendered(tmp_path: Path) -> None:
    """The text exists only after the page's script ran, as in Snakemake's React report."""
    page = tmp_path / "report.html"
    page.write_text('<html><body><div id="x"></div><script>document.getElementById("x").innerHTML = '
                    '"<table><tr><td>Table " + (2 - 1) + ": main</td></tr></table>";</script></body></html>')
    measured = check_report(page, tmp_path / "shot.png", ["Table 1: main"])
    with Image.open(tmp_path / "shot.png") as shot:
        assert shot.size == (1400, 1600) and measured["colours"] > 1
    with pytest.raises(UserError, match=r"the rendered report lacks \['Table 13'\]"):
        check_report(page, tmp_path / "shot.png", ["Table 13"])


def test_benchmark_summary(tmp_path: Path) -> None:
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    files = []
    for name, secs, rss in (("pretrain/a", 10.0, 100.0), ("prepare_coco", 2.5, 50.0)):
        path = tmp_path / "benchmarks" / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + f"{secs}\t0:00:10\t{rss}\t1\t1\t1\t0\t0\t50\t{secs / 2}\n")
        files.append(str(path))
    files.append(str(tmp_path / "benchmarks" / "pretrain" / "a.tsv"))  # a second pretrain job: same numbers
    frame = summarise_benchmarks({"prepare": files[1:2], "pretrain": [files[0], files[2]]}, str(tmp_path / "b.csv"),
                                 str(tmp_path / "b.md"))
    assert frame["job"].tolist() == ["pretrain/a", "pretrain/a", "prepare_coco", "total (sum over jobs)"]
    assert frame.iloc[-1]["wall_s"] == pytest.approx(22.5) and frame.iloc[-1]["max_rss_mb"] == 100.0
    markdown = (tmp_path / "b.md").read_text()
    # Per stage, in the order given: jobs, summed wall, slowest job, summed CPU, share of the summed wall.
    assert "| prepare  |      1 |      2.5 |         2.5 |     1.2 | 11.1%   |" in markdown
    assert "| pretrain |      2 |     20.0 |        10.0 |    10.0 | 88.9%   |" in markdown
    assert markdown.index("# Time per stage") < markdown.index("# Time and memory per job")


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
    measured = {"instance": {"align": 0.5, "uniform": -2.0},
                "dense": {"align": 0.75, "uniform": -1.5, "uniform_same_index": -1.25}, "images": 8}
    (tmp_path / "m.json").write_text(json.dumps(measured))
    members = [{"run": "r1", "data": "coco", "member": {"scheme": "dense", "loss": "infonce", "temperature": 0.2},
                "metrics": str(tmp_path / "m.json")},
               {"run": "r2", "data": "coco", "member": {"scheme": "instance", "loss": "align_uniform",
                                                        "align_weight": 1.0, "uniform_weight": 2.0},
                "metrics": str(tmp_path / "m.json")}]
    frame = write_sweep_table(members, tmp_path / "s.csv", tmp_path / "s.md")
    assert frame["tau"].tolist()[0] == 0.2 and frame["w_u"].tolist()[1] == 2.0
    assert frame["dense L_a"].tolist() == [0.75, 0.75] and frame["instance L_u"].tolist() == [-2.0, -2.0]
    assert frame["dense L_u same-index"].tolist() == [-1.25, -1.25]
    members[0]["metrics"] = str(tmp_path / "absent.json")
    with pytest.raises(UserError, match="missing .*absent.json"):
        write_sweep_table(members, tmp_path / "s.csv", tmp_path / "s.md")


def test_proposal_overlaps_and_recall_by_hand(tmp_path: Path) -> None:
    truth = np.array([[0, 0, 10, 10], [20, 20, 30, 40]], dtype=np.float32)
    proposals = np.array([[0, 0, 5, 10], [20, 20, 30, 30]], dtype=np.float32)
    # Box 1: half of it covered exactly (IoU 50 / 100); box 2: 100 of its 200 pixels (IoU 0.5 as well).
    assert best_overlaps(proposals, truth) == pytest.approx([0.5, 0.5])
    assert best_overlaps(np.zeros((0, 4), np.float32), truth).tolist() == [0.0, 0.0]
    coco = {"images": [{"id": 1, "file_name": "a.jpg"}],
            "annotations": [{"image_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0},
                            {"image_id": 1, "bbox": [5, 5, 1, 1], "iscrowd": 1}]}
    (tmp_path / "inst.json").write_text(json.dumps(coco))
    assert gt_boxes(tmp_path / "inst.json")["a"].tolist() == [[0, 0, 10, 10]]  # crowd regions are not objects
    tsv = tmp_path / "b.tsv"
    tsv.write_text("s\th:m:s\tmax_rss\n12.5\t0:00:12\t100\n")
    assert seconds_per_image([str(tsv), str(tsv)], 5) == pytest.approx(5.0)


def test_table13_compares_only_the_same_method(tmp_path: Path) -> None:
    bsds = tmp_path / "bsds.csv"
    bsds.write_text("method,ODS,OIS,AP,s/img\nSE edges + NMS (ours),0.66,0.67,0.69,0.05\n"
                    "SE + OWT-UCM (ours),0.62,0.63,0.61,0.24\n\"gPb-owt-ucm (Arbelaez et al., TPAMI 2011, Table 1)\""
                    ",0.73,0.76,,\n\"SE edges (Dollar & Zitnick, TPAMI 2014)\",0.74,,,\n")
    quality = {"recall@0.5": 20.0, "recall@0.7": 14.0, "ABO": 24.0, "proposals_per_image": 155.0,
               "seconds_per_image": 0.5, "images": 4, "gt_boxes": 9, "settings": {"filters": ["ratio3size0308"]}}
    (tmp_path / "q.json").write_text(json.dumps(quality))
    frame = write_table13(bsds, tmp_path / "q.json", "smoke", tmp_path / "t.csv", tmp_path / "t.md")
    cells = frame.set_index(["component", "metric"])
    assert cells.loc[("SE edges + NMS", "ODS"), "difference"] == pytest.approx(-0.08)
    assert pd.isna(cells.loc[("SE + OWT-UCM", "ODS"), "paper"])  # gPb-owt-ucm is another method: no difference
    assert cells.loc[("gPb-owt-ucm (Arbelaez et al., TPAMI 2011, Table 1)", "OIS"), "paper"] == 0.76
    assert cells.loc[("selective search (filtered store)", "recall@0.5"), "ours"] == 20.0
    assert ("SE edges (Dollar & Zitnick, TPAMI 2014)", "ODS") not in cells.index  # shown as the comparator only


def test_stage_figure_draws_one_line_per_method(tmp_path: Path) -> None:
    lines = [{"method": m, "column": f"coupling/{k}_{s}", "ours": v}
             for m, v in (("random init", 1.0), ("DenseCL", 0.9)) for k in ("CR", "MCS") for s in STAGES]
    pd.DataFrame(lines).to_csv(tmp_path / "table5.csv", index=False)
    plot_stage_curves(tmp_path / "table5.csv", tmp_path / "f.png")
    with Image.open(tmp_path / "f.png") as figure:
        assert figure.size == (1080, 432)  # 9 x 3.6 inches at 120 dpi
