"""SoCo and D3SSL: proposals carried into the views, C4 region features, the methods' losses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from PIL import Image
from torch.nn import functional as F
from torch.utils.data import default_collate

from core.errors import UserError
from pretrain.data import SampleSource
from pretrain.methods import build_method, method_class
from pretrain.methods.soco import matched_regression
from pretrain.models import ResNetTrunk
from pretrain.proposal_views import (
    augment_regions,
    proposal_boxes,
    region_views,
    select_visible,
    to_view_pixels,
)
from pretrain.region_features import region_maps
from pretrain.runs import run_config
from pretrain.train import training_images

SMOKE_PRETRAIN = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow" / "config" / "smoke.yaml")
                                .read_text())["pretrain"]


def test_proposal_boxes_are_normalised_by_the_original_size() -> None:
    record = {"boxes": np.array([[10, 20, 50, 60]], np.float32), "filter": np.array(0, np.uint8)}
    assert proposal_boxes(record, (100, 200)).tolist() == [pytest.approx([0.1, 0.1, 0.5, 0.3])]
    with pytest.raises(UserError, match="no 'boxes' array"):
        proposal_boxes({"labels": np.zeros((2, 2))}, (100, 200))


def test_select_visible_clips_filters_and_repeats() -> None:
    crop = torch.tensor([0.0, 0.0, 0.5, 0.5, 0.0])
    boxes = torch.tensor([[0.1, 0.1, 0.3, 0.3],    # inside
                          [0.4, 0.1, 0.7, 0.3],    # one third inside: dropped (< MIN_VISIBLE)
                          [0.3, 0.3, 0.6, 0.6],    # 4/9 inside: dropped
                          [0.2, 0.2, 0.55, 0.4]])  # 6/7 inside: clipped to x2 = 0.5
    gen = torch.Generator().manual_seed(0)
    chosen, ids = select_visible(boxes, crop, 5, 100, gen)
    rows = {tuple(round(v, 4) for v in row) for row in chosen.tolist()}
    assert rows == {(0.1, 0.1, 0.3, 0.3), (0.2, 0.2, 0.5, 0.4)} and chosen.shape == (5, 4)
    # Copies of one proposal share its id: both usable proposals drawn once, then 3 repeats.
    assert sorted(set(ids.tolist())) == [0, 1] and sorted(ids[:2].tolist()) == [0, 1]
    assert all(torch.equal(chosen[i], chosen[j]) for i in range(5) for j in range(5) if ids[i] == ids[j])
    # Nothing visible (or no proposal at all): the crop itself is the box.
    outside = torch.tensor([[0.8, 0.8, 0.9, 0.9]])
    assert select_visible(outside, crop, 2, 100, gen)[0].tolist() == [[0.0, 0.0, 0.5, 0.5]] * 2
    assert select_visible(torch.zeros(0, 4), crop, 1, 100, gen)[0].tolist() == [[0.0, 0.0, 0.5, 0.5]]
    # A 0.008-wide proposal is 1.6 pixels of a 100 px view of this half-width crop: dropped, the crop stands in.
    tiny = torch.tensor([[0.1, 0.1, 0.108, 0.3]])
    assert select_visible(tiny, crop, 1, 100, gen)[0].tolist() == [[0.0, 0.0, 0.5, 0.5]]
    assert select_visible(tiny, crop, 1, 200, gen)[0].tolist() == [pytest.approx([0.1, 0.1, 0.108, 0.3])]


def test_a_record_without_boxes_has_the_whole_image_as_its_proposal() -> None:
    """SoCo's dataset: "if no proposals, insert one single proposal, the whole raw image"."""
    record = {"boxes": np.zeros((0, 4), np.float32), "filter": np.array(2, np.uint8)}
    assert proposal_boxes(record, (100, 200)).tolist() == [[0.0, 0.0, 1.0, 1.0]]


def test_matched_regression_pairs_every_copy_of_a_proposal() -> None:
    """SoCo's correspondence matrix: boxes i, j pair when their proposal ids are equal."""
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # one image, K = 3; boxes 0 and 2 copy one proposal
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    ids = torch.tensor([[4, 7, 4]])
    # pairs (0,0) cos 1, (0,2) cos 0, (2,0) cos 1, (2,2) cos 0, (1,1) cos 1: mean of 2 - 2 cos = (0+2+0+2+0) / 5
    assert matched_regression(p, z, ids).item() == pytest.approx(4 / 5)
    # Distinct ids: the mean over boxes of the same-box regression.
    assert matched_regression(p, z, torch.tensor([[0, 1, 2]])).item() == pytest.approx(2 / 3)


def test_to_view_pixels_follows_crop_and_flip() -> None:
    geometry = torch.tensor([0.2, 0.1, 0.6, 0.5, 1.0])  # crop 0.4 x 0.4 at (0.2, 0.1), flipped
    box = torch.tensor([[0.3, 0.2, 0.4, 0.3]])
    # x: (0.3 - 0.2) / 0.4 = 0.25 and 0.5, mirrored to 0.75 and 0.5; y: 0.25 and 0.5; times 100 px.
    assert to_view_pixels(box, geometry, 100)[0].tolist() == pytest.approx([50.0, 25.0, 75.0, 50.0])


def test_region_maps_of_the_whole_view_equal_the_trunk() -> None:
    """With aligned RoIAlign, a box over the whole image and one bin per C4 cell samples every cell at its
    centre: the region's res5 map is exactly the image's."""
    torch.manual_seed(0)
    trunk = ResNetTrunk("resnet18").eval()
    images = torch.randn(2, 3, 64, 64)
    boxes = torch.tensor([[[0.0, 0.0, 64.0, 64.0]]] * 2)
    with torch.no_grad():
        assert torch.allclose(region_maps(trunk, images, boxes, output_size=4), trunk(images), atol=1e-5)
        assert region_maps(trunk, images, boxes.repeat(1, 3, 1), output_size=7).shape == (6, 512, 4, 4)


def _source(size: tuple[int, int] = (80, 60)) -> SampleSource:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    record = {"boxes": np.array([[5, 5, 40, 30], [30, 20, 75, 55], [0, 0, 80, 60]], np.float32),
              "filter": np.array(0, np.uint8)}
    return SampleSource(image=image, original_size=size, record=record, draw_image=lambda: image)


def _cfg(method: str, **section: object) -> dict:
    cfg = run_config(SMOKE_PRETRAIN, method, {"image_size": 64, "batch_size": 2, "moco": {"queue_size": 32}})
    cfg[method].update(section)
    return cfg


@pytest.mark.parametrize("method", ["soco", "d3ssl"])
def test_region_samples_keep_boxes_inside_their_views(method: str) -> None:
    cfg = _cfg(method)
    sample = method_class(method).make_sample(_source(), torch.Generator().manual_seed(1), cfg)
    for key, boxes in sample.items():
        if key.startswith("boxes"):
            view = sample["composite"] if (method, key) == ("d3ssl", "boxes3") else sample["view" + key[5:]]
            size = view.shape[-1]
            assert boxes.shape == (4, 4)
            assert (boxes[:, :2] >= -1e-4).all() and (boxes[:, 2:] <= size + 1e-4).all()
            assert (boxes[:, 2:] > boxes[:, :2]).all()


def test_augment_regions_blanks_only_with_masks_switched_on() -> None:
    view = torch.ones(3, 32, 32)
    boxes = torch.tensor([[4.0, 4.0, 20.0, 20.0]])
    params = SMOKE_PRETRAIN["region_augment"]
    gen = torch.Generator().manual_seed(0)
    same, same_boxes = augment_regions(view, boxes, [], params, gen)
    assert torch.equal(same, view) and torch.equal(same_boxes, boxes)
    masked, _ = augment_regions(view, boxes, ["prm"], params, gen)
    assert (masked[:, 0, 31] == 0).all() or (masked[:, 31, 31] == 0).all()  # far corners are outside box + PRM
    with pytest.raises(UserError, match="unknown region augmentation"):
        augment_regions(view, boxes, ["mixup"], params, gen)


@pytest.mark.parametrize(("method", "switch", "components"), [
    ("soco", {}, {"loss_12", "loss_13"}),
    ("soco", {"small_scale": None}, {"loss_12"}),
    ("d3ssl", {}, {"loss_dc", "loss_dp"}),
    ("d3ssl", {"depositioning": False}, {"loss_dc"}),
])
def test_region_methods_train_a_step(method: str, switch: dict, components: set[str]) -> None:
    cfg = _cfg(method, **switch)
    cls = method_class(method)
    batch = default_collate([cls.make_sample(_source(), torch.Generator().manual_seed(i), cfg) for i in range(2)])
    torch.manual_seed(0)
    model = build_method(method, "resnet18", cfg)
    losses = model(**batch, iteration=0, total=10)
    assert set(losses) == {"loss"} | components
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert model.backbone.layer3[0].conv1.weight.grad.abs().sum() > 0
    # res5 sees only RoIs, so its gradient also comes through the region path.
    assert model.backbone.layer4[1].conv2.weight.grad.abs().sum() > 0


def test_d3ssl_loss_is_eq_10_on_the_memory_bank() -> None:
    """L = L_dc + L_dp with each InfoNCE term against the bank before this batch's push (Eq. 4, 5, 9)."""
    cfg = _cfg("d3ssl")
    batch = default_collate([method_class("d3ssl").make_sample(_source(), torch.Generator().manual_seed(i), cfg)
                             for i in range(2)])
    torch.manual_seed(0)
    model = build_method("d3ssl", "resnet18", cfg).eval()  # eval: BN running stats, so re-encoding is identical
    bank = model.queue.keys.clone()
    losses = model(**batch, iteration=0, total=10)
    assert torch.allclose(losses["loss"], losses["loss_dc"] + losses["loss_dp"])
    with torch.no_grad():
        t1, t2 = model.teacher(batch["view1"], batch["boxes1"]), model.teacher(batch["view2"], batch["boxes2"])
        s3 = model.student(batch["composite"], batch["boxes3"])
    logits = torch.cat([(s3 * t2).sum(1, keepdim=True), s3 @ bank.t()], dim=1) / cfg["moco"]["temperature"]
    expected = -torch.log_softmax(logits, dim=1)[:, 0].mean()
    logits = torch.cat([(s3 * t1).sum(1, keepdim=True), s3 @ bank.t()], dim=1) / cfg["moco"]["temperature"]
    expected = expected - torch.log_softmax(logits, dim=1)[:, 0].mean()
    assert losses["loss_dp"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert torch.equal(model.queue.keys[:8], t2)  # the bank now holds this batch's teacher x2 features


def test_export_of_a_region_method_is_a_torchvision_resnet() -> None:
    state = build_method("d3ssl", "resnet18", _cfg("d3ssl")).backbone.state_dict()
    missing, unexpected = torchvision.models.resnet18().load_state_dict(state, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected


def test_views_of_region_methods() -> None:
    whole, crop = region_views(96, [0.4, 1.0])
    assert not whole.crop and crop.crop and crop.scale == (0.4, 1.0) and whole.size == crop.size == 96


def test_a_store_of_another_image_set_stops_with_a_clear_error(image_list: str, prepared_stores: dict[str, str],
                                                                tmp_path: Path) -> None:
    cfg = _cfg("soco")
    with pytest.raises(UserError, match="pass --prepared"):
        training_images("soco", image_list, cfg, seed=0)
    fewer = tmp_path / "images.txt"
    fewer.write_text("\n".join(Path(image_list).read_text().split()[:3]) + "\n")
    with pytest.raises(UserError, match="different image list"):
        training_images("soco", str(fewer), cfg, seed=0, prepared=prepared_stores["proposals"])
    dataset = training_images("soco", image_list, cfg, seed=0, prepared=prepared_stores["proposals"])
    assert dataset[0]["boxes1"].shape == (4, 4)


def test_soco_loss_is_byol_regression_summed_over_view_pairs() -> None:
    """SoCo: 2 - 2 cos between the online prediction and the target projection of boxes of the same proposal,
    both directions, for the pairs (V1, V2) and (V1, V3); per image the mean over those pairs."""
    cfg = _cfg("soco")
    batch = default_collate([method_class("soco").make_sample(_source(), torch.Generator().manual_seed(i), cfg)
                             for i in range(2)])
    assert batch["view3"].shape[-1] == 32 and (batch["boxes3"] <= 32 + 1e-4).all()  # V3: V2 at half the size
    torch.manual_seed(0)
    model = build_method("soco", "resnet18", cfg).eval()
    with torch.no_grad():
        online, target = [], []
        for v in ("1", "2", "3"):
            view, boxes = batch["view" + v], batch["boxes" + v]
            prediction = model.predictor(model.projector(region_maps(model.backbone, view, boxes)))
            online.append(F.normalize(prediction, dim=1))
            target.append(F.normalize(model.target_projector(region_maps(model.target_backbone, view, boxes)), dim=1))
    losses = model(**batch, iteration=0, total=10)  # iteration 0: the momentum update leaves the target as it is
    matched = [(batch["box_ids"][b, :, None] == batch["box_ids"][b, None, :]).float() for b in range(2)]
    k = batch["box_ids"].shape[1]

    def regression(p: torch.Tensor, z: torch.Tensor) -> float:  # per image, over the pairs of one proposal
        per_image = [((2 - 2 * p[b * k:(b + 1) * k] @ z[b * k:(b + 1) * k].T) * matched[b]).sum() / matched[b].sum()
                     for b in range(2)]
        return sum(per_image) / 2

    for v, name in ((1, "loss_12"), (2, "loss_13")):
        expected = regression(online[0], target[v]) + regression(online[v], target[0])
        assert losses[name].item() == pytest.approx(float(expected), rel=1e-4)
    assert losses["loss"].item() == pytest.approx((losses["loss_12"] + losses["loss_13"]).item(), rel=1e-6)
