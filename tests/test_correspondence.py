"""`python -m analysis correspondence`: flip correspondence (LC-loss Sec. 4.6) and DenseCL pair accuracy."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
import yaml
from PIL import Image
from torch.nn import functional as F

from analysis import correspondence as corr
from analysis.pair_figure import draw_pairs, drawn_pairs
from core.architectures import IMAGENET_MEAN, IMAGENET_STD
from core.errors import UserError
from pretrain.matching import argmax_match, phm_match
from pretrain.views import ViewConfig

# PHM's settings as the DAG passes them: the smoke config's pretrain.houghcl section.
PHM = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow" / "config" / "smoke.yaml").read_text()
                     )["pretrain"]["houghcl"]
PROTOCOL = {"split": "val2017", "images": 3, "image_size": 64, "layer": "layer4", "crop_scale": [0.2, 1.0],
            "pair_tolerance": 0, "figure_images": 2, "phm": PHM}
NO_COLOUR = {"jitter_prob": 0.0, "grayscale_prob": 0.0, "blur_prob": 0.0, "solarize_prob": 0.0}
CELL = 8  # pixels per cell of the coordinate extractor


def ramp_image(size: int = 256) -> Image.Image:
    """Red = x, green = y (the source coordinates, 8-bit), blue constant."""
    ramp = np.round((np.arange(size) + 0.5) / size * 255).astype(np.uint8)
    rgb = np.stack([np.broadcast_to(ramp[None, :], (size, size)), np.broadcast_to(ramp[:, None], (size, size)),
                    np.full((size, size), 128, np.uint8)], axis=-1)
    return Image.fromarray(np.ascontiguousarray(rgb))


def coordinate_features(images: torch.Tensor) -> torch.Tensor:
    """Per CELL x CELL cell, the source (x, y) read from a `ramp_image` view, as [cos, sin] of (pi / 2) x and y.

    The cosine of two cells is (cos(pi/2 dx) + cos(pi/2 dy)) / 2, so a cell's best match in a grid is
    the cell nearest in x and in y: the one whose centre is closest to the same source point."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    xy = F.avg_pool2d(images * std + mean, CELL)[:, :2] * (math.pi / 2)
    return torch.cat([xy.cos(), xy.sin()], dim=1)


def normalised(image: torch.Tensor) -> torch.Tensor:
    return TF.normalize(TF.to_dtype(image, torch.float32, scale=True), IMAGENET_MEAN, IMAGENET_STD)


def test_mirrored_cells_by_hand_on_3x4() -> None:
    # Row-major 3 x 4: cell (i, j) = 4 i + j mirrors to (i, 3 - j).
    assert corr.mirrored_cells(3, 4).tolist() == [3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8]


def test_best_matches_is_densecl_argmax() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 16, 4, 4, generator=gen)
    match, cosine = corr.best_matches(a, b)
    assert match.tolist() == argmax_match(a[None], b[None], grid=4)[0].tolist()
    expected = F.cosine_similarity(a.flatten(1)[:, :, None], b.flatten(1)[:, None, :], dim=0).max(dim=1).values
    assert torch.allclose(cosine, expected, atol=1e-6)


def test_constant_map_ties_go_to_the_first_cell() -> None:
    # Every cosine is equal, so every cell matches cell 0 = (0, 0); only the cell whose mirror is
    # (0, 0), i.e. (0, 3), is correct: 1 of 12.
    for value in (1.0, 0.0):  # zero vectors: all cosines 0, the same tie
        ok = corr.flip_correct(torch.full((5, 3, 4), value), torch.full((5, 3, 4), value))
        assert ok.nonzero().flatten().tolist() == [3]


def test_codes_that_do_not_flip_are_right_only_on_the_middle_column() -> None:
    # One-hot position codes that ignore the flip: each cell matches itself, which is its own mirror
    # only in the middle column of a 3 x 3 map: cells 1, 4, 7.
    codes = torch.eye(9).view(9, 3, 3)
    assert corr.flip_correct(codes, codes).nonzero().flatten().tolist() == [1, 4, 7]
    assert corr.flip_correct(codes, codes.flip(-1)).all()


def test_flip_pair_flips_and_transforms_colour() -> None:
    image = ramp_image(96)
    plain_flip = replace(corr.flip_colour_view(64), **NO_COLOUR)
    original, copy = corr.flip_pair(image, plain_flip, torch.Generator().manual_seed(0))
    assert torch.allclose(copy, original.flip(-1), atol=1e-5)
    original, copy = corr.flip_pair(image, corr.flip_colour_view(64), torch.Generator().manual_seed(0))
    assert not torch.allclose(copy, original.flip(-1), atol=1e-2)  # blur (p = 1) always changes it
    with pytest.raises(ValueError, match="flipped"):
        corr.flip_pair(image, replace(plain_flip, flip_prob=0.0), torch.Generator().manual_seed(0))


def known_crop_maps() -> tuple[torch.Tensor, torch.Tensor]:
    """View 1 = the whole 256 px ramp; view 2 = its pixels [8, 136) in x and y, flipped; both 64 px, 8 x 8 cells.

    View-1 cell k (centre (k + 0.5) / 8) lies in view 2 for k = 0..3, at view-2 coordinate
    ((k + 0.5) / 8 - 1/32) / (1/2) = (2k + 0.5) / 8: the centre of view-2 cell 2k (7 - 2k after the flip)."""
    source = TF.pil_to_tensor(ramp_image())
    view1 = normalised(TF.resize(source, [64, 64], antialias=True))
    view2 = normalised(TF.horizontal_flip(TF.resized_crop(source, 8, 8, 128, 128, [64, 64], antialias=True)))
    return coordinate_features(torch.stack([view1, view2])).unbind(0)


GEOM1 = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0])
GEOM2 = torch.tensor([1 / 32, 1 / 32, 17 / 32, 17 / 32, 1.0])


def test_pairs_are_all_correct_with_a_coordinate_extractor_and_known_crops() -> None:
    map1, map2 = known_crop_maps()
    pairs = corr.judge_pairs(map1, map2, GEOM1, GEOM2, tolerance=0)
    eligible = [8 * r + c for r in range(4) for c in range(4)]
    assert pairs.eligible.nonzero().flatten().tolist() == eligible
    assert pairs.match[eligible].tolist() == [8 * (2 * r) + 7 - 2 * c for r in range(4) for c in range(4)]
    assert pairs.correct.nonzero().flatten().tolist() == eligible


def test_phm_pairs_are_houghcls_matching() -> None:
    """The probe's PHM pairs are the training code's `phm_match` (HoughCL Eq. 1), scored by p(m|D)."""
    maps = torch.randn(2, 16, 7, 7, generator=torch.Generator().manual_seed(0))
    pairs = corr.judge_pairs(maps[0], maps[1], GEOM1, GEOM2, tolerance=0, phm=PHM)
    assert torch.equal(pairs.match, phm_match(maps[0][None], maps[1][None], 7, **PHM)[0])
    argmax = corr.judge_pairs(maps[0], maps[1], GEOM1, GEOM2, tolerance=0)
    assert not torch.equal(pairs.match, argmax.match)  # the Hough votes move some matches on noise maps
    assert (pairs.score >= 0).all() and (pairs.score <= argmax.score.clamp(min=0) ** PHM["appearance_power"]).all()


def test_a_centre_on_view_2s_far_edge_is_not_eligible() -> None:
    # View 2 = source [0, 9/16]^2: view-1 centre 4 (4.5 / 8 = 9/16) maps to exactly 1, outside [0, 1).
    maps = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    pairs = corr.judge_pairs(maps[0], maps[1], GEOM1, torch.tensor([0.0, 0.0, 9 / 16, 9 / 16, 0.0]), tolerance=0)
    assert pairs.eligible.nonzero().flatten().tolist() == [8 * r + c for r in range(4) for c in range(4)]


def test_pair_tolerance_by_hand() -> None:
    # Geometry that hides view 2's flip: the true column of view-1 column c becomes 2c while the match
    # stays 7 - 2c, off by |7 - 4c| = 7, 3, 1, 5 columns: none right at 0, column c = 2 within 1.
    map1, map2 = known_crop_maps()
    unflipped = GEOM2.clone()
    unflipped[4] = 0
    assert int(corr.judge_pairs(map1, map2, GEOM1, unflipped, tolerance=0).correct.sum()) == 0
    within_one = corr.judge_pairs(map1, map2, GEOM1, unflipped, tolerance=1).correct
    assert within_one.nonzero().flatten().tolist() == [8 * r + 2 for r in range(4)]


def write_images(folder: Path, count: int, ramp: bool = False) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        image = ramp_image(128) if ramp else Image.fromarray(rng.integers(0, 255, (48, 72, 3), dtype=np.uint8))
        image.save(folder / f"{i:03d}.png")


def test_measure_is_exact_on_a_coordinate_extractor(tmp_path: Path) -> None:
    write_images(tmp_path / "val2017", 3, ramp=True)
    protocol = corr.CorrespondenceProtocol(**{**PROTOCOL, "pair_tolerance": 1})
    paths = corr.coco_images(tmp_path, "val2017", 3)
    metrics, examples = corr.measure(paths, coordinate_features, protocol, seed=0,
                                     colour=replace(corr.flip_colour_view(64), **NO_COLOUR),
                                     pair_view=ViewConfig(size=64, scale=(0.2, 1.0), **NO_COLOUR))
    assert metrics["correspondence_acc"] == 100.0 and metrics["correspondence_cells"] == 3 * 64
    assert metrics["pair_acc"] == 100.0 and metrics["pair_correct"] == metrics["pair_cells"] > 0
    assert metrics["pair_acc_phm"] == 100 * metrics["pair_correct_phm"] / metrics["pair_cells"]
    assert [name for name, *_ in examples] == ["000.png", "001.png"]
    assert all(set(pairs) == {"argmax", "PHM"} for *_, pairs in examples)


def test_drawn_pairs_by_hand() -> None:
    pairs = corr.PairMatches(match=torch.zeros(9, dtype=torch.long), score=torch.arange(9) / 10,
                             eligible=torch.arange(9) != 8, correct=torch.zeros(9, dtype=torch.bool))
    assert drawn_pairs(pairs) == ([7, 6, 5, 4, 3], [0, 1, 2])  # cell 8 is not eligible


def test_figure_is_a_png(tmp_path: Path) -> None:
    map1, map2 = known_crop_maps()
    pairs = corr.judge_pairs(map1, map2, GEOM1, GEOM2, tolerance=0)
    view = torch.zeros(3, 64, 64)
    for examples, name in (([("a.jpg", view, view, {"argmax": pairs, "PHM": pairs})] * 2, "pairs.png"),
                           ([], "empty.png")):
        draw_pairs(examples, tmp_path / name)
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(tmp_path / name) as image:
            image.verify()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.png", "pairs.png"]  # no temporaries left


def cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    corr.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


def probe_argv(root: Path, out: Path, protocol: dict) -> list[str]:
    return ["correspondence", "--data-root", str(root), "--backbone", "none", "--arch", "resnet18",
            "--protocol-json", json.dumps(protocol), "--seed", "3", "--out", str(out)]


def test_cli_writes_metrics_and_figure(tmp_path: Path) -> None:
    write_images(tmp_path / "coco" / "val2017", 4)
    cli(probe_argv(tmp_path / "coco", tmp_path / "a", PROTOCOL))
    summary = json.loads((tmp_path / "a" / "metrics.json").read_text())
    metrics = summary["metrics"]
    assert summary["probe"] == "correspondence" and summary["weights"] is None and summary["figure"] == "pairs.png"
    assert metrics["images"] == 3 and metrics["correspondence_cells"] == 3 * 4  # 64 px at stride 32: 2 x 2
    assert metrics["correspondence_acc"] == 100 * metrics["correspondence_correct"] / 12
    assert metrics["pair_acc"] == 100 * metrics["pair_correct"] / metrics["pair_cells"]
    assert metrics["pair_acc_phm"] == 100 * metrics["pair_correct_phm"] / metrics["pair_cells"]
    with Image.open(tmp_path / "a" / "pairs.png") as image:
        assert image.format == "PNG"
    cli(probe_argv(tmp_path / "coco", tmp_path / "b", PROTOCOL))  # deterministic from --seed
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["metrics"] == metrics


def test_cli_data_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="val2017"):
        cli(probe_argv(tmp_path, tmp_path / "out", PROTOCOL))
    write_images(tmp_path / "val2017", 2)
    with pytest.raises(UserError, match="holds 2 images"):
        cli(probe_argv(tmp_path, tmp_path / "out", PROTOCOL))
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.parametrize(("change", "message"), [
    ({"extra": 1}, "unknown protocol keys"),
    ({"layer": None}, "lacks"),
    ({"split": "test2017"}, "split"),
    ({"images": 0}, "images"),
    ({"images": True}, "images"),
    ({"layer": "layer5"}, "layer"),
    ({"image_size": 80}, "multiple"),
    ({"image_size": 32}, "image_size"),
    ({"crop_scale": [0.5, 0.2]}, "crop_scale"),
    ({"crop_scale": [0.0, 1.0]}, "crop_scale"),
    ({"crop_scale": [0.2]}, "crop_scale"),
    ({"crop_scale": "0.2"}, "crop_scale"),
    ({"pair_tolerance": -1}, "pair_tolerance"),
    ({"figure_images": 4}, "exceeds"),
    ({"phm": {"offset_bins": 13}}, "phm must hold exactly"),
    ({"phm": {**PHM, "kernel_sigma": 0}}, "kernel_sigma"),
])
def test_protocol_errors(change: dict, message: str) -> None:
    protocol = {key: value for key, value in {**PROTOCOL, **change}.items() if value is not None}
    with pytest.raises(UserError, match=message):
        corr.CorrespondenceProtocol.from_json(json.dumps(protocol))


def test_protocol_accepts_the_config() -> None:
    protocol = corr.CorrespondenceProtocol.from_json(json.dumps(PROTOCOL))
    assert protocol.crop_scale == (0.2, 1.0) and protocol.grid() == 2
