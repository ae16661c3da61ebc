"""Config validation with one clear message per mistake (the schema dump is not a message)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config, validate

from core.errors import UserError

WORKFLOW_DIR = Path(__file__).resolve().parents[1] / "workflow"


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return f"config key {where}: {error.message}. Remove it or fix its spelling; allowed here: {allowed}."
    return f"config key {where}: {error.message}."


def validate_config(config: dict[str, Any], schema_path: str | Path) -> None:
    """Validate with snakemake.utils.validate; on failure, raise a WorkflowError naming each bad key.

    Nested values given on the command line (`--config key={...}`) arrive as strings: Snakemake
    reads them with YAML's BaseLoader. Use `--configfile` for nested overrides.
    """
    try:
        validate(config, str(schema_path))
    except WorkflowError:
        schema = yaml.safe_load(Path(schema_path).read_text())
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.path))
        lines = [_describe(e) for e in errors]
        raise WorkflowError(
            f"invalid configuration (schema: workflow/schemas/{Path(schema_path).name}):\n  " + "\n  ".join(lines)
            + "\nNested overrides belong in a --configfile: `--config key={...}` passes every value as a string."
        ) from None


def typed_config_values(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The nested values of Snakemake's --config entries with their scalars read as YAML (8 -> int, true ->
    bool); top-level scalars, which Snakemake types itself, are left out."""

    def typed(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {key: typed(item) for key, item in value.items()}
        if isinstance(value, list):
            return [typed(item) for item in value]
        if isinstance(value, str):
            try:
                return yaml.safe_load(value) if value else value
            except yaml.YAMLError:
                return value
        return value

    return {key: typed(value) for key, value in overrides.items() if isinstance(value, Mapping | list)}


def load_config(scale: str, configfiles: Sequence[str | Path] = ()) -> dict[str, Any]:
    """The config Snakemake would run with `--config scale=<scale> --configfile <files>`: the scale file, each
    configfile merged in (nested keys one by one, as Snakemake merges them), validated. For tools that plan
    without Snakemake (`python -m analysis paper-coverage`)."""
    base = WORKFLOW_DIR / "config" / f"{scale}.yaml"
    if not base.is_file():
        raise UserError(f"unknown scale '{scale}': use smoke or paper (workflow/config/<scale>.yaml).")
    config = yaml.safe_load(base.read_text())
    for path in configfiles:
        if not Path(path).is_file():
            raise UserError(f"configfile {path} not found; pass an existing YAML file.")
        update_config(config, yaml.safe_load(Path(path).read_text()) or {})
    try:
        validate_config(config, WORKFLOW_DIR / "schemas" / "config.schema.yaml")
    except WorkflowError as err:
        raise UserError(str(err)) from None
    return config
