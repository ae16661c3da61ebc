"""Index-wise contrast: Eq. 2 and L_a / L_u against direct formulas, training, held-out measurement."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torchvision
from torch.nn import functional as F

import pretrain.train as train_mod
from analysis.alignment_uniformity import chunked_uniformity, measure_alignment_uniformity, same_index_uniformity
from core.errors import UserError
from pretrain.losses import alignment, index_info_nce, nt_xent, uniformity
from pretrain.methods import build_method


def _unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_index_info_nce_matches_eq2_with_the_other_views_negatives_term_by_term() -> None:
    views = _unit(2, 3, 2, 2, seed=0)  # [view, image, position, dim]: B = 3, HW = 2, D = 2
    tau = 0.3
    terms = []
    for v, i, p in itertools.product(range(2), range(3), range(2)):
        anchor, other = views[v, i, p], views[1 - v]
        numerator = math.exp(anchor @ other[i, p] / tau)
        # Sec. 3.3's neg = h~2: every vector of the other view (B * HW - 1 = 5 negatives), the positive included
        denominator = sum(math.exp(anchor @ other[k, q] / tau) for k, q in itertools.product(range(3), range(2)))
        terms.append(-math.log(numerator / denominator))
    expected = sum(terms) / len(terms)
    assert index_info_nce(views[0], views[1], tau).item() == pytest.approx(expected, rel=1e-5)


def test_nt_xent_matches_eq1_term_by_term_and_by_hand() -> None:
    views = _unit(2, 2, 2, 2, seed=0)  # the instance scheme's Eq. 1 over positions too
    tau = 0.3
    terms = []
    for v, i, p in itertools.product(range(2), range(2), range(2)):
        anchor = views[v, i, p]
        numerator = math.exp(anchor @ views[1 - v, i, p] / tau)
        # every position of every view except the anchor's own view (k != i); includes the positive
        denominator = sum(math.exp(anchor @ views[w, k, q] / tau)
                          for w, k, q in itertools.product(range(2), range(2), range(2)) if (w, k) != (v, i))
        terms.append(-math.log(numerator / denominator))
    assert nt_xent(views[0], views[1], tau).item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    view = torch.tensor([[e1], [e2]])  # B = 2, HW = 1, both views identical
    # each anchor: positive cos 1; the other image's two views cos 0: -log(e^2 / (e^2 + 2)) at tau = 0.5
    expected = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert nt_xent(view, view.clone(), 0.5).item() == pytest.approx(expected, rel=1e-6)
    # Eq. 2's pairs take one view: the other image's view-2 vector only, -log(e^2 / (e^2 + 1))
    assert index_info_nce(view, view.clone(), 0.5).item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 1)))


def test_alignment_and_uniformity_of_antipodal_vectors() -> None:
    x, y = torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 0.0]])
    assert alignment(x, y, alpha=2).item() == pytest.approx(4.0)  # ||x - y||^2 = 4
    assert alignment(x, y, alpha=1).item() == pytest.approx(2.0)
    assert uniformity(torch.cat([x, y]), t=2).item() == pytest.approx(-8.0)  # log exp(-2 * 4)
    assert chunked_uniformity(torch.cat([x, y]), t=2) == pytest.approx(-8.0)


def test_uniformity_of_coinciding_vectors_is_zero_with_finite_gradient() -> None:
    x = torch.tensor([[0.6, 0.8], [0.6, 0.8]], requires_grad=True)
    value = uniformity(x, t=2)
    value.backward()
    assert value.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("positions", [1, 3])  # instance level, then dense level
def test_alignment_and_uniformity_match_direct_formulas(positions: int) -> None:
    x, y = _unit(4, positions, 5, seed=1), _unit(4, positions, 5, seed=2)
    alpha, t = 1.5, 2.0
    pairs = [(x[i, p], y[i, p]) for i in range(4) for p in range(positions)]  # index-wise positives
    assert alignment(x, y, alpha).item() == pytest.approx(
        sum(float((a - b).norm()) ** alpha for a, b in pairs) / len(pairs), rel=1e-5)
    rows = x.reshape(-1, 5)  # the dense vectors of one view, taken i.i.d.
    potentials = [math.exp(-t * float((a - b).pow(2).sum())) for a, b in itertools.combinations(rows, 2)]
    expected = math.log(sum(potentials) / len(potentials))
    assert uniformity(rows, t).item() == pytest.approx(expected, rel=1e-5)
    assert chunked_uniformity(rows, t, chunk=5) == pytest.approx(expected, rel=1e-5)  # blocks of 5 of 12 rows


# --- training and measurement -------------------------------------------------------------------

def _section(scheme: str, loss: str, views: str) -> dict:
    return {"scheme": scheme, "loss": loss, "views": views, "temperature": 0.5, "align_weight": 1.0,
            "uniform_weight": 1.0, "align_alpha": 2, "uniform_t": 2, "dim": 16, "hidden": 32}


def _config(section: dict) -> dict:
    return {"arch": "resnet18", "epochs": 1, "batch_size": 2, "image_size": 64, "optimizer": "sgd", "base_lr": 0.03,
            "lr_scaling": "none", "lr_schedule": "cosine", "warmup_epochs": 0, "momentum": 0.9,
            "weight_decay": 1e-4, "amp": False,
            "workers": 0, "checkpoint_every": 1, "index_contrast": section}




def test_embeddings_are_one_per_image_or_one_per_cell() -> None:
    images = torch.randn(2, 3, 64, 64)  # ResNet-18, stride 32: a 2 x 2 map
    for scheme, positions in (("instance", 1), ("dense", 4)):
        model = build_method("index_contrast", "resnet18", {"index_contrast": _section(scheme, "infonce", "densecl")})
        z = model.embed(images)
        assert z.shape == (2, positions, 16)
        assert torch.allclose(z.norm(dim=-1), torch.ones(2, positions))


def test_align_uniform_objective_weights_its_terms() -> None:
    section = {**_section("dense", "align_uniform", "densecl"), "align_weight": 0.5, "uniform_weight": 2.0}
    model = build_method("index_contrast", "resnet18", {"index_contrast": section})
    out = model(torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64), None, None, iteration=0, total=1)
    assert out["loss"].requires_grad
    assert out["loss"].item() == pytest.approx(0.5 * out["loss_align"].item() + 2.0 * out["loss_uniform"].item())


def test_unknown_scheme_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="index_contrast.scheme is 'pixel'; choose one of instance, dense"):
        build_method("index_contrast", "resnet18", {"index_contrast": _section("pixel", "infonce", "densecl")})


@pytest.mark.parametrize(("scheme", "loss", "views"), [("instance", "infonce", "wang_isola"),
                                                       ("instance", "align_uniform", "densecl"),
                                                       ("dense", "infonce", "densecl"),
                                                       ("dense", "align_uniform", "wang_isola")])
def test_trains_and_exports_a_torchvision_resnet(image_list: str, tmp_path, scheme: str, loss: str,
                                                 views: str) -> None:
    train_mod.train("index_contrast", image_list, _config(_section(scheme, loss, views)), seed=0, out_dir=tmp_path,
                    data_name="test")
    state = torch.load(tmp_path / "backbone.pth", weights_only=True)
    missing, unexpected = torchvision.models.resnet18().load_state_dict(state, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
    header, *rows = (tmp_path / "train_log.csv").read_text().splitlines()
    trained = ["loss_infonce"] if loss == "infonce" else []
    assert header.split(",") == ["iteration", "lr", "loss", *trained, "loss_align", "loss_uniform"]
    assert len(rows) == 2 and all(math.isfinite(float(v)) for row in rows for v in row.split(","))


def test_printed_dense_uniformity_pairs_images_at_the_same_index() -> None:
    """dense_alignment_uniformity.md Sec. 3.3: L_u = log mean over image pairs (i, j), positions p of
    exp(-||h_(i,p) - h_(j,p)||^2). Two images, two cells: at p = 0 the cells are orthogonal (d^2 = 2), at p = 1
    equal (d^2 = 0); the cells of one image never pair with each other."""
    maps = torch.tensor([[[1.0, 0.0], [0.0, 1.0]],
                         [[0.0, 1.0], [0.0, 1.0]]])
    assert same_index_uniformity(maps) == pytest.approx(math.log((math.exp(-2) + 1) / 2))
    assert same_index_uniformity(maps, t=2.0) == pytest.approx(math.log((math.exp(-4) + 1) / 2))


def test_measurement_is_finite_and_deterministic(image_list: str, tmp_path) -> None:
    torch.manual_seed(0)
    state = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")}
    torch.save(state, tmp_path / "backbone.pth")

    def measure(seed: int) -> dict:
        return measure_alignment_uniformity(tmp_path / "backbone.pth", image_list, "resnet18", image_size=64,
                                            seed=seed, max_images=4)

    first = measure(0)
    assert first.keys() == {"instance", "dense", "images"} and first["images"] == 4
    for level in ("instance", "dense"):
        assert 0 <= first[level]["align"] <= 4  # squared distances of unit vectors
        assert -8 <= first[level]["uniform"] <= 0  # log of a mean of exp(-2 d^2), d^2 in [0, 4]
    assert -4 <= first["dense"]["uniform_same_index"] <= 0  # log of a mean of exp(-d^2)
    assert measure(0) == first
    assert measure(1) != first  # the seed draws other views and images
