"""Each paper's own tables (analysis/paper_reproduction.py): our cells beside the published values."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis.paper_reproduction import table_slug, write_reproduction
from core.errors import UserError
from core.io import write_json


def metrics(path: Path, value: float, seed: int) -> str:
    write_json(path, {"metrics": {"AP": value}, "provenance": {"config_hash": "abc", "commit": "c0ffee", "seed": seed}})
    return str(path)


def test_slugs_name_the_papers_tables() -> None:
    assert [table_slug(name) for name in ("Table 1", "Sec. 4.6 (text)", "Figure 3b (Sec. 4.5 text)")] == [
        "table1", "sec4.6", "figure3b"]


def test_cells_by_hand(tmp_path: Path) -> None:
    files = [metrics(tmp_path / f"s{seed}.json", value, seed) for seed, value in ((0, 50.0), (1, 52.0))]
    meta = tmp_path / "meta.json"
    write_json(meta, {"pretrain_data": {"name": "tinyimagenet"}, "iterations": 80,
                      "provenance": {"config_hash": "def", "commit": "c0ffee", "seed": 0}})
    cell = {"metric": "AP", "elsewhere": ""}
    cells = [
        {**cell, "paper_row": "Tiny / HoughCL", "paper_column": "AP", "value": 50.5, "like_for_like": True,
         "detail": "voc_detection/AP of houghcl-tin", "run": "houghcl-tin", "files": files, "meta": str(meta)},
        {**cell, "paper_row": "COCO / HoughCL", "paper_column": "AP", "value": 56.8, "like_for_like": False,
         "detail": "voc_detection/AP of houghcl-coco, but pretrained with epochs 2 (the paper's 800)",
         "run": "houghcl-coco", "files": files[:1], "meta": str(meta)},
        {**cell, "paper_row": "ImageNet / HoughCL", "paper_column": "AP", "value": 58.5, "like_for_like": False,
         "detail": "row 'houghcl_imagenet_houghcl' is not planned at this scale", "run": "", "files": [],
         "meta": None},
    ]
    out_csv, out_md = tmp_path / "table1.csv", tmp_path / "table1.md"
    frame = write_reproduction("houghcl", "Table 1", cells, "smoke", out_csv, out_md)
    # Mean and sample std of 50 and 52: 51 ± 1.414; ours - paper: 51 - 50.5.
    first = frame.iloc[0]
    assert (first["ours"], round(first["std"], 3), first["trials"], first["difference"]) == (51.0, 1.414, 2, 0.5)
    assert pd.isna(frame.iloc[2]["ours"]) and frame.iloc[2]["note"].endswith("not planned at this scale")
    md = out_md.read_text()
    assert "| Tiny / HoughCL     | 51.00 ± 1.41 (50.5, +0.50) |" in md
    assert "| COCO / HoughCL     | 50.00* (56.8, -6.80)       |" in md  # one trial: no std; `*`: unlike the paper
    assert "| ImageNet / HoughCL | (58.5)                     |" in md  # not measured: the paper's value alone
    assert "2 of 3 published values measured here, 1 like for like" in md
    assert "- COCO / HoughCL: voc_detection/AP of houghcl-coco, but pretrained with epochs 2 (the paper's 800)" in md
    assert len(pd.read_csv(out_csv)) == 3


def test_a_missing_result_names_the_rule(tmp_path: Path) -> None:
    cell = {"paper_row": "r", "paper_column": "AP", "value": 1.0, "like_for_like": True, "detail": "", "metric": "AP",
            "run": "x", "files": [str(tmp_path / "absent.json")], "meta": None, "elsewhere": ""}
    with pytest.raises(UserError, match=r"missing result .*absent.json: run `snakemake .*absent.json` first"):
        write_reproduction("houghcl", "Table 1", [cell], "smoke", tmp_path / "t.csv", tmp_path / "t.md")
