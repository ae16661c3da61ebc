"""`python -m prepare davis`: the video object segmentation set, in the DAVIS layout.

    OUT/JPEGImages/480p/<sequence>/%05d.jpg, OUT/Annotations/480p/<sequence>/%05d.png (0/255)
    OUT/manifest.json   (written last: the Snakemake output)

From SOURCE_ROOT/davis2016_mini/DAVIS when it exists (every sequence with frames and masks,
symlinked); otherwise short procedural videos: a textured object gliding over a procedural scene,
so a clone without the shared data still runs the DAVIS evaluation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.errors import UserError
from core.io import atomic_path, write_json
from core.provenance import provenance
from prepare import procedural
from prepare.layouts import MANIFEST, link, start_build

RESOLUTION = "480p"  # DAVIS's folder name, whatever the frame size
_PROCEDURAL_SIZE = 160  # long side of procedural frames
_PROCEDURAL_FRAMES = 8


def _link_source(source: Path, out: Path) -> list[str]:
    images, masks = source / "JPEGImages" / RESOLUTION, source / "Annotations" / RESOLUTION
    sequences = sorted(p.name for p in images.iterdir() if p.is_dir() and (masks / p.name).is_dir()) \
        if images.is_dir() and masks.is_dir() else []
    if not sequences:
        raise UserError(f"{source} holds no DAVIS sequence; expected JPEGImages/{RESOLUTION}/<sequence>/*.jpg and "
                        f"Annotations/{RESOLUTION}/<sequence>/*.png.")
    start_build(out)
    for sequence in sequences:
        for kind, folder in (("JPEGImages", images), ("Annotations", masks)):
            for frame in sorted((folder / sequence).iterdir()):
                link(frame, out / kind / RESOLUTION / sequence / frame.name)
    return sequences


def _save_png(mask: np.ndarray, path: Path) -> None:
    with atomic_path(path, suffix=".tmp.png") as tmp:
        Image.fromarray(mask).save(tmp)


def _generate(out: Path, seed: int, count: int) -> list[str]:
    """`count` sequences: the largest object of a procedural scene moves along a line over the scene."""
    start_build(out)
    sequences = []
    for number in range(count):
        rng = np.random.default_rng((seed, 13, number))  # 13: apart from the other procedural streams
        scene, objects = procedural.render(rng, _PROCEDURAL_SIZE)
        obj = max(objects, key=lambda o: o.visible.sum())
        height, width = scene.shape[:2]
        shift = rng.uniform(-0.02, 0.02, 2) * (width, height)  # pixels per frame along x, y
        background = procedural.render(rng, _PROCEDURAL_SIZE)[0]
        background = np.array(Image.fromarray(background).resize((width, height)))
        name = f"procedural{number}"
        for frame in range(_PROCEDURAL_FRAMES):
            dx, dy = np.round(shift * frame).astype(int)
            mask = np.roll(obj.visible, (dy, dx), axis=(0, 1))
            pixels = background.copy()
            pixels[mask] = np.roll(scene, (dy, dx), axis=(0, 1))[mask]
            procedural.save_jpeg(pixels, out / "JPEGImages" / RESOLUTION / name / f"{frame:05d}.jpg")
            _save_png(mask.astype(np.uint8) * 255, out / "Annotations" / RESOLUTION / name / f"{frame:05d}.png")
        sequences.append(name)
    return sequences


def build_davis(source_root: Path, out: Path, seed: int, procedural_sequences: int) -> dict[str, Any]:
    """Build OUT (see the module docstring) and return its manifest."""
    source = source_root / "davis2016_mini" / "DAVIS"
    config: dict[str, Any] = {"source_root": str(source_root.resolve())}
    if source.exists():
        sequences = _link_source(source, out)
        config["source"] = "davis2016_mini"
    else:
        print(f"{source} not found: generating procedural videos in the DAVIS layout.", file=sys.stderr)
        sequences = _generate(out, seed, procedural_sequences)
        config.update(source="procedural", sequences=procedural_sequences)
    frames = {s: len(list((out / "JPEGImages" / RESOLUTION / s).glob("*.jpg"))) for s in sequences}
    manifest = {"dataset": "davis", "source": config["source"], "sequences": frames,
                "provenance": provenance(config, seed)}
    write_json(out / MANIFEST, manifest)
    return manifest


def _run(args: argparse.Namespace) -> None:
    build_davis(args.source_root, args.out, args.seed, args.procedural_sequences)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("davis", help="build the DAVIS-layout video set", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source-root", type=Path, required=True,
                        help="folder holding davis2016_mini/DAVIS (else procedural videos are generated)")
    parser.add_argument("--out", type=Path, required=True, help="DAVIS root to (re)build")
    parser.add_argument("--seed", type=int, default=0, help="seed of the procedural videos")
    parser.add_argument("--procedural-sequences", type=int, default=2, help="procedural sequences")
    parser.set_defaults(func=_run)
