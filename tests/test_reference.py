"""The papers' reference values: the file loads, every mapped cell names a protocol and metric of ours, the
numbers are the papers' (checked against the extracted paper text), and bad files fail on the right line."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis.reference import COLUMNS, PAPERS, load_reference, reference_for
from core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
PAPER_DIR = ROOT.parent / "shared" / "papers"
PROTOCOLS = yaml.safe_load((ROOT / "workflow" / "config" / "paper.yaml").read_text())["finetune"]["protocols"]
STAGES = ("C2", "C3", "C4", "C5")
PROBES = {  # per-checkpoint analysis probes: <probe>/<metric>
    "object_knn": {"OKNN_top1", "OKNN_top5", "DOKNN_top1", "DOKNN_top5"},
    "coupling": {f"{m}_{s}" for m in ("CR", "MCS") for s in STAGES},
    "correspondence": {"correspondence_acc", "pair_acc", "pair_acc_phm"},
}
TASK_METRICS = {
    "detection": {"AP", "AP50", "AP75", "APm", "APm50", "APm75", "APkp", "APkp50", "APkp75"},
    "segmentation": {"mIoU"}, "linear_eval": {"top1", "top5"}, "few_shot": {"top1"},
    "davis": {"J_mean", "F_mean", "JF_mean"}, "segment_search": {"mIoU"},
}
TABLE2_STATS = {"images", "objects_per_image", "categories_per_image", "categories"}
TABLE13_STATS = {"ods", "ois", "ap", "recall", "seconds_per_image"}
TABLE3_ROW = re.compile(r"^(stl10|coco|stl10_nonoverlap|coco_nonoverlap)/(instance|dense)/"
                        r"(infonce|align_uniform|total)$|^random$")
NUMBER = re.compile(r"(-?\d+(?:\.\d+)?)(K?)")


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return load_reference()


def _paper_rows(paper: str) -> list[list[str]]:
    """The table rows of an extracted paper: tab-separated lines and HTML <tr> blocks, as cell lists."""
    text = (PAPER_DIR / f"{paper}.md").read_text()
    rows = [line.split("\t") for line in text.splitlines() if "\t" in line]
    rows += [re.findall(r"<t[dh]>(.*?)</t[dh]>", block, re.S) for block in re.findall(r"<tr>(.*?)</tr>", text, re.S)]
    return rows


def _numbers(cells: list[str]) -> list[float]:
    """The first number printed in each cell (later ones are deltas such as "54.7 ↓2.1")."""
    out = []
    for cell in cells:
        match = NUMBER.search(re.sub(r"<[^>]+>", "", cell))
        if match:
            out.append(float(match[1]) * (1000 if match[2] else 1))
    return out


def _is_subsequence(values: list[float], row: list[float]) -> bool:
    it = iter(row)
    return all(any(v == r for r in it) for v in values)


def test_file_loads(reference: pd.DataFrame) -> None:
    assert list(reference.columns) == list(COLUMNS)
    assert set(reference["paper"]) == set(PAPERS)
    assert reference["value"].dtype == float
    mapped = reference.dropna(subset=["table"])
    assert not mapped.duplicated(["table", "row", "column"]).any()
    assert len(mapped) > 500 and len(reference) > len(mapped)


def test_every_paper_table_is_transcribed(reference: pd.DataFrame) -> None:
    for paper in PAPERS:
        captions = set(re.findall(r"^Table (\d+)[:.]", (PAPER_DIR / f"{paper}.md").read_text(), re.M))
        tables = reference.loc[reference["paper"] == paper, "paper_table"]
        done = {t.split()[1] for t in tables if t.startswith("Table")}
        assert captions and captions == done, paper


def test_mapped_cells_name_our_protocols_and_metrics(reference: pd.DataFrame) -> None:
    for line in reference.dropna(subset=["table"]).itertuples():
        where = f"{line.paper} {line.paper_table} {line.paper_row!r} -> {line.table} {line.row} {line.column}"
        if line.table == 2:
            assert line.row in {"coco", "openimages_mini"} and line.column in TABLE2_STATS, where
            continue
        if line.table == 13:
            assert line.column in TABLE13_STATS, where
            continue
        protocol, metric = line.column.split("/")
        if line.table == 3:
            assert TABLE3_ROW.match(line.row), where
            assert protocol in {"linear_eval", "voc_detection"}, where
            assert metric in {"exp", "max", "avg", "top10", "tau"}, where
            continue
        row_pattern = r"^[a-z0-9_]+/[a-z0-9_.]+$" if line.table == 12 else r"^[a-z0-9_]+$"
        assert re.match(row_pattern, line.row), where
        if protocol in PROBES:
            assert metric in PROBES[protocol], where
        else:
            assert protocol in PROTOCOLS, where
            assert metric in TASK_METRICS[PROTOCOLS[protocol]["task"]], where


def test_values_are_in_the_papers(reference: pd.DataFrame) -> None:
    """Every transcribed line of a table row appears, in column order, in one row of that paper's tables;
    numbers taken from the text appear in the text."""
    rows = {paper: [_numbers(cells) for cells in _paper_rows(paper)] for paper in PAPERS}
    texts = {paper: (PAPER_DIR / f"{paper}.md").read_text() for paper in PAPERS}
    keys = ["paper", "paper_table", "paper_row", "table"]
    for (paper, paper_table, paper_row, _), group in reference.groupby(keys, dropna=False, sort=False):
        values = list(group["value"])
        if paper_table.startswith("Table"):
            assert any(_is_subsequence(values, row) for row in rows[paper]), (paper, paper_table, paper_row, values)
        else:
            assert all(f"{v:g}" in texts[paper] for v in values), (paper, paper_table, paper_row, values)


# (paper, printed row label, our table, row, column, value read off the paper by hand)
SPOT_CHECKS = [
    ("houghcl", "HoughCL", 1, "houghcl", "voc_detection/AP", 56.8),
    ("houghcl", "DenseCL", 1, "densecl", "coco_instance_fpn/APm75", 38.4),
    ("lc_loss", "OURS", 1, "lcloss", "coco_retinanet/AP", 40.6),
    ("lc_loss", "PixPro", 6, "pixpro", "voc_detection_fpn_frozen/AP", 53.5),
    ("lc_loss", "VADeR", 8, "vader", "coco_keypoints/APkp", 66.1),
    ("lc_loss", "OURS", 9, "lcloss", "coco_mini10_instance_fpn/AP75", 30.1),
    ("lc_loss", "DenseCL", 7, "densecl", "few_shot_omniglot/top1", 77.4),
    ("d3ssl", "SoCo", 1, "soco", "coco_instance_c4/APm", 34.4),
    ("d3ssl", "D3SSL", 4, "d3ssl", "object_knn/DOKNN_top1", 55.8),
    ("d3ssl", "w/", 12, "d3ssl/full", "coupling/MCS_C5", 0.82),
    ("dense_alignment_uniformity", "Dense", 3, "stl10/dense/align_uniform", "voc_detection/tau", -0.22),
    ("hierarchical_grouping", "Ours (cns = 5)", 10, "hiergroup", "davis/J_mean", 47.1),
    ("hierarchical_grouping", "SegSort", 10, "segsort", "segment_search/mIoU", 10.17),
]


@pytest.mark.parametrize(("paper", "label", "table", "row", "column", "value"), SPOT_CHECKS)
def test_spot_checks(reference: pd.DataFrame, paper: str, label: str, table: int, row: str, column: str,
                     value: float) -> None:
    cell = reference[(reference["table"] == table) & (reference["row"] == row) & (reference["column"] == column)]
    assert len(cell) == 1 and cell["value"].item() == value and cell["paper"].item() == paper
    labelled = [cells for cells in _paper_rows(paper)
                if any(re.sub(r"<[^>]+>|\$", "", c).strip().startswith(label) for c in cells)]
    assert any(value in _numbers(cells) for cells in labelled)


def test_shared_cells_keep_the_protocol_defining_paper(reference: pd.DataFrame) -> None:
    voc = reference_for(1).set_index(["row", "column"])
    assert voc.loc[("mocov2", "voc_detection/AP"), "paper"] == "houghcl"
    assert voc.loc[("mocov2", "voc_detection/AP"), "value"] == 54.7
    assert voc.loc[("supervised", "coco_instance_fpn/AP"), "value"] == 39.7  # HoughCL, not LC-loss's 38.9
    other = reference[(reference["paper"] == "d3ssl") & (reference["paper_table"] == "Table 1")
                      & reference["paper_row"].str.startswith("MoCo v2") & (reference["paper_column"].str.endswith(
                          "VOC07+12 / AP"))]
    assert other["table"].isna().all() and "houghcl" in other["note"].item()


def test_table2_values_as_printed_in_d3ssl_table2() -> None:
    """D3SSL Table 2 by hand: OpenImage-MINI 146K / 9.1 / 3.20 / 569, COCO 118K / 7.4 / 2.95 / 80."""
    cells = reference_for(2).set_index(["row", "column"])["value"]
    printed = {"openimages_mini": (146_000, 9.1, 3.20, 569), "coco": (118_000, 7.4, 2.95, 80)}
    for row, values in printed.items():
        for stat, value in zip(("images", "objects_per_image", "categories_per_image", "categories"), values,
                               strict=True):
            assert cells[(row, stat)] == value


def test_reference_for_one_table() -> None:
    frame = reference_for(10)
    assert "table" not in frame.columns and len(frame) > 0
    assert set(frame["column"].str.split("/").str[0]) == {"voc_aspp_frozen", "segment_search", "davis"}
    with pytest.raises(UserError, match="not one of our tables"):
        reference_for(14)


GOOD = "1,mocov2,voc_detection/AP,54.7,houghcl,Table 1,COCO / MoCo v2,AP,\n"


@pytest.mark.parametrize(("body", "line"), [
    (GOOD + "1,densecl,voc_detection/AP,abc,houghcl,Table 1,COCO / DenseCL,AP,\n", 3),
    (GOOD + "1,densecl,voc_detection/AP,inf,houghcl,Table 1,COCO / DenseCL,AP,\n", 3),
    (GOOD + "1,mocov2,voc_detection/AP,54.7,d3ssl,Table 1,MoCo v2,AP,\n", 3),  # a second reference for one cell
    (GOOD + GOOD.replace("1,mocov2,voc_detection/AP", ",,"), 3),  # one paper cell both mapped and unmapped
    (GOOD.replace("1,mocov2,voc_detection/AP", ",,") * 2, 3),  # one paper cell unmapped twice
    ("1,mocov2,voc_detection/AP,54.7,somepaper,Table 1,MoCo v2,AP,\n", 2),
    ("1,,voc_detection/AP,54.7,houghcl,Table 1,MoCo v2,AP,\n", 2),
    ("14,mocov2,voc_detection/AP,54.7,houghcl,Table 1,MoCo v2,AP,\n", 2),
    ("1,mocov2,voc_detection,54.7,houghcl,Table 1,MoCo v2,AP,\n", 2),
    ("1,mocov2,voc_detection/AP,54.7,houghcl,Table 1,,AP,\n", 2),
    ("1,mocov2,voc_detection/AP,54.7,houghcl,Table 1,MoCo v2,AP\n", 2),
])
def test_malformed_file_names_the_line(tmp_path: Path, body: str, line: int) -> None:
    path = tmp_path / "values.csv"
    path.write_text(",".join(COLUMNS) + "\n" + body)
    with pytest.raises(UserError, match=rf"line {line}:"):
        load_reference(path)


def test_bad_header_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "values.csv"
    path.write_text("table,row,column,value\n" + GOOD)
    with pytest.raises(UserError, match="line 1: header"):
        load_reference(path)
    with pytest.raises(UserError, match="missing reference file"):
        load_reference(tmp_path / "absent.csv")
