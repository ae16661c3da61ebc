"""Every command the README shows in a code block works: Snakemake ones as dry runs; `python -m cluster` ones
parsed by their own command line, `placeholders` also run (`gpu-plan`, minutes long, is test_gpu_plan's).

Snakemake commands are grouped by their config (scale, configfiles, --config values) and each group is
dry-run once with all its targets, with `--profile slurm` when a command of the group names it; the user's
`my_roots.yaml` is the paper-scale placeholders' roots.yaml. `make` targets must be rules of the Makefile.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from interpreter import PYTHON

from cluster.__main__ import build_parser as cluster_parser
from core.config import typed_config_values

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
# A README code line: indented by four spaces, starting with one of these programs.
_COMMAND = re.compile(r"^    ((?:snakemake|python -m cluster|make) .*|snakemake)$")


def readme_commands() -> list[list[str]]:
    """The README's commands as argument lists (comments dropped)."""
    commands = []
    for line in README.read_text().splitlines():
        if match := _COMMAND.match(line):
            commands.append(shlex.split(match.group(1), comments=True))
    return commands


Group = tuple[tuple[str, ...], tuple[str, ...]]  # (--config entries, --configfile paths)


def _snakemake_groups(commands: list[list[str]], roots: Path) -> dict[Group, tuple[set[str], bool]]:
    """{(config, configfiles): (targets, uses --profile)} of the Snakemake commands, parsed by Snakemake's CLI."""
    from snakemake.cli import get_argument_parser  # here: its plugins' import asks SLURM for its config

    groups: dict[Group, tuple[set[str], bool]] = {}
    parser = get_argument_parser()
    for argv in commands:
        args = parser.parse_args(argv[1:])
        assert args.profile in (None, ["slurm"]), argv
        files = tuple(str(roots) if Path(f).name in ("my_roots.yaml", "roots.yaml") else str(f)
                      for f in args.configfile or [])
        key = (tuple(args.config or []), files)
        targets, profile = groups.get(key, (set(), False))
        groups[key] = (targets | set(args.targets or ["all"]), profile or args.profile is not None)
    return groups


def test_every_readme_command_runs(tmp_path: Path) -> None:
    commands = readme_commands()
    programs = {argv[0] if argv[0] != "python" else " ".join(argv[:3]) for argv in commands}
    assert programs == {"snakemake", "python -m cluster", "make"}, programs  # the pattern still finds them all

    placeholders = tmp_path / "placeholders"
    for argv in (argv for argv in commands if argv[:3] == ["python", "-m", "cluster"]):
        args = cluster_parser().parse_args(argv[3:])  # every option exists
        if args.command == "placeholders":  # seconds: run it, into the test's folder
            args.out = placeholders
            args.func(args)
    roots = placeholders / "roots.yaml"
    assert roots.is_file()

    # `make -n` would still run recipe lines that call $(MAKE): the targets are checked in the Makefile's text
    # (CI runs `make test` and `make demo` themselves).
    rules = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))
    assert {target for argv in commands if argv[0] == "make" for target in argv[1:]} <= rules

    groups = _snakemake_groups([argv for argv in commands if argv[0] == "snakemake"], roots)
    configs = [" ".join(config) for config, _ in groups]
    assert "scale=paper" in configs and any(c.startswith("pretrain={") for c in configs)  # both kinds still shown
    for index, ((config, files), (targets, profile)) in enumerate(groups.items()):
        workdir = tmp_path / f"run{index}"
        workdir.mkdir()
        argv = [PYTHON, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
                "-n", *sorted(targets), *(["--profile", "slurm"] if profile else []),
                *(["--config", *config] if config else []), *(["--configfile", *files] if files else [])]
        result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{shlex.join(argv)}\n{result.stdout[-2000:]}{result.stderr[-3000:]}"


@pytest.mark.parametrize("value, expected", [("pretrain={batch_size: 8}", 8), ("pretrain={base_lr: 0.5}", 0.5)])
def test_nested_config_values_keep_their_yaml_types(value: str, expected: object) -> None:
    from snakemake.cli import parse_config

    parsed = parse_config([value])
    assert isinstance(next(iter(parsed["pretrain"].values())), str)  # Snakemake leaves it a string ...
    assert next(iter(typed_config_values(parsed)["pretrain"].values())) == expected  # ... read as YAML here
