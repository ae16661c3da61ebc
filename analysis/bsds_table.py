"""The edge model and its region hierarchies on BSDS500 test, next to the published anchors.

Reads the BSDS benchmark's `eval_bdry.txt` (ODS threshold, R, P, F; OIS R, P, F; AP) of both maps
written by `python -m prepare bsds-eval`, and the seconds per image of `bsds-predict`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.tables import write_table
from core.errors import UserError
from core.io import read_json

# Published BSDS500 test numbers (anchors, not measured here).
REFERENCES = [
    {"method": "gPb-owt-ucm (Arbelaez et al., TPAMI 2011, Table 1)", "ODS": 0.726, "OIS": 0.757},
    {"method": "SE edges (Dollar & Zitnick, TPAMI 2014)", "ODS": 0.74, "OIS": np.nan},
]


def read_eval_bdry(path: str | Path) -> dict[str, float]:
    """ODS, OIS and AP from a BSDS `eval_bdry.txt`."""
    try:
        values = np.loadtxt(path, ndmin=1)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read BSDS result {path} ({err}); rerun `python -m prepare bsds-eval`.") from None
    if values.size < 8:
        raise UserError(f"{path} has {values.size} numbers, not the benchmark's 8; rerun `prepare bsds-eval`.")
    return {"ODS": float(values[3]), "OIS": float(values[6]), "AP": float(values[7])}


def write_bsds_table(edges_eval: str, ucm_eval: str, timing_json: str, out_csv: str, out_md: str) -> None:
    timing = read_json(timing_json)
    rows = [
        {"method": "SE edges + NMS (ours)", **read_eval_bdry(edges_eval), "s/img": timing["edges_seconds_per_image"]},
        {"method": "SE + OWT-UCM (ours)", **read_eval_bdry(ucm_eval),
         "s/img": timing["edges_seconds_per_image"] + timing["ucm_seconds_per_image"]},
    ]
    rows += [{**reference, "AP": np.nan, "s/img": np.nan} for reference in REFERENCES]
    notes = [
        f"Ours: {timing['images']} BSDS500 {timing['split']} images, edge model {timing['edge_model']}, "
        f"spectral weight {timing['spectral_weight']}; seconds per image on one CPU core.",
        "Boundary benchmark protocol of Arbelaez et al. (TPAMI 2011): 0.0075 x diagonal matching "
        "tolerance, all human ground truths; ODS/OIS are F-measures.",
    ]
    write_table(pd.DataFrame(rows), out_csv, out_md, "BSDS500 boundaries: structured edges and OWT-UCM", notes)
