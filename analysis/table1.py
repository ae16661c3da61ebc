"""Table 1: VOC transfer of random init and each pretraining method (HoughCL Table 1 layout,
plus the VOC FCN mIoU column of LC-loss/DenseCL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from analysis.tables import trials, write_table
from core.errors import UserError
from core.io import read_json
from core.provenance import config_hash

# How the papers' tables name each method (registry name -> label).
METHOD_LABELS = {"mocov2": "MoCo v2", "densecl": "DenseCL", "houghcl": "HoughCL", "byol": "BYOL",
                 "lcloss": "LC-loss", "pixpro": "PixPro", "index_contrast": "Dense index-wise contrast",
                 "soco": "SoCo", "d3ssl": "D3SSL", "hiergroup": "Hierarchical grouping"}

# (protocol, metric in metrics.json, column)
COLUMNS = [
    ("voc_detection", "AP", "VOC AP"),
    ("voc_detection", "AP50", "VOC AP50"),
    ("voc_detection", "AP75", "VOC AP75"),
    ("voc_segmentation", "mIoU", "VOC mIoU"),
]


def _load(path: str) -> dict[str, Any]:
    if not Path(path).is_file():
        raise UserError(f"missing result {path}: run `snakemake {path}` first.")
    return read_json(path)


def table1_row(spec: dict[str, Any]) -> dict[str, Any]:
    """One row: each metric's mean over the seeds (and its std when there are several), with provenance."""
    results = {protocol: [_load(p) for p in paths] for protocol, paths in spec["metrics"].items()}
    row: dict[str, Any] = {"method": METHOD_LABELS.get(spec["label"], spec["label"])}
    for protocol, metric, column in COLUMNS:
        row[column], std = trials([r["metrics"][metric] for r in results[protocol]])
        if std is not None:
            row[f"{column} std"] = std
    meta = _load(spec["meta"]) if spec["meta"] else None
    pretrained_here = meta is not None and "provenance" in meta  # imported checkpoints have no run of ours
    runs = [r for rs in results.values() for r in rs]
    hashes = [meta["provenance"]["config_hash"]] if pretrained_here else []
    hashes += [meta["sha256"]] if meta and not pretrained_here else []
    commits = {meta["provenance"]["commit"]} if pretrained_here else set()
    hashes += sorted({r["provenance"]["config_hash"] for r in runs})
    if meta is None:
        pretrain_data = "none"
    else:
        pretrain_data = meta["pretrain_data"]["name"] if pretrained_here else f"published ({meta['layout']})"
    row.update({
        "run": spec["run"],
        "pretrain_data": pretrain_data,
        "pretrain_iterations": meta["iterations"] if pretrained_here else 0,
        "pretrain_seed": meta["provenance"]["seed"] if pretrained_here else "",
        "finetune_seeds": " ".join(str(s) for s in sorted({r["provenance"]["seed"] for r in runs})),
        "finetune_iterations": " / ".join(str(r[0]["iterations"]) for r in results.values()),
        "config_hash": config_hash(hashes),
        "commit": " ".join(sorted({r["provenance"]["commit"] for r in runs} | commits)),
    })
    return row


def write_table1(spec: list[dict[str, Any]], scale: str, out_csv: str, out_md: str) -> None:
    frame = pd.DataFrame([table1_row(row) for row in spec])
    notes = [
        f"scale: {scale}." + (" Smoke numbers check that every stage runs; they are not comparable with the papers."
                              if scale == "smoke" else ""),
        "Detection: Faster R-CNN C4 (BN, extra res5 norm) trained on VOC trainval07+12, tested on test07; "
        "Detectron2's PascalVOCDetectionEvaluator (AP = mean over IoU 0.50:0.95).",
        "Segmentation: FCN (mmsegmentation) on VOC2012 train, mIoU on val.",
        "Metrics are means over the finetune seeds; per-seed files: results/finetune/<protocol>/<run>/s<seed>/.",
    ]
    write_table(frame, out_csv, out_md, "Table 1: VOC transfer", notes)
