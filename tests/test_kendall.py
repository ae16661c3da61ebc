"""Kendall's tau of Moon et al. Sec. 4.1, the alignment-uniformity tables and figure, and the PCA-RGB figure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy.stats import kendalltau

from analysis.__main__ import main as analysis_main
from analysis.embedding_figure import pca_basis, pca_rgb
from analysis.kendall import alignment_uniformity_tau, kendall_tau_b, min_max
from analysis.table3 import write_table3
from core.errors import UserError
from core.io import write_json

# --- Kendall's tau ------------------------------------------------------------------------------------------


PROVENANCE = {"seed": 0, "commit": "x", "config_hash": "h"}  # as core.provenance writes it

def test_min_max_by_hand() -> None:
    np.testing.assert_allclose(min_max([2.0, 4.0, 6.0, 10.0]), [0.0, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(min_max([-1.0, -5.0, -2.0]), [1.0, 0.0, 0.75])
    np.testing.assert_array_equal(min_max([3.0, 3.0]), [0.0, 0.0])  # no order to normalise


@pytest.mark.parametrize("seed", range(40))
def test_tau_b_matches_scipy_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 30))
    # Few distinct values: ties in x only, in y only and in both.
    x, y = rng.integers(0, 4, n).astype(float), rng.integers(0, 5, n).astype(float)
    expected = kendalltau(x, y, variant="b").statistic
    result = kendall_tau_b(x, y)
    if np.isnan(expected):
        assert math.isnan(result.tau) and result.reason
    else:
        assert result.tau == pytest.approx(expected, abs=1e-12)
    assert result.concordant + result.discordant + result.ties_x + result.ties_y <= n * (n - 1) // 2


@pytest.mark.parametrize("seed", range(20))
def test_alignment_uniformity_tau_is_tau_b_of_normalised_sum(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(3, 25))
    align = rng.choice([0.2, 0.5, 0.9, 1.3], n)
    uniform = rng.choice([-3.5, -2.0, -1.0], n)
    performance = rng.choice([40.0, 55.5, 60.0, 71.25], n)
    # A constant loss (possible at small n) normalises to zeros: it does not order the models.
    x = sum((v - v.min()) / np.ptp(v) if np.ptp(v) else np.zeros(n) for v in (align, uniform))
    expected = kendalltau(x, performance, variant="b").statistic
    assert alignment_uniformity_tau(align, uniform, performance).tau == pytest.approx(expected, abs=1e-12, nan_ok=True)


def test_hand_computed_four_models() -> None:
    """r(L_a) = [0, .25, .5, 1], r(L_u) = [1, .75, 0, .5]: x = [1, 1, .5, 1.5]; P = [60, 70, 70, 50].
    Pairs: (0,1) tied in x only (T); (1,2) tied in performance only (U); (0,2) (0,3) (1,3) (2,3)
    discordant. tau = (0 - 4) / sqrt((0 + 4 + 1) (0 + 4 + 1)) = -0.8."""
    result = alignment_uniformity_tau([0.0, 1.0, 2.0, 4.0], [-1.0, -2.0, -5.0, -3.0], [60.0, 70.0, 70.0, 50.0])
    assert (result.concordant, result.discordant, result.ties_x, result.ties_y) == (0, 4, 1, 1)
    assert result.tau == pytest.approx(-0.8)
    assert result.reason is None


def test_normalised_values_not_ranks_are_summed() -> None:
    """L_a = [0, 1, 10], L_u = [2, 1, 0]: normalised sums x = [0 + 1, .1 + .5, 1 + 0] = [1, .6, 1], while rank
    sums [0 + 2, 1 + 1, 2 + 0] would tie all three (tau undefined). Performance [1, 3, 2]: (0,1) and (1,2)
    discordant, (0,2) tied in x only: tau = (0 - 2) / sqrt((2 + 1) (2 + 0))."""
    result = alignment_uniformity_tau([0.0, 1.0, 10.0], [2.0, 1.0, 0.0], [1.0, 3.0, 2.0])
    assert (result.concordant, result.discordant, result.ties_x, result.ties_y) == (0, 2, 1, 0)
    assert result.tau == pytest.approx(-2 / math.sqrt(6))


def test_degenerate_inputs_are_nan_with_reason() -> None:
    one = alignment_uniformity_tau([0.3], [-1.0], [50.0])
    assert math.isnan(one.tau) and one.reason == "1 model"
    tied = alignment_uniformity_tau([0.1, 0.2, 0.3], [-3.0, -2.0, -1.0], [50.0, 50.0, 50.0])
    assert math.isnan(tied.tau) and tied.reason == "performance tied across all 3 models"
    flat = alignment_uniformity_tau([0.4, 0.4], [-2.0, -2.0], [1.0, 2.0])
    assert math.isnan(flat.tau) and "L_a" in flat.reason
    assert math.isnan(kendalltau([0.4, 0.4], [1.0, 2.0]).statistic)  # scipy agrees
    with pytest.raises(UserError, match="non-finite"):
        alignment_uniformity_tau([0.1, math.nan], [0.0, 1.0], [1.0, 2.0])
    with pytest.raises(UserError, match="one value per model"):
        alignment_uniformity_tau([0.1, 0.2], [0.0, 1.0], [1.0])


# --- Tables 1-3 ---------------------------------------------------------------------------------------------

EVALUATIONS = {"linear_eval": {"metric": "top1", "level": "instance"},
               "voc_detection": {"metric": "AP", "level": "dense"}}


def _member(root: Path, run: str, data: str, scheme: str, loss: str, instance: tuple[float, float],
            dense: tuple[float, float], top1: list[float], ap: float) -> dict:
    """Files of one sweep model: alignment_uniformity.json and one metrics.json per seed and evaluation.
    dense = (L_a, the printed same-index L_u); Wang & Isola's dense L_u is set to minus the latter."""
    au = root / "pretrain" / run / "alignment_uniformity.json"
    write_json(au, {"instance": {"align": instance[0], "uniform": instance[1]},
                    "dense": {"align": dense[0], "uniform": -dense[1], "uniform_same_index": dense[1]},
                    "images": 8})
    files: dict[str, list[str]] = {"linear_eval": [], "voc_detection": []}
    for seed, value in enumerate(top1):
        path = root / "finetune" / "linear_eval" / run / f"s{seed}" / "metrics.json"
        write_json(path, {"protocol": "linear_eval", "metrics": {"top1": value, "top5": 99.0},
                          "provenance": {**PROVENANCE, "seed": seed}})
        files["linear_eval"].append(str(path))
    path = root / "finetune" / "voc_detection" / run / "s0" / "metrics.json"
    write_json(path, {"protocol": "voc_detection", "metrics": {"AP": ap, "AP50": 2 * ap}, "provenance": PROVENANCE})
    files["voc_detection"].append(str(path))
    setting = {"temperature": 0.2} if loss == "infonce" else {"align_weight": 1.0, "uniform_weight": 1.0}
    return {"run": run, "data": data, "member": {"scheme": scheme, "loss": loss, **setting},
            "alignment_uniformity": str(au), "metrics": files}


def _spec(root: Path) -> dict:
    """coco/dense: 3 L_a & L_u models (instance L_a, L_u drive linear eval; dense ones drive detection) and
    1 InfoNCE model; stl10/instance: 1 InfoNCE model."""
    members = [
        # Binary-exact values, so that equal sums of normalised values are equal floats.
    # instance: r(L_a) = [0, .5, 1], r(L_u) = [0, 1, .5] -> x = [0, 1.5, 1.5]; top1 means [70, 60, 65]:
        # (0,1) (0,2) discordant, (1,2) tied in x only: tau = -2 / sqrt(2 * 3).
        # dense: x = r([1, 2, 3]) + r([-3, -3, -1]) = [0, .5, 2]; AP [30, 20, 10]: all 3 discordant, tau = -1.
        _member(root, "m0", "coco", "dense", "align_uniform", (0.125, -3.0), (1.0, -3.0), [69.0, 71.0], 30.0),
        _member(root, "m1", "coco", "dense", "align_uniform", (0.25, -1.0), (2.0, -3.0), [60.0, 60.0], 20.0),
        _member(root, "m2", "coco", "dense", "align_uniform", (0.375, -2.0), (3.0, -1.0), [65.0, 65.0], 10.0),
        _member(root, "m3", "coco", "dense", "infonce", (0.625, -0.5), (0.5, -0.5), [40.0, 44.0], 5.0),
        _member(root, "m4", "stl10", "instance", "infonce", (0.4, -2.5), (0.6, -1.5), [75.0], 25.0),
    ]
    return {"members": members, "evaluations": EVALUATIONS}


def test_table3_hand_computed_groups(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    frame = write_table3(spec, tmp_path / "t.csv", tmp_path / "t.md", out_models_csv=tmp_path / "models.csv")
    rows = frame.set_index(["image set", "pretraining", "loss"])
    au = rows.loc[("coco", "dense", "L_a & L_u")]
    assert au["linear_eval exp"] == "3" and au["linear_eval max"] == "70.00"
    assert au["linear_eval avg"] == "65.00" and au["linear_eval top10"] == "65.00"
    assert au["linear_eval tau"] == f"{-2 / math.sqrt(6):.2f}"
    assert au["voc_detection tau"] == "-1.00" and au["voc_detection avg"] == "20.00"
    # Under Wang & Isola's L_u (here [3, 3, 1]): x = r([1, 2, 3]) + r([3, 3, 1]) = [1, 1.5, 1] against AP.
    assert au["voc_detection tau (W&I L_u)"] == f"{kendalltau([1, 1.5, 1], [30, 20, 10]).statistic:.2f}"
    assert "linear_eval tau (W&I L_u)" not in rows.columns  # instance level: Wang & Isola's L_u only
    infonce = rows.loc[("coco", "dense", "InfoNCE")]
    assert infonce["linear_eval max"] == "42.00" and infonce["linear_eval tau"] == "n/a (1 model)"
    total = rows.loc[("coco", "dense", "total")]
    # 4 models: top1 [70, 60, 65, 42]; instance x = r([1, 2, 3, 5] / 8) + r([-3, -1, -2, -.5])
    # = [0, 1/4 + 2/2.5, 1/2 + 1/2.5, 2].
    x = np.array([0.0, 0.25 + 0.8, 0.5 + 0.4, 2.0])
    assert total["linear_eval exp"] == "4" and total["linear_eval avg"] == f"{(70 + 60 + 65 + 42) / 4:.2f}"
    assert total["linear_eval tau"] == f"{kendalltau(x, [70, 60, 65, 42]).statistic:.2f}"
    assert list(frame["loss"]) == ["L_a & L_u", "InfoNCE", "total", "InfoNCE", "total"]
    md = (tmp_path / "t.md").read_text()
    assert "n/a (1 model)" in md and "fewer than 10 models" in md
    models = pd.read_csv(tmp_path / "models.csv")
    assert models.loc[models["run"] == "m0", "linear_eval"].item() == 70.0  # mean over 2 seeds


def test_table3_top10_keeps_the_ten_best(tmp_path: Path) -> None:
    members = [_member(tmp_path, f"r{i}", "coco", "instance", "infonce", (0.1 * i, -i), (0.1 * i, -i),
                       [float(i)], float(i)) for i in range(12)]
    frame = write_table3({"members": members, "evaluations": EVALUATIONS}, tmp_path / "t.csv", tmp_path / "t.md")
    assert frame.loc[0, "linear_eval top10"] == f"{np.mean(range(2, 12)):.2f}"
    assert frame.loc[0, "linear_eval avg"] == f"{np.mean(range(12)):.2f}"


def test_table3_missing_file_names_the_target(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    missing = spec["members"][1]["metrics"]["voc_detection"][0]
    Path(missing).unlink()
    with pytest.raises(UserError, match=f"snakemake {missing}"):
        write_table3(spec, tmp_path / "t.csv", tmp_path / "t.md")
    Path(spec["members"][0]["alignment_uniformity"]).unlink()
    with pytest.raises(UserError, match="snakemake .*m0/alignment_uniformity.json"):
        write_table3(spec, tmp_path / "t.csv", tmp_path / "t.md")


def test_table3_rejects_bad_spec(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    with pytest.raises(UserError, match="level"):
        write_table3({**spec, "evaluations": {"linear_eval": {"metric": "top1", "level": "pixel"}}},
                     tmp_path / "t.csv", tmp_path / "t.md")
    with pytest.raises(UserError, match="metrics.top3"):
        write_table3({**spec, "evaluations": {"linear_eval": {"metric": "top3", "level": "instance"}}},
                     tmp_path / "t.csv", tmp_path / "t.md")


def test_table3_cli_with_random_init_and_figure(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    random_files = {}
    for name, metric in (("linear_eval", "top1"), ("voc_detection", "AP")):
        path = tmp_path / "finetune" / name / "random" / "s0" / "metrics.json"
        write_json(path, {"protocol": name, "metrics": {metric: 12.5}, "provenance": PROVENANCE})
        random_files[name] = [str(path)]
    spec["random_init"] = random_files
    analysis_main(["table3", "--spec-json", json.dumps(spec), "--out-csv", str(tmp_path / "t.csv"),
                   "--out-md", str(tmp_path / "t.md"), "--figure", str(tmp_path / "fig.png")])
    table = pd.read_csv(tmp_path / "t.csv", dtype=str, keep_default_na=False)
    random_rows = table[table["pretraining"] == "random init"]
    assert list(random_rows["image set"]) == ["coco", "stl10"]
    assert list(random_rows["voc_detection max"]) == ["12.50", "12.50"]
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- PCA-RGB ------------------------------------------------------------------------------------------------


def test_pca_rgb_recovers_three_orthogonal_directions() -> None:
    generator = torch.Generator().manual_seed(0)
    channels, h, w = 16, 6, 5
    directions = torch.linalg.qr(torch.randn(channels, 3, generator=generator, dtype=torch.float64))[0].t()
    # Zero-mean, mutually orthogonal amplitudes over all cells, of norms 3, 2, 1: their sample covariance is
    # diagonal, so the principal directions are exactly `directions`, in this order.
    raw = torch.randn(2 * h * w, 3, generator=generator, dtype=torch.float64)
    amplitudes = (torch.linalg.qr(raw - raw.mean(dim=0))[0] * torch.tensor([3.0, 2.0, 1.0])).reshape(2, h * w, 3)
    offset = torch.randn(channels, generator=generator, dtype=torch.float64)
    maps = [(a @ directions + offset).t().reshape(channels, h, w) for a in amplitudes]
    rgb, basis = pca_rgb(maps)
    np.testing.assert_allclose((basis @ directions.t()).abs().numpy(), np.eye(3), atol=1e-8)
    for image, colours in zip(amplitudes, rgb, strict=True):
        assert colours.shape == (h, w, 3)
        flat = colours.reshape(-1, 3)
        np.testing.assert_allclose(flat.min(dim=0).values.numpy(), 0.0, atol=1e-12)
        np.testing.assert_allclose(flat.max(dim=0).values.numpy(), 1.0, atol=1e-12)
        # Each channel is the per-image min-max of its amplitude, up to sign.
        for k in range(3):
            expected = (image[:, k] - image[:, k].min()) / (image[:, k].max() - image[:, k].min())
            got = flat[:, k]
            assert torch.allclose(got, expected, atol=1e-8) or torch.allclose(got, 1 - expected, atol=1e-8)


def test_pca_basis_signs_are_fixed() -> None:
    cells = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    _, basis = pca_basis(cells)
    _, flipped = pca_basis(-cells)  # same principal axes, opposite SVD signs possible
    np.testing.assert_allclose(basis.numpy(), flipped.numpy(), atol=1e-10)
    assert (basis.gather(1, basis.abs().argmax(dim=1, keepdim=True)) > 0).all()


def test_pca_rgb_cli_writes_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = []
    for i, size in enumerate([(40, 56), (48, 48)]):
        path = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
        images.append(str(path))
    out = tmp_path / "fig" / "pca.png"
    analysis_main(["pca-rgb", "--backbone", "none", "--arch", "resnet18", "--images", *images, "--layer", "layer2",
                   "--image-size", "48", "--seed", "0", "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(UserError, match="images not found"):
        analysis_main(["pca-rgb", "--backbone", "none", "--arch", "resnet18", "--images", str(tmp_path / "no.png"),
                       "--out", str(out)])
