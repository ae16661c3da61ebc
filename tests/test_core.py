"""core: atomic writes, image errors, config messages, provenance."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from core.errors import UserError
from core.images import load_rgb
from core.io import atomic_path, read_json, write_json
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


def test_corrupt_and_missing_images_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    Image.new("RGB", (8, 8)).save(bad)
    bad.write_bytes(bad.read_bytes()[:40])  # truncated JPEG
    with pytest.raises(UserError, match=f"corrupt image: {bad}.*Replace or delete this file"):
        load_rgb(bad)
    with pytest.raises(UserError, match="image not found: .*nothere.jpg"):
        load_rgb(tmp_path / "nothere.jpg")


def test_config_hash_ignores_key_order() -> None:
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_reduced_decode_keeps_the_requested_side(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    Image.new("RGB", (640, 480), (200, 30, 30)).save(path)
    assert load_rgb(path).size == (640, 480)
    assert load_rgb(path, min_side=192).size == (320, 240)  # DCT scale 1/2: both sides still >= 192
    assert load_rgb(path, min_side=100).size == (160, 120)

