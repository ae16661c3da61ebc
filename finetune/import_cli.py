"""`python -m finetune import-checkpoint`: a published checkpoint -> backbone.pth + meta.json.

The pair is what `python -m pretrain export` writes, so an imported checkpoint goes through the
same converters and transfer protocols as a backbone pretrained here.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path
from typing import Any

from core.io import save_torch, write_json
from finetune.common import infer_arch
from finetune.importers import LAYOUT_CHOICES, LAYOUTS, import_checkpoint


def sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 hex digest of a file, read in chunks (checkpoints are hundreds of MB)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_backbone(checkpoint: str | os.PathLike[str], layout: str, out: str | os.PathLike[str]) -> dict[str, Any]:
    """Import `checkpoint`, write `out` (backbone.pth) then meta.json beside it, both atomically; return the meta."""
    out = Path(out)
    state_dict, layout_read = import_checkpoint(checkpoint, layout)
    meta = {
        "arch": infer_arch(state_dict),
        "layout": layout_read,
        "source": str(checkpoint),
        "sha256": sha256(checkpoint),
    }
    save_torch(state_dict, out)
    write_json(out.with_name("meta.json"), meta)  # last: a present meta.json means a complete import
    return meta


def _run(args: argparse.Namespace) -> None:
    meta = write_backbone(args.checkpoint, args.layout, args.out)
    print(f"wrote {args.out} and {args.out.with_name('meta.json')}: arch {meta['arch']}, layout {meta['layout']}")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `import-checkpoint` to `python -m finetune`."""
    parser = subparsers.add_parser(
        "import-checkpoint",
        help="import a published self-supervised checkpoint (MoCo, PixPro, DenseCL, SoCo, BYOL, torchvision) as "
        "backbone.pth + meta.json",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="the published checkpoint file")
    parser.add_argument(
        "--layout", choices=LAYOUT_CHOICES, default="auto",
        help=f"where the checkpoint keeps the backbone ({', '.join(LAYOUTS)}; densecl and mmselfsup mean "
        "openselfsup); auto detects it from the keys",
    )
    parser.add_argument("--out", type=Path, required=True, help="backbone.pth to write; meta.json goes beside it")
    parser.set_defaults(func=_run)
