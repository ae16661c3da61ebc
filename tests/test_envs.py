"""The cluster environments (envs/*.yml) pin the same versions as the local install."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s#;]+)")


def pins(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        match = PIN.match(line.strip())
        if match:
            found[match.group(1).lower().replace("_", "-")] = match.group(2)
    return found


def env_pins(path: Path) -> dict[str, str]:
    deps = yaml.safe_load(path.read_text())["dependencies"]
    return pins([line for dep in deps if isinstance(dep, dict) for line in dep["pip"]])


def test_every_env_pin_matches_the_local_lock() -> None:
    lock = pins((REPO / "requirements" / "lock.txt").read_text().splitlines())
    for env in sorted((REPO / "envs").glob("*.yml")):
        for name, version in env_pins(env).items():
            assert lock.get(name) == version, f"{env.name}: {name}=={version}, requirements/lock.txt: {lock.get(name)}"


def test_direct_requirements_are_locked_and_in_the_pretrain_env() -> None:
    lock = pins((REPO / "requirements" / "lock.txt").read_text().splitlines())
    direct = pins((REPO / "requirements" / "direct.txt").read_text().splitlines())
    for name, version in direct.items():
        assert lock.get(name) == version, f"requirements/direct.txt {name}=={version} vs lock {lock.get(name)}"
    pretrain = env_pins(REPO / "envs" / "pretrain.yml")
    mm = {"mmengine", "mmsegmentation", "ftfy"}
    assert {k: v for k, v in direct.items() if k not in mm} == pretrain
    mmseg_env = env_pins(REPO / "envs" / "mmseg.yml")
    assert {k: v for k, v in direct.items() if k in mm} == {k: v for k, v in mmseg_env.items() if k in mm}
