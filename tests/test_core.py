"""core: atomic writes, image errors, config messages, provenance."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from core.architectures import PRETRAIN_ARCHS, RESNET_LAYOUTS, RESNETS
from core.errors import UserError, run_cli
from core.images import load_rgb
from core.io import atomic_path, read_json, save_torch, write_json
from core.provenance import config_hash


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_and_is_world_readable(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    write_json(target, {"b": 1, "a": [1, 2]})
    write_json(target, {"a": 2})
    assert read_json(target) == {"a": 2}
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_save_torch_gives_the_same_bytes_for_the_same_object(tmp_path: Path) -> None:
    """The archive's records are named "archive/...", not after the temporary file of the atomic write."""
    import torch

    state = {"weight": torch.arange(6.0).view(2, 3), "step": torch.tensor(4)}
    save_torch(state, tmp_path / "a.pth")
    save_torch(state, tmp_path / "sub" / "b.pth")
    assert (tmp_path / "a.pth").read_bytes() == (tmp_path / "sub" / "b.pth").read_bytes()
    assert b"archive/data.pkl" in (tmp_path / "a.pth").read_bytes()
    loaded = torch.load(tmp_path / "a.pth", weights_only=True)
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.pth", "b.pth", "sub"]  # no temporaries left


def test_corrupt_and_missing_images_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    Image.new("RGB", (8, 8)).save(bad)
    bad.write_bytes(bad.read_bytes()[:40])  # truncated JPEG
    with pytest.raises(UserError, match=f"corrupt image: {bad}.*Replace or delete this file"):
        load_rgb(bad)
    with pytest.raises(UserError, match="image not found: .*nothere.jpg"):
        load_rgb(tmp_path / "nothere.jpg")
    # Through a link (the prepare stage links datasets into results/prepare/): the real file is named.
    (tmp_path / "prepared").mkdir()
    (tmp_path / "prepared" / "link.jpg").symlink_to(bad)
    with pytest.raises(UserError, match=rf"corrupt image: {bad} \(linked as {tmp_path}/prepared/link.jpg\)"):
        load_rgb(tmp_path / "prepared" / "link.jpg")


def test_a_user_error_under_a_progress_bar_starts_its_own_line(capsys: pytest.CaptureFixture[str]) -> None:
    from tqdm import tqdm

    def fails_mid_bar(_argv: list[str] | None) -> None:
        for _ in tqdm(range(3), desc="images"):
            raise UserError("corrupt image: x.jpg")

    with pytest.raises(SystemExit):
        run_cli(fails_mid_bar, [])
    assert "\nerror: corrupt image: x.jpg\n" in capsys.readouterr().err


def test_config_hash_ignores_key_order() -> None:
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_reduced_decode_keeps_the_requested_side(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    Image.new("RGB", (640, 480), (200, 30, 30)).save(path)
    assert load_rgb(path).size == (640, 480)
    assert load_rgb(path, min_side=192).size == (320, 240)  # DCT scale 1/2: both sides still >= 192
    assert load_rgb(path, min_side=100).size == (160, 120)



def _arch_enums(node: object, path: str = "") -> dict[str, list[str]]:
    """Every `arch: {enum: [...]}` of the config schema, by its path."""
    found = {}
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "arch" and isinstance(value, dict) and "enum" in value:
                found[f"{path}/arch"] = value["enum"]
            else:
                found |= _arch_enums(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found |= _arch_enums(value, f"{path}/{index}")
    return found


def test_schema_arch_enums_are_the_architectures_the_code_builds() -> None:
    """The schema names the architectures core/architectures.py lists: what pretraining builds, and for
    published checkpoints every torchvision ResNet whose layout the importers recognise."""
    import torchvision
    import yaml

    schema = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml").read_text())
    enums = _arch_enums(schema)
    imported = {path: enum for path, enum in enums.items() if "/imported/" in path}
    assert len(imported) == 1 and list(imported.values()) == [list(RESNETS)]
    assert len(enums) > 1 and all(enum == list(PRETRAIN_ARCHS) for path, enum in enums.items() if path not in imported)
    assert set(PRETRAIN_ARCHS) <= set(RESNETS)
    for arch, (layout, bottleneck) in zip(RESNETS, RESNET_LAYOUTS, strict=True):
        net = getattr(torchvision.models, arch)()
        assert tuple(len(getattr(net, f"layer{stage}")) for stage in range(1, 5)) == layout
        assert hasattr(net.layer1[0], "conv3") == bottleneck
