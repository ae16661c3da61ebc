"""Image reading with one clear error for a missing or corrupt file."""

from __future__ import annotations

import os

from PIL import Image, UnidentifiedImageError

from core.errors import UserError


def load_rgb(path: str | os.PathLike[str], min_side: int | None = None) -> Image.Image:
    """Decode an image fully (not lazily) as RGB, or raise a UserError naming the file.

    `min_side`: the caller needs no more than this many pixels per side, so JPEGs may be decoded at
    a reduced DCT scale (1/2, 1/4, 1/8) that keeps both sides >= min_side, which decodes faster
    (benchmarks/pretrain_views.py measures it).
    """
    try:
        with Image.open(path) as img:
            if min_side is not None:
                img.draft("RGB", (min_side, min_side))
            img.load()
            return img.convert("RGB")
    except FileNotFoundError:
        raise UserError(f"image not found: {path}. Rebuild the dataset or fix its root in the config.") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        # The prepare stage links datasets into results/prepare/: name the file the link points to.
        real = os.path.realpath(path)
        via = f" (linked as {path})" if real != os.path.abspath(path) else ""
        raise UserError(
            f"corrupt image: {real}{via} ({err}). Replace or delete this file and rebuild the dataset."
        ) from None
