"""Each paper's own tables: `results/papers/<paper>/<table>.{csv,md}` (`python -m analysis paper-reproduction`).

Rows and columns are the paper's, in its order (reference/paper_values.csv). A cell holds our value where
the configured scale plans one (`paper-coverage`: the run of reference/paper_rows.csv's row, scored by the
protocol or probe of the column): the mean ± std over the fine-tuning trials, the paper's value and the
difference. A cell whose pretraining differs from the paper's (image set, epochs, architecture) is
marked, and its note says how. A cell not planned at this scale stays empty, with the reason. Statistics
over the alignment/uniformity sweep and D3SSL's dataset statistics have their own tables (table 3,
table 2), which a note points to.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.paper_tables import _load, _metric, row_provenance
from analysis.reference import PAPERS
from analysis.tables import trials
from core.io import write_text


def table_slug(paper_table: str) -> str:
    """A paper table's file name: "Table 1" -> table1, "Sec. 4.6 (text)" -> sec4.6, "Figure 3b (...)" -> figure3b."""
    return re.sub(r"[^a-z0-9.]|(?<=[a-z])\.", "", paper_table.split(" (")[0].lower())


def paper_table_names(values: pd.DataFrame) -> dict[str, list[str]]:
    """{paper: its tables in transcription order} of the reference values."""
    return {paper: list(dict.fromkeys(group["paper_table"])) for paper, group in values.groupby("paper", sort=False)}


def _cell_frame(cells: list[dict[str, Any]], scale: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    out, provenance = [], {}
    for cell in cells:
        line = {key: cell[key] for key in ("paper_row", "paper_column")}
        line |= {"paper": cell["value"], "ours": None, "std": None, "trials": 0, "difference": None,
                 "like_for_like": cell["like_for_like"], "run": cell["run"], "note": cell["detail"], "scale": scale}
        if cell["files"]:
            results = [(path, _load(path)) for path in cell["files"]]
            mean, std = trials([_metric(result, cell["metric"], path) for path, result in results])
            line |= {"ours": mean, "std": std, "trials": len(results), "difference": mean - cell["value"]}
            if cell["paper_row"] not in provenance:
                provenance[cell["paper_row"]] = {"paper row": cell["paper_row"], "run": cell["run"],
                                                 **row_provenance(cell["meta"], [r for _, r in results])}
        out.append(line)
    return pd.DataFrame(out), pd.DataFrame(list(provenance.values()))


def _shown(line: pd.Series) -> str:
    paper = f"{line['paper']:g}"
    if pd.isna(line["ours"]):
        return f"({paper})"
    ours = f"{line['ours']:.2f}" + ("" if pd.isna(line["std"]) else f" ± {line['std']:.2f}")
    return f"{ours}{'' if line['like_for_like'] else '*'} ({paper}, {line['difference']:+.2f})"


def write_reproduction(paper: str, paper_table: str, cells: list[dict[str, Any]], scale: str, out_csv: str | Path,
                       out_md: str | Path) -> pd.DataFrame:
    """Write one paper table: long CSV (one published value a line) and Markdown (the paper's rows x columns)."""
    frame, provenance = _cell_frame(cells, scale)
    write_text(out_csv, frame.to_csv(index=False, float_format="%.4f"))
    wide = frame.assign(cell=frame.apply(_shown, axis=1)).pivot_table(
        index="paper_row", columns="paper_column", values="cell", aggfunc="first", sort=False)
    wide = wide.reindex(index=list(dict.fromkeys(frame["paper_row"])),
                        columns=list(dict.fromkeys(frame["paper_column"]))).fillna("")
    measured = frame.dropna(subset=["ours"])
    lines = [f"# {paper_table} of {PAPERS[paper]}", "", f"Scale: {scale}.",
             f"{len(measured)} of {len(frame)} published values measured here, "
             f"{int(measured['like_for_like'].sum())} like for like (same pretraining image set, epochs, "
             "architecture and protocol)."]
    if scale == "smoke":
        lines.append("Smoke numbers check that every stage runs (ResNet-18, tiny data, few iterations); they are "
                     "not comparable with the papers'.")
    lines += ["", wide.reset_index().rename(columns={"paper_row": ""}).to_markdown(index=False, disable_numparse=True),
              "", "Cells: ours (mean ± std over trials), then (paper, ours - paper); `*`: pretrained unlike the "
              "paper (see the notes); `(paper)` alone: not measured at this scale.", "", "## Notes", ""]
    notes = frame.groupby("paper_row", sort=False)["note"].agg(lambda n: "; ".join(dict.fromkeys(n)))
    lines += [f"- {row}: {note}" for row, note in notes.items()]
    elsewhere = sorted({cell["elsewhere"] for cell in cells} - {""})
    lines += [f"- Statistics of this table are in {target}." for target in elsewhere]
    if len(provenance):
        lines += ["", "## Provenance", "", provenance.to_markdown(index=False)]
    write_text(out_md, "\n".join(lines) + "\n")
    return frame


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("paper-reproduction", help="one of a paper's own tables with our cells beside its values")
    p.add_argument("--paper", choices=sorted(PAPERS), required=True)
    p.add_argument("--table", required=True, help="the paper's table as transcribed, e.g. 'Table 1'")
    p.add_argument("--spec-json", required=True, help="cells: paper row and column, value, run, metrics files, note")
    p.add_argument("--scale", required=True)
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.set_defaults(func=lambda a: write_reproduction(a.paper, a.table, json.loads(a.spec_json), a.scale, a.out_csv,
                                                     a.out_md))
