"""The runs a config trains and scores: table rows, sweep members, ablation variants, experiments, imports.

`build_plan(config)` reads a validated config (scale file merged with the user's) and returns a frozen
`Plan`: every pretraining run with what it trains, the table rows, and which runs each transfer protocol
or analysis probe scores. The Snakemake workflow turns it into jobs (workflow/rules/common.smk);
`python -m analysis paper-coverage` reads it without Snakemake.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import UserError
from plan.experiments import RunSpec, experiment_runs, run_id
from pretrain.runs import deep_merge, run_config, unknown_keys


def _number(x: float) -> str:
    return f"{x:g}"


def _table_run(pretrain: Mapping[str, Any], method: str) -> tuple[str, RunSpec]:
    cfg = run_config(pretrain, method)
    return run_id(method, pretrain["data"], cfg, pretrain["seed"]), {"method": method, "data": pretrain["data"],
                                                                     "cfg": cfg}


def sweep_members(pretrain: Mapping[str, Any]) -> dict[str, RunSpec]:
    """The alignment/uniformity grid (dense_alignment_uniformity.md Sec. 4.1): per image set and scheme,
    one model per InfoNCE temperature and one per (w_a, w_u) pair."""
    sweep = pretrain["sweeps"].get("alignment_uniformity")
    members: dict[str, RunSpec] = {}
    for data, grid in (sweep["datasets"] if sweep else {}).items():
        if "heldout" not in pretrain["image_sets"].get(data, {"heldout": None}):
            raise UserError(f"pretrain.sweeps.alignment_uniformity.datasets.{data}: the sweep measures L_a and L_u on "
                            f"its image set's held-out split; add pretrain.image_sets.{data}.heldout.")
        for scheme in sweep["schemes"]:
            settings = [(f"t{_number(t)}", {"loss": "infonce", "temperature": t}) for t in grid["temperatures"]]
            settings += [(f"a{_number(wa)}u{_number(wu)}", {"loss": "align_uniform", "align_weight": wa,
                                                           "uniform_weight": wu}) for wa, wu in grid["weights"]]
            for tag, objective in settings:
                member = {"scheme": scheme, **objective}
                cfg = run_config(pretrain, sweep["method"], deep_merge(grid["overrides"], {sweep["method"]: member}))
                run = run_id(f"{sweep['method']}_{scheme}_{tag}", data, cfg, pretrain["seed"])
                members[run] = {"method": sweep["method"], "data": data, "member": member, "cfg": cfg}
    return members


def ablation_plan(pretrain: Mapping[str, Any]) -> tuple[dict[str, tuple[str, str]], dict[str, RunSpec]]:
    """Table 12's rows: per method, one per variant of its settings (pretrain.ablations), keyed
    `<method>/<variant>` like the papers' reference rows, on the group's `data` (default pretrain.data).
    A variant whose image set and settings equal the method's own table run reuses it; every other
    variant is a pretraining run `<method>_<variant>-...`.
    Returns ({key: (method, run)}, {run: spec} of the new runs)."""
    rows: dict[str, tuple[str, str]] = {}
    runs: dict[str, RunSpec] = {}
    for method, group in pretrain["ablations"].items():
        if method not in pretrain["methods"]:
            raise UserError(f"pretrain.ablations.{method}: '{method}' is not in pretrain.methods; its variants are "
                            "compared with its table run, so add it there.")
        own, own_spec = _table_run(pretrain, method)
        data = group.get("data", pretrain["data"])
        if data not in pretrain["image_sets"]:
            raise UserError(f"pretrain.ablations.{method}.data: unknown image set '{data}'; define it under "
                            f"pretrain.image_sets (defined: {', '.join(pretrain['image_sets'])}).")
        for variant, settings in group["variants"].items():
            unknown = unknown_keys(settings, own_spec["cfg"])
            if unknown:
                raise UserError(f"pretrain.ablations.{method}.variants.{variant}: unknown key(s) {', '.join(unknown)}; "
                                f"a variant changes keys of {method}'s run config (pretrain and its sections).")
            cfg = run_config(pretrain, method, deep_merge(group["overrides"], settings))
            if (data, cfg) == (own_spec["data"], own_spec["cfg"]):
                rows[f"{method}/{variant}"] = (method, own)
                continue
            run = run_id(f"{method}_{variant}", data, cfg, pretrain["seed"])
            runs[run] = {"method": method, "data": data, "cfg": cfg}
            rows[f"{method}/{variant}"] = (method, run)
    return rows, runs


@dataclass(frozen=True)
class Plan:
    """What one config trains and scores. Run ids: plan.experiments.run_id; random init is `random-<arch>`."""

    random_run: str
    table_runs: dict[str, RunSpec]  # one per pretrain.methods entry, on pretrain.data
    sweep_runs: dict[str, RunSpec]  # the alignment/uniformity grid (each spec has its "member")
    ablation_rows: dict[str, tuple[str, str]]  # table 12: "<method>/<variant>" -> (method, run)
    ablation_runs: dict[str, RunSpec]
    experiment_run_of: dict[str, str]  # pretrain.experiments key -> run
    experiment_runs: dict[str, RunSpec]  # the experiments' runs no other entry trains
    imported_runs: dict[str, dict[str, Any]]  # "imported-<label>" -> finetune.imported.<label> + its label
    sources: dict[str, tuple[str, dict[str, Any]]]  # protocol or probe -> (its config key, its spec)
    pretrain: dict[str, Any]

    @property
    def pretrain_runs(self) -> dict[str, RunSpec]:
        return {**self.table_runs, **self.sweep_runs, **self.ablation_runs, **self.experiment_runs}

    @property
    def table_rows(self) -> list[tuple[str, str]]:
        """(label, run) in config order: random init, one per pretraining method, each imported checkpoint."""
        return ([("random init", self.random_run)] + [(spec["method"], run) for run, spec in self.table_runs.items()]
                + [(spec["label"], run) for run, spec in self.imported_runs.items()])

    @property
    def row_labels(self) -> dict[str, str]:
        """The labels a `rows` entry may name: random, a pretraining method, an imported label."""
        return {"random": self.random_run, **{label: run for label, run in self.table_rows[1:]}}

    def runs_of(self, rows: str | list[str], where: str) -> list[str]:
        """The runs named by a `rows` entry: `all` (the table rows), `sweep` (the alignment/uniformity
        sweep's models) or a list of row labels; `where` is the config key, for the error."""
        if rows == "all":
            return [run for _, run in self.table_rows]
        if rows == "sweep":
            return list(self.sweep_runs)
        unknown = [label for label in rows if label not in self.row_labels]
        if unknown:
            raise UserError(f"{where}.rows: unknown rows {unknown}; use `all`, `sweep` or labels among "
                            f"{', '.join(self.row_labels)}.")
        return [self.row_labels[label] for label in rows]

    def source_rows(self, source: str) -> list[str]:
        """The table rows a protocol or probe is configured for (its `rows`), without other runs."""
        where, spec = self.sources[source]
        return self.runs_of(spec["rows"], where)

    def extra_runs_of(self, source: str) -> list[str]:
        """The runs beside the table rows that `source` scores: table 12's, by their method's `evaluate`,
        then the experiments', by theirs."""
        ablations = [run for method, run in self.ablation_rows.values()
                     if source in self.pretrain["ablations"][method]["evaluate"]]
        experiments = self.pretrain.get("experiments", {})
        return ablations + [run for key, run in self.experiment_run_of.items()
                            if source in experiments[key]["evaluate"]]

    def scored_runs(self, source: str) -> list[str]:
        """Every run a protocol or probe scores: its rows, then the other runs it evaluates."""
        return list(dict.fromkeys(self.source_rows(source) + self.extra_runs_of(source)))


def build_plan(config: Mapping[str, Any]) -> Plan:
    """The plan of a validated config; raises UserError naming the config key of a bad entry."""
    pretrain = config["pretrain"]
    table_runs = dict(_table_run(pretrain, method) for method in pretrain["methods"])
    sweep_runs = sweep_members(pretrain)
    ablation_rows, ablation_runs = ablation_plan(pretrain)
    run_of, experiments = experiment_runs(pretrain, {**table_runs, **sweep_runs, **ablation_runs})
    sources = {name: (f"finetune.protocols.{name}", spec) for name, spec in config["finetune"]["protocols"].items()}
    sources.update({name: (f"analysis.probes.{name}", spec) for name, spec in config["analysis"]["probes"].items()})
    evaluators = {f"pretrain.ablations.{m}": group["evaluate"] for m, group in pretrain["ablations"].items()}
    evaluators.update({f"pretrain.experiments.{key}": spec["evaluate"]
                       for key, spec in pretrain.get("experiments", {}).items()})
    for where, names in evaluators.items():
        for name in names:
            if name not in sources:
                raise UserError(f"{where}.evaluate: '{name}' is neither a protocol (finetune.protocols) nor a "
                                "probe (analysis.probes) of this config.")
    imported = {f"imported-{label}": {"label": label, **spec} for label, spec in config["finetune"]["imported"].items()}
    plan = Plan(random_run=f"random-{pretrain['arch']}", table_runs=table_runs, sweep_runs=sweep_runs,
                ablation_rows=ablation_rows, ablation_runs=ablation_runs, experiment_run_of=run_of,
                experiment_runs=experiments, imported_runs=imported, sources=sources, pretrain=dict(pretrain))
    for source in sources:
        plan.source_rows(source)  # an unknown row label fails here, before any job is planned
    return plan
