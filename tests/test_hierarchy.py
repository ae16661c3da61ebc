"""OWT-UCM region trees, the <= 40-region cut, d_T, the UCM layout and the spectral signal.

The synthetic image has three flat regions: L (columns 0-9), RT (columns 10-19, rows 0-9) and RB
(columns 10-19, rows 10-19), with edge strength 0.8 on the L | R boundary and 0.3 on the RT | RB
boundary. By hand: RT and RB merge first near 0.3, then L joins near 0.8, when the orientation map
agrees with the boundaries; OWT weights boundaries by |cos| of the angle between the arc and the
edge, so perpendicular orientations drive both heights to ~0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from shared_data import BSDS

from core.errors import UserError
from prepare.__main__ import main
from prepare.hierarchy import cut_finest, owt_ucm, ucm_map
from prepare.shards import ShardedStore
from prepare.spectral import spectral_edges
from pretrain.grouping import region_distances

SIZE = 20


def three_regions(consistent: bool = True) -> tuple[np.ndarray, np.ndarray]:
    edges = np.zeros((SIZE, SIZE), np.float32)
    orientations = np.zeros((SIZE, SIZE), np.float32)
    vertical, horizontal = (0.0, np.pi / 2) if consistent else (np.pi / 2, 0.0)
    edges[10:12, 11:] = 0.3  # RT | RB: rows 10-11 in the right half (normal along y)
    orientations[10:12, 11:] = horizontal
    edges[:, 9:11] = 0.8  # L | R: columns 9-10 (normal along x)
    orientations[:, 9:11] = vertical
    return edges, orientations


def test_owt_ucm_merges_the_weakest_boundary_first() -> None:
    tree, altitudes, _ = owt_ucm(*three_regions())
    assert tree.num_leaves() == 3
    assert altitudes[3] == pytest.approx(0.3, abs=0.08)
    assert altitudes[4] == pytest.approx(0.8, abs=0.08)


def test_owt_reweights_boundaries_by_orientation() -> None:
    _, altitudes, _ = owt_ucm(*three_regions(consistent=False))
    assert altitudes.max() < 0.1  # |cos(90 deg)| = 0 on every straight arc


def test_cut_tree_labels_and_tree_distance() -> None:
    tree, altitudes, _ = owt_ucm(*three_regions())
    full = cut_finest(tree, altitudes, max_regions=40)
    assert full.num_regions == 3 and len(full.parents) == 5
    left, top, bottom = full.labels[5, 2], full.labels[2, 16], full.labels[17, 16]
    assert len({left, top, bottom}) == 3
    assert (full.labels[:, :9] == left).all()
    distances = region_distances(full.parents, full.altitudes, full.num_regions)
    assert distances[top, bottom] == pytest.approx(altitudes[3])
    assert distances[left, top] == distances[left, bottom] == pytest.approx(altitudes[4])
    assert np.diag(distances).tolist() == [0, 0, 0]
    two = cut_finest(tree, altitudes, max_regions=2)
    assert two.num_regions == 2 and two.labels[2, 16] == two.labels[17, 16] != two.labels[5, 2]
    assert two.parents.tolist() == [2, 2, 2] and two.altitudes[2] == pytest.approx(altitudes[4])
    one = cut_finest(tree, altitudes, max_regions=1)
    assert one.num_regions == 1 and one.parents.tolist() == [0]
    with pytest.raises(UserError):
        cut_finest(tree, altitudes, max_regions=0)


def test_parents_come_after_children() -> None:
    rng = np.random.default_rng(0)
    edges = rng.random((24, 24)).astype(np.float32)
    tree, altitudes, _ = owt_ucm(edges, rng.random((24, 24)).astype(np.float32) * np.pi)
    regions = cut_finest(tree, altitudes, max_regions=40)
    assert regions.num_regions == 40 and tree.num_leaves() > 40
    non_root = np.flatnonzero(regions.parents != np.arange(len(regions.parents)))
    assert (regions.parents[non_root] > non_root).all()
    assert (regions.altitudes[regions.parents[non_root]] >= regions.altitudes[non_root]).all()


def test_ucm_map_has_the_bsds_layout_and_boundary_heights() -> None:
    edges, orientations = three_regions()
    tree, altitudes, graph = owt_ucm(edges, orientations)
    ucm2 = ucm_map(tree, altitudes, graph, edges.shape)
    assert ucm2.shape == (2 * SIZE + 1, 2 * SIZE + 1)
    ucm = ucm2[2::2, 2::2]  # the BSDS benchmark's pixel-resolution view
    assert ucm.shape == (SIZE, SIZE)
    assert ucm[:, :8].max() == 0 and ucm[:, 8:12].max() == pytest.approx(altitudes[4])
    right_column = ucm[:, 15]
    assert right_column.max() == pytest.approx(altitudes[3]) and (right_column > 0).sum() == 1


def test_bad_edge_maps_are_refused() -> None:
    edges, orientations = three_regions()
    with pytest.raises(UserError, match="equal 2-D shapes"):
        owt_ucm(edges, orientations[:-1])
    edges[0, 0] = np.nan
    with pytest.raises(UserError, match="NaN"):
        owt_ucm(edges, orientations)


def test_spectral_signal_peaks_on_the_global_boundary_and_is_deterministic() -> None:
    edges = np.zeros((40, 60), np.float32)
    edges[:, 29:31] = 1.0  # one long boundary splitting the image in two halves
    edges[10, 5:12] = 0.5  # a short, isolated fragment: locally strong, globally weak
    signal = spectral_edges(edges, max_side=60, eigenvectors=4)
    assert signal.shape == edges.shape and signal.max() == pytest.approx(1.0)
    assert signal[:, 28:32].mean() > 5 * signal[:, :20].mean()
    assert np.array_equal(signal, spectral_edges(edges, max_side=60, eigenvectors=4))


def test_region_trees_and_bsds_maps_on_real_images(tiny_model: Path, tmp_path: Path) -> None:
    """The sharded stage and the BSDS map writer, end to end on two BSDS500 test photos (321 x 481)."""
    images = sorted((BSDS / "data" / "images" / "test").glob("*.jpg"))[:2]
    image_list = tmp_path / "images.txt"
    image_list.write_text("".join(f"{p}\n" for p in images))
    shard = tmp_path / "trees" / "shard-00000-of-00001.npz"
    main(["region-trees", "--images", str(image_list), "--edge-model", str(tiny_model), "--shard", "0",
          "--shards", "1", "--max-side", "160", "--out", str(shard)])
    main(["shard-index", "--images", str(image_list), "--out", str(tmp_path / "trees" / "index.json"), str(shard)])
    store = ShardedStore(tmp_path / "trees" / "index.json", [str(p) for p in images])
    assert store.settings["max_regions"] == 40 and store.settings["edge_model"].startswith("model.yml.gz:sha256:")
    for path in images:
        record = store[path.stem]
        assert record["image_hw"].tolist() == [321, 481] or record["image_hw"].tolist() == [481, 321]
        assert max(record["labels"].shape) == 160
        regions = int(record["labels"].max()) + 1
        # At most 40: merges tied at the cut's height go together (SE strengths are quantised).
        assert 20 <= regions <= 40 and set(np.unique(record["labels"])) == set(range(regions))
        distances = region_distances(record["parents"], record["altitudes"], regions)
        assert (distances[~np.eye(regions, dtype=bool)] > 0).all()
    predicted = tmp_path / "bsds"
    main(["bsds-predict", "--bsds-root", str(BSDS), "--edge-model", str(tiny_model), "--max-images", "2",
          "--out-edges", str(predicted / "edges"), "--out-ucm", str(predicted / "ucm"),
          "--out-timing", str(predicted / "timing.json")])
    for kind in ("edges", "ucm"):
        maps = [np.load(predicted / kind / f"{p.stem}.npy") for p in images]
        assert all(m.shape == (321, 481) or m.shape == (481, 321) for m in maps)
        assert all(m.min() >= 0 and m.max() <= 1 and m.max() > 0 for m in maps)
    main(["bsds-eval", "--max-images", "2", "--pred-dir", str(predicted / "ucm"),
          "--gt-dir", str(BSDS / "data" / "groundTruth" / "test"), "--nthresh", "5",
          "--out-dir", str(predicted / "ucm_eval")])
    ods_f = float((predicted / "ucm_eval" / "eval_bdry.txt").read_text().split()[3])
    assert 0.3 < ods_f <= 1  # a 2-tree toy model still finds real boundaries (chance is far lower)
