"""The coupling-rate / mean-cosine-similarity probe (analysis/coupling.py, D3SSL Sec. 3.1-3.2)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from analysis import coupling
from analysis.coupling import (
    STRIDES,
    CouplingProtocol,
    ResNetStages,
    coupling_rate,
    cut_out,
    eligible_objects,
    grid3x3,
    grid_similarity,
    mean_cosine_similarity,
    pair_coupling,
    side_by_side,
)
from core.errors import UserError
from finetune.common import frozen_resnet

SMOKE = {"split": "val2017", "pairs": 2, "objects": 2, "object_size": 32, "min_area": 20, "gap": 32, "roi_size": 7}


def _blob(generator: torch.Generator, h: int, w: int) -> torch.Tensor:
    """A random-texture disc on black, [3, h, w] in [0, 1]."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    return torch.rand(3, h, w, generator=generator) * (xx**2 + yy**2 <= 1)


class Pointwise:
    """A stage map = a fixed pixel-wise function (x, x^2) of the image subsampled by the stage's stride: no
    spatial mixing at all (the subsampling keeps pixel (s i, s j), where a ResNet centres cell (i, j))."""

    blur = 0  # box-filter side applied before each subsampling (0: none)

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        maps, x = [], images
        for step in (4, 2, 2, 2):
            if self.blur:
                x = nn.functional.avg_pool2d(x, self.blur, stride=1, padding=self.blur // 2, count_include_pad=False)
            x = x[:, :, ::step, ::step]
            maps.append(torch.cat([x, x * x], dim=1) + 0.01)  # + 0.01: no all-zero RoI feature
        return maps


class Blurred(Pointwise):
    """The same with a 5 x 5 box blur before each subsampling: neighbours mix, so coupling must show."""

    blur = 5


def _global(scale: float) -> coupling.StageFn:
    """Every cell of every stage = (1, scale * sum of the image): full mixing, hand-computable."""
    def stages(images: torch.Tensor) -> list[torch.Tensor]:
        total = images.sum(dim=(1, 2, 3)) * scale
        maps = []
        for stride in STRIDES:
            h, w = math.ceil(images.shape[2] / stride), math.ceil(images.shape[3] / stride)
            maps.append(torch.stack([torch.ones_like(total), total], 1)[:, :, None, None].expand(-1, -1, h, w))
        return maps
    return stages


def _coordinates(images: torch.Tensor) -> list[torch.Tensor]:
    """Every cell = (1, its column, its row) in that stage's cells: RoIAlign of it is (1, box centre)."""
    maps = []
    for stride in STRIDES:
        h, w = math.ceil(images.shape[2] / stride), math.ceil(images.shape[3] / stride)
        rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                    indexing="ij")
        maps.append(torch.stack([torch.ones(h, w), cols, rows])[None].expand(images.shape[0], -1, -1, -1))
    return maps


# ------------------------------------------------------------------------------------------- formulas


def test_coupling_rate_and_mcs_by_hand() -> None:
    a1, a2, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    # cos(A1, B) = 1, cos(A2, B) = 1 / sqrt(2)
    assert coupling_rate(a1, a2, b).item() == pytest.approx(math.sqrt(2))
    assert coupling_rate(a2, a1, b).item() == pytest.approx(1 / math.sqrt(2))
    cells = torch.tensor([[[1.0, 0.0]] * 4 + [[1.0, 0.0]] + [[0.0, 1.0]] * 2 + [[-1.0, 0.0]] * 2])
    # outer cells: cos 1, 1, 1, 1, 0, 0, -1, -1 -> mean 2 / 8; the centre (index 4) is left out
    assert mean_cosine_similarity(cells).item() == pytest.approx(0.25)
    with pytest.raises(UserError, match="orthogonal"):
        coupling_rate(a1, torch.tensor([[0.0, 1.0]]), b)


def test_cr_through_the_pipeline_by_hand() -> None:
    # A: 2 x 2 pixels of 0.5 (sum 6), B: 4 x 4 of 0.25 (sum 12); features (1, S / 10) of the image sum S.
    a, b = torch.full((3, 2, 2), 0.5), torch.full((3, 4, 4), 0.25)
    a1, a2 = (1.0, 1.8), (1.0, 0.6)  # image 1 holds A and B (S = 18), image 2 A alone (S = 6); B = A1
    cos = (a1[0] * a2[0] + a1[1] * a2[1]) / (math.hypot(*a1) * math.hypot(*a2))
    cr = pair_coupling(_global(0.1), [(a, b)], 32, 0, 7)
    assert cr.shape == (1, 4)
    torch.testing.assert_close(cr, torch.full((1, 4), 1 / cos), rtol=1e-5, atol=1e-6)


def test_mcs_through_the_pipeline_by_hand() -> None:
    # A 32 x 32 object centred in 64-pixel cells: box centres (32 + 64 c, 32 + 64 r); an aligned RoIAlign of a
    # linear map gives (box centre / stride - 0.5), no sample falls outside the map.
    obj = torch.ones(3, 32, 32)
    mcs = grid_similarity(_coordinates, [obj], 64, 7)
    for stage, stride in enumerate(STRIDES):
        feats = np.array([[1.0, (32 + 64 * c) / stride - 0.5, (32 + 64 * r) / stride - 0.5]
                          for r in range(3) for c in range(3)])
        centre = feats[4]
        cos = [f @ centre / (np.linalg.norm(f) * np.linalg.norm(centre)) for i, f in enumerate(feats) if i != 4]
        assert mcs[0, stage].item() == pytest.approx(np.mean(cos), rel=1e-5), stride


# -------------------------------------------------------------------------------------------- networks


def test_no_spatial_mixing_gives_cr_and_mcs_one() -> None:
    g = torch.Generator().manual_seed(1)
    red, blue = torch.tensor([1.0, 0.2, 0.2])[:, None, None], torch.tensor([0.2, 0.2, 1.0])[:, None, None]
    # Textured rectangles of two colours that fill their boxes (A of the first pair ends 8 px before its cell).
    pairs = [(torch.rand(3, 64, 48, generator=g) * red, torch.rand(3, 40, 64, generator=g) * blue),
             (torch.rand(3, 64, 64, generator=g) * blue, torch.rand(3, 64, 30, generator=g) * red)]
    cr = pair_coupling(Pointwise(), pairs, 64, 32, 7)
    torch.testing.assert_close(cr, torch.ones_like(cr), atol=1e-5, rtol=0)
    # Without a gap the aligned RoIAlign of A reaches half a C5 cell past A's box, i.e. B's first column.
    touching = pair_coupling(Pointwise(), pairs, 64, 0, 7)
    assert touching[0, 3] > 1 + 1e-3 and torch.allclose(touching[:, :3], torch.ones(2, 3), atol=1e-5)
    # A network that mixes neighbours: B couples into A, more at the coarser stages (the paper's Fig. 3b trend).
    blurred = pair_coupling(Blurred(), pairs, 64, 0, 7)
    assert (blurred[:, 3] > blurred[:, 2]).all() and (blurred[:, 2] > 1 + 1e-3).all(), blurred
    # MCS: objects >= 16 pixels (half the C5 stride) inside their cells, so that no RoIAlign sample of an outer
    # cell falls beyond the map's edge (RoIAlign clamps those to the edge cell: up to 2.4e-4 below 1 with
    # full-cell objects).
    objects = [_blob(g, 32, 32), _blob(g, 20, 32), torch.rand(3, 32, 24, generator=g)]
    mcs = grid_similarity(Pointwise(), objects, 64, 7)
    torch.testing.assert_close(mcs, torch.ones_like(mcs), atol=1e-5, rtol=0)


def test_random_resnet18_mcs_near_one() -> None:
    # D3SSL Sec. 3.2: randomly initialised networks give MCS "close to 1 in all the layers". Measured at
    # object_size 128 (canvas 384): min over torchvision seeds 0-2 and 3 disc shapes was 0.9995 / 0.9986 /
    # 0.9925 / 0.9713 at C2..C5 (C5 falls with smaller objects: 0.91 at 64, 0.82 at 32, as the zero-padded
    # border covers more of an outer cell). 0.95 leaves room for other seeds and shapes.
    g = torch.Generator().manual_seed(0)
    stages = ResNetStages(frozen_resnet("resnet18", None, seed=0))
    mcs = grid_similarity(stages, [_blob(g, 128, 96)], 128, 7)
    assert mcs.min().item() > 0.95
    assert (mcs <= 1 + 1e-6).all()


# ------------------------------------------------------------------------------------------- canvases


def test_side_by_side_pixel_by_pixel() -> None:
    a = torch.arange(1, 3 * 4 * 6 + 1, dtype=torch.float32).view(3, 4, 6) / 100
    b = torch.arange(1, 3 * 8 * 2 + 1, dtype=torch.float32).view(3, 8, 2) / 100
    image1, image2, box_a, box_b = side_by_side(a, b, size=8, gap=3)
    assert image1.shape == image2.shape == (3, 8, 19)
    expected = torch.zeros(3, 8, 19)
    expected[:, 2:6, 1:7] = a  # centred in the cell [0, 8): offsets (8 - 4) // 2 = 2 rows, (8 - 6) // 2 = 1 col
    assert torch.equal(image2, expected)
    expected[:, 0:8, 14:16] = b  # B's cell starts at 8 + 3 = 11, offset (8 - 2) // 2 = 3
    assert torch.equal(image1, expected)
    assert box_a == [1, 2, 7, 6] and box_b == [14, 0, 16, 8]


def test_grid3x3_pixel_by_pixel() -> None:
    obj = torch.rand(3, 2, 3, generator=torch.Generator().manual_seed(0))
    canvas, boxes = grid3x3(obj, size=4)
    assert canvas.shape == (3, 12, 12)
    expected = torch.zeros(3, 12, 12)
    for row in range(3):
        for col in range(3):
            expected[:, 4 * row + 1:4 * row + 3, 4 * col:4 * col + 3] = obj  # offsets (4-2)//2 = 1, (4-3)//2 = 0
    assert torch.equal(canvas, expected)
    assert boxes[4] == [4, 5, 7, 7] and boxes[0] == [0, 1, 3, 3] and boxes[8] == [8, 9, 11, 11]


def test_cut_out_masks_crops_and_rescales() -> None:
    pixels = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    mask = np.zeros((6, 8), bool)
    mask[2:4, 3:6] = True
    mask[3, 3] = False
    # bbox x 2.5 -> column 2, x + w = 6.2 -> up to column 7 (exclusive); rows 1..4
    out = cut_out(pixels, mask, [2.5, 1.0, 3.7, 3.0], size=5)
    expected = np.where(mask[1:4, 2:7, None], pixels[1:4, 2:7], 0)
    assert out.shape == (3, 3, 5)  # longer side already 5: no resampling
    assert torch.equal(out, torch.from_numpy(expected).permute(2, 0, 1).float() / 255)
    assert cut_out(pixels, mask, [2.5, 1.0, 3.7, 3.0], size=10).shape == (3, 6, 10)


# ------------------------------------------------------------------------------------- protocol + data


def test_protocol_key_and_value_errors() -> None:
    assert CouplingProtocol.from_json(json.dumps(SMOKE)).pairs == 2
    with pytest.raises(UserError, match="unknown protocol keys"):
        CouplingProtocol.from_json(json.dumps(SMOKE | {"layers": 4}))
    with pytest.raises(UserError, match=r"lacks \['gap'\]"):
        CouplingProtocol.from_json(json.dumps({k: v for k, v in SMOKE.items() if k != "gap"}))
    with pytest.raises(UserError, match="multiple of 32"):
        CouplingProtocol.from_json(json.dumps(SMOKE | {"object_size": 48}))
    for key, value in (("pairs", 0), ("objects", True), ("roi_size", 1.5), ("gap", -1), ("min_area", -1),
                       ("split", "")):
        with pytest.raises(UserError, match=f"protocol {key}"):
            CouplingProtocol(**SMOKE | {key: value})


def _square(x: float, y: float, side: float) -> list[list[float]]:
    return [[x, y, x + side, y, x + side, y + side, x, y + side]]


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    """2 PNG images (40 x 48) with 4 eligible objects of 3 categories, one crowd and one tiny object."""
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    rng = np.random.default_rng(0)
    images, anns = [], []
    for image_id in (1, 2):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / "val2017" / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": 40, "width": 48})
    for ann_id, (image_id, cat, x, y, side, crowd) in enumerate(
            [(1, 1, 2, 2, 16, 0), (1, 2, 24, 10, 20, 0), (2, 1, 5, 5, 12, 0), (2, 3, 20, 4, 25, 0),
             (2, 2, 0, 0, 30, 1), (1, 3, 40, 30, 3, 0)], start=10):
        anns.append({"id": ann_id, "image_id": image_id, "category_id": cat, "iscrowd": crowd,
                     "segmentation": _square(x, y, side), "area": float(side * side), "bbox": [x, y, side, side]})
    (root / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [{"id": i} for i in (1, 2, 3)]}))
    return root


def test_eligible_objects_and_unsatisfiable_protocols(coco: Path, tmp_path: Path) -> None:
    found = eligible_objects(coco, "val2017", 20)
    assert [o.ann["id"] for o in found] == [10, 11, 12, 13]  # crowd (14) and 9-pixel (15) left out
    kwargs = {"data_root": coco, "backbone": None, "arch": "resnet18", "seed": 0, "threads": 1}
    with pytest.raises(UserError, match="needs 5 eligible objects from at least 2 categories"):
        coupling.run(protocol=CouplingProtocol(**SMOKE | {"pairs": 5}), out=tmp_path / "a", **kwargs)
    with pytest.raises(UserError, match="from 1"):  # only the 25-pixel-square object of category 3 is left
        coupling.run(protocol=CouplingProtocol(**SMOKE | {"pairs": 1, "min_area": 600}), out=tmp_path / "b",
                     **kwargs)
    with pytest.raises(UserError, match="needs 9 eligible objects"):
        coupling.run(protocol=CouplingProtocol(**SMOKE | {"objects": 9}), out=tmp_path / "c", **kwargs)
    with pytest.raises(UserError, match="instances_train2017.json"):
        coupling.run(protocol=CouplingProtocol(**SMOKE | {"split": "train2017"}), out=tmp_path / "d", **kwargs)


def _cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    coupling.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


def test_probe_end_to_end_deterministic_and_resumable(coco: Path, tmp_path: Path) -> None:
    def probe(out: Path, protocol: dict) -> dict:
        _cli(["coupling", "--data-root", str(coco), "--backbone", "none", "--arch", "resnet18",
              "--protocol-json", json.dumps(protocol), "--seed", "3", "--out", str(out)])
        return json.loads((out / "metrics.json").read_text())

    first = probe(tmp_path / "one", SMOKE)
    names = {f"{m}_C{i}" for m in ("CR", "MCS") for i in range(2, 6)}
    assert set(first["metrics"]) == names | {"pairs", "objects", "eligible_objects"}
    assert first["probe"] == "coupling" and first["weights"] is None
    assert (first["metrics"]["pairs"], first["metrics"]["objects"], first["metrics"]["eligible_objects"]) == (2, 2, 4)
    assert all(math.isfinite(first["metrics"][k]) and first["metrics"][k] > 0 for k in names)
    assert probe(tmp_path / "two", SMOKE)["metrics"] == first["metrics"]
    # Resuming from the chunk files gives the same numbers; another protocol in the same folder is refused.
    (tmp_path / "one" / "metrics.json").unlink()
    assert probe(tmp_path / "one", SMOKE)["metrics"] == first["metrics"]
    with pytest.raises(UserError, match="different run"):
        probe(tmp_path / "one", SMOKE | {"gap": 0})
