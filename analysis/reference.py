"""The five papers' published numbers, for printing next to ours.

`analysis/reference/paper_values.csv` transcribes every result table of the papers in
`../shared/papers/` (one line per printed number). A line whose `table,row,column` is set says which
cell of our tables it is the reference for; the others (other pretraining data, variants we do not run)
are kept unmapped so the transcription stays complete. `note` records caveats: where a cell is reported
by two papers, the paper whose protocol the config cites is mapped and the other line says so.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pandas as pd

from core.errors import UserError

DEFAULT_PATH = Path(__file__).resolve().parent / "reference" / "paper_values.csv"
COLUMNS = ("table", "row", "column", "value", "paper", "paper_table", "paper_row", "paper_column", "note")
# Paper file stems of ../shared/papers/ and their titles (for table footnotes).
PAPERS = {
    "houghcl": "Lee et al.: HoughCL: Finding Better Positive Pairs in Dense Self-supervised Learning (ICML-W 2021)",
    "lc_loss": "Islam et al.: Self-supervised Learning with Local Contrastive Loss for Detection and Semantic "
               "Segmentation",
    "dense_alignment_uniformity": "Moon, Kim, Choi: Correlation between Alignment-Uniformity and Performance of "
                                  "Dense Contrastive Representations (BMVC 2022)",
    "d3ssl": "Qiu et al.: De-coupling and De-positioning Dense Self-supervised Learning",
    "hierarchical_grouping": "Zhang & Maire: Self-Supervised Visual Representation Learning from Hierarchical "
                             "Grouping (NeurIPS 2020)",
}
TABLES = range(1, 14)  # our tables 1-13
_KEY = ("table", "row", "column")


def _fail(path: Path, line: int, message: str) -> UserError:
    return UserError(f"{path} line {line}: {message}; fix that line of the reference file.")


def _check_line(path: Path, line: int, record: dict[str, str]) -> None:
    try:
        value = float(record["value"])
    except ValueError:
        raise _fail(path, line, f"value {record['value']!r} is not a number") from None
    if not math.isfinite(value):
        raise _fail(path, line, f"value {record['value']!r} is not finite")
    if record["paper"] not in PAPERS:
        raise _fail(path, line, f"paper {record['paper']!r} is not one of {', '.join(PAPERS)}")
    for field in ("paper_table", "paper_row", "paper_column"):
        if not record[field].strip():
            raise _fail(path, line, f"{field} is empty")
    mapped = [bool(record[field].strip()) for field in _KEY]
    if any(mapped) and not all(mapped):
        raise _fail(path, line, "table, row and column must be all set (a cell of ours) or all empty (unmapped)")
    if all(mapped):
        if not record["table"].isdigit() or int(record["table"]) not in TABLES:
            raise _fail(path, line, f"table {record['table']!r} is not one of our tables 1-13")
        # Tables 2 and 13 use bare stat names; every other column is <protocol>/<metric>.
        if record["table"] not in ("2", "13") and len([p for p in record["column"].split("/") if p]) != 2:
            raise _fail(path, line, f"column {record['column']!r} is not <protocol>/<metric>")


def load_reference(path: str | Path = DEFAULT_PATH) -> pd.DataFrame:
    """Read and validate the reference file: exact header, numeric values, known papers, one reference per cell
    of ours, and each printed number listed once (or once per table of ours it serves). Raises UserError naming
    the bad line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"missing reference file {path}; restore analysis/reference/paper_values.csv from git.")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(header) != COLUMNS:
            raise _fail(path, 1, f"header is {header}, expected {','.join(COLUMNS)}")
        records = []
        mapped_at: dict[tuple[str, ...], int] = {}
        paper_at: dict[tuple[str, ...], dict[str, int]] = {}
        for fields in reader:
            line = reader.line_num
            if not any(field.strip() for field in fields):
                continue
            if len(fields) != len(COLUMNS):
                raise _fail(path, line, f"{len(fields)} fields, expected {len(COLUMNS)}")
            record = dict(zip(COLUMNS, fields, strict=True))
            _check_line(path, line, record)
            if record["table"]:
                key = tuple(record[field] for field in _KEY)
                if key in mapped_at:
                    raise _fail(path, line, f"table {key[0]} cell ({key[1]}, {key[2]}) already has a reference on "
                                            f"line {mapped_at[key]}; keep one and unmap the other (say why in "
                                            "its note)")
                mapped_at[key] = line
            # A printed number may serve several of our tables (e.g. an ablation's default row), once each;
            # unmapped, it is listed once.
            cell = tuple(record[f] for f in ("paper", "paper_table", "paper_row", "paper_column"))
            seen = paper_at.setdefault(cell, {})
            clash = [t for t in seen if not t or not record["table"] or t == record["table"]]
            if clash:
                raise _fail(path, line, f"{cell[0]} {cell[1]} row {cell[2]!r} column {cell[3]!r} is already on "
                                        f"line {seen[clash[0]]}")
            seen[record["table"]] = line
            records.append(record)
    if not records:
        raise UserError(f"{path} holds no reference values; restore it from git.")
    frame = pd.DataFrame(records, columns=list(COLUMNS))
    frame["table"] = pd.to_numeric(frame["table"].where(frame["table"] != "")).astype("Int64")
    frame["value"] = frame["value"].astype(float)
    return frame


def reference_for(table: int, path: str | Path = DEFAULT_PATH) -> pd.DataFrame:
    """The mapped reference cells of one of our tables (row, column, value and their paper source)."""
    if table not in TABLES:
        raise UserError(f"table {table} is not one of our tables 1-13.")
    frame = load_reference(path)
    return frame[frame["table"] == table].drop(columns="table").reset_index(drop=True)
