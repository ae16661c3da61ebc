"""The effective training config of one pretraining run.

The config's `pretrain` section holds the shared protocol (optimizer, schedule, image size, ...),
one section per method (its own hyper-parameters) and `method_overrides`: per method, the
protocol keys its paper sets differently (e.g. BYOL's LARS). A run's config is the shared
protocol with its method's overrides, then any per-run overrides (a sweep member's), merged in.
"""

from __future__ import annotations

import copy
from typing import Any

# Keys that describe the set of runs, not one run's training (`data` is the table rows' image set; a
# run gets its own as --data-name).
_PLAN_KEYS = ("methods", "method_overrides", "sweeps", "ablations", "image_sets", "data")
# The config sections each method reads. A run's config keeps only its own, so that editing one
# method's section does not rerun (or re-hash) the others' pretraining.
METHOD_SECTIONS = {
    "mocov2": ("moco",),
    "densecl": ("moco", "densecl"),
    "houghcl": ("moco", "densecl", "houghcl"),
    "byol": ("byol",),
    "lcloss": ("byol", "lcloss"),
    "pixpro": ("pixpro",),
    "index_contrast": ("index_contrast",),
    "soco": ("byol", "soco", "region_augment"),
    "d3ssl": ("moco", "d3ssl", "region_augment"),
    "hiergroup": ("hiergroup",),
}
# The prepare-stage store each region-level method reads per image (`prepare/<store>/<data>/index.json`).
METHOD_PREPARED = {"soco": "proposals", "d3ssl": "proposals", "hiergroup": "region_trees"}
# The dense embedding head a method exports beside its backbone (embedding.pth) and the dense evaluations read:
# hierarchical grouping's hypercolumn F (Sec. 4.2; DAVIS, segment search and Fig. 2 read it).
METHOD_EMBEDDING = {"hiergroup": "hypercolumn"}
_ALL_SECTIONS = frozenset(section for sections in METHOD_SECTIONS.values() for section in sections)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `update` merged in, nested dicts key by key."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def unknown_keys(update: dict[str, Any], base: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of `update` that `base` does not have (a typo would otherwise train silently)."""
    unknown = []
    for key, value in update.items():
        if key not in base:
            unknown.append(prefix + key)
        elif isinstance(value, dict) and isinstance(base[key], dict):
            unknown += unknown_keys(value, base[key], f"{prefix}{key}.")
    return unknown


def run_config(pretrain: dict[str, Any], method: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `pretrain` config one run of `method` trains with."""
    own = METHOD_SECTIONS[method]
    shared = {k: v for k, v in pretrain.items() if k not in _PLAN_KEYS and (k not in _ALL_SECTIONS or k in own)}
    cfg = deep_merge(shared, pretrain.get("method_overrides", {}).get(method, {}))
    return deep_merge(cfg, overrides or {})
