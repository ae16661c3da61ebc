"""The throughput table (workflow/config/throughput.yaml): every number with its kind and source."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core.errors import UserError

THROUGHPUT = Path(__file__).resolve().parents[1] / "workflow" / "config" / "throughput.yaml"
KINDS = ("published", "measured", "estimate")


@dataclass(frozen=True)
class Entry:
    key: str  # dotted path in the table, e.g. pretrain.images_per_s_per_gpu.mocov2.resnet50
    value: float
    kind: str
    source: str


class Throughput:
    """Lookups by key path; a missing key is a UserError naming it, so the fix is one new entry."""

    def __init__(self, table: dict[str, Any], path: Path) -> None:
        self.table, self.path = table, path
        _check_entries(table, path, "")

    @classmethod
    def load(cls, path: Path = THROUGHPUT) -> Throughput:
        if not path.is_file():
            raise UserError(f"throughput table {path} not found; pass --throughput or restore "
                            "workflow/config/throughput.yaml.")
        return cls(yaml.safe_load(path.read_text()) or {}, path)

    def entry(self, *keys: str, needed_by: str) -> Entry:
        """The entry at `keys`; `needed_by` (the job) goes into the error message."""
        node: Any = self.table
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                dotted = ".".join(keys)
                raise UserError(f"{self.path.name}: no entry {dotted} (needed by {needed_by}). Add it to {self.path} "
                                "as {value: ..., kind: published|measured|estimate, source: ...}.")
            node = node[key]
        return Entry(".".join(keys), float(node["value"]), node["kind"], node["source"])


def _check_entries(node: Any, path: Path, where: str) -> None:
    """Every number sits in a {value, kind, source} entry: a number without its source is refused."""
    if isinstance(node, dict) and "value" in node:
        if node.get("kind") not in KINDS or not str(node.get("source", "")).strip():
            raise UserError(f"{path.name}: entry {where} needs `kind` (one of {', '.join(KINDS)}) and a `source`.")
    elif isinstance(node, dict):
        for key, child in node.items():
            _check_entries(child, path, f"{where}.{key}" if where else str(key))
    else:
        raise UserError(f"{path.name}: {where or '(top level)'} is not an entry; write numbers as "
                        "{value: ..., kind: published|measured|estimate, source: ...}.")
