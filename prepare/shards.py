"""Sharded per-image outputs (proposals, region hierarchies) with an index.

A dataset's image list is split into contiguous shards; each shard is one Snakemake job (one SLURM
array task on a cluster) writing one compressed `.npz`. Inside a shard, progress is checkpointed to
a `.partial.npz` sibling every few images, so a killed job resumes where it stopped and a rerun
redoes only unfinished shards. Every shard stores the hash of the image list it was made from, and
loading a store against a changed image list fails instead of silently mismatching images.

On-disk layout of one shard (all arrays, loadable with `allow_pickle=False`):
  image_ids                  (n,) str       image file stems, in image-list order
  meta                       ()  str        JSON: what made the shard (tool settings, list hashes)
  <field>__data              (total,)       every image's array of <field>, flattened and concatenated
  <field>__offsets           (n + 1,) int64 where each image's data starts in <field>__data
  <field>__shapes            (n, ndim) int64 each image's array shape
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from core.errors import UserError
from core.io import atomic_path, read_json, write_json
from prepare.image_list import read_image_list

Record = dict[str, np.ndarray]


def image_list_hash(paths: Sequence[str]) -> str:
    """Hash of an image list: file names and byte sizes, in order.

    Names and sizes, not absolute paths, so a dataset moved to another root keeps its hash, while
    an added, removed, reordered or replaced image changes it.
    """
    digest = hashlib.sha256()
    for path in paths:
        try:
            size = os.path.getsize(path)
        except FileNotFoundError:
            raise UserError(f"image not found: {path}. Rebuild the image list or the dataset.") from None
        digest.update(f"{os.path.basename(path)}\t{size}\n".encode())
    return digest.hexdigest()


def image_id(path: str) -> str:
    """The id of an image in every shard: its file name without suffix (COCO's zero-padded id)."""
    return Path(path).stem


def shard_slice(paths: Sequence[str], index: int, count: int) -> list[str]:
    """The `index`-th of `count` contiguous, near-equal parts of `paths`."""
    if not 0 <= index < count:
        raise UserError(f"shard index {index} is outside 0..{count - 1}; pass --shard in [0, --shards).")
    bounds = np.linspace(0, len(paths), count + 1).round().astype(int)
    return list(paths[bounds[index] : bounds[index + 1]])


def shard_name(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}.npz"


def _pack(ids: list[str], records: list[Record], meta: dict[str, Any]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {"image_ids": np.array(ids, dtype=str), "meta": np.array(json.dumps(meta))}
    for field in records[0] if records else []:
        parts = [np.asarray(record[field]) for record in records]
        sizes = [part.size for part in parts]
        arrays[f"{field}__data"] = np.concatenate([part.ravel() for part in parts])
        arrays[f"{field}__offsets"] = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        ndim = parts[0].ndim
        arrays[f"{field}__shapes"] = np.array([part.shape for part in parts], dtype=np.int64).reshape(len(parts), ndim)
    return arrays


def _save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        # A file object, not a name: np.savez would append ".npz" to the temporary name.
        np.savez_compressed(handle, **arrays)


class Shard:
    """One shard file, read back as {image id: {field: array}}."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            with np.load(self.path, allow_pickle=False) as data:
                self._arrays = {key: data[key] for key in data.files}
        except FileNotFoundError:
            raise UserError(f"shard not found: {self.path}. Rerun the prepare stage that makes it.") from None
        except (ValueError, OSError, KeyError) as err:
            raise UserError(f"corrupt shard {self.path} ({err}); delete it and rerun the prepare stage.") from None
        self.meta: dict[str, Any] = json.loads(str(self._arrays["meta"]))
        self.image_ids: list[str] = [str(i) for i in self._arrays["image_ids"]]
        self._row = {name: row for row, name in enumerate(self.image_ids)}
        self.fields = sorted({key.split("__")[0] for key in self._arrays if "__" in key})

    def __len__(self) -> int:
        return len(self.image_ids)

    def __contains__(self, name: object) -> bool:
        return name in self._row

    def record(self, name: str) -> Record:
        row = self._row[name]
        out = {}
        for field in self.fields:
            start, stop = self._arrays[f"{field}__offsets"][row : row + 2]
            shape = tuple(self._arrays[f"{field}__shapes"][row])
            out[field] = self._arrays[f"{field}__data"][start:stop].reshape(shape)
        return out

    def records(self) -> list[Record]:
        return [self.record(name) for name in self.image_ids]


def run_shard(
    paths: Sequence[str],
    process: Callable[[str], Record],
    out: str | os.PathLike[str],
    meta: dict[str, Any],
    checkpoint_every: int = 25,
    desc: str = "images",
) -> None:
    """Apply `process` to every image of a shard and write `out`; resume from a matching partial file.

    `meta` says what made the shard (tool settings, list hashes); a partial file written with other
    settings is discarded rather than mixed in.
    """
    out = Path(out)
    partial = out.with_name(out.name.replace(".npz", ".partial.npz"))
    ids: list[str] = []
    records: list[Record] = []
    if partial.is_file():
        previous = Shard(partial)
        if previous.meta == meta:
            ids, records = list(previous.image_ids), previous.records()
            print(f"resuming {out.name} after {len(ids)} of {len(paths)} images")
        else:
            print(f"discarding {partial.name}: it was made with other settings")
    for number, path in enumerate(tqdm(paths[len(ids) :], desc=desc, initial=len(ids), total=len(paths)), 1):
        records.append(process(path))
        ids.append(image_id(path))
        if number % checkpoint_every == 0 and len(ids) < len(paths):
            _save(partial, _pack(ids, records, meta))
    _save(out, _pack(ids, records, meta))
    partial.unlink(missing_ok=True)


def add_shard_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line shape every sharded stage shares."""
    parser.add_argument("--images", type=Path, required=True, help="image list (python -m prepare image-list)")
    parser.add_argument("--shard", type=int, required=True, help="this shard's index, 0-based")
    parser.add_argument("--shards", type=int, required=True, help="number of shards")
    parser.add_argument("--max-side", type=int, default=None, help="resize so the longer side is at most this")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads")
    parser.add_argument("--checkpoint-every", type=int, default=25, help="images between resume points")
    parser.add_argument("--out", type=Path, required=True, help="shard file to write (.npz)")


def run_shard_stage(args: argparse.Namespace, settings: dict[str, Any], process: Callable[[str], Record],
                    desc: str) -> None:
    """Run one shard of a stage from its parsed `add_shard_arguments`; `settings` go into the shard's meta."""
    paths = read_image_list(args.images)
    mine = shard_slice(paths, args.shard, args.shards)
    meta = {
        **settings,
        "max_side": args.max_side,
        "image_list_hash": image_list_hash(paths),
        "shard_list_hash": image_list_hash(mine),
        "shard": args.shard,
        "shards": args.shards,
    }
    run_shard(mine, process, args.out, meta, checkpoint_every=args.checkpoint_every, desc=desc)
    print(f"{len(mine)} images -> {args.out}")


def write_index(out: str | os.PathLike[str], shard_paths: Sequence[str], list_hash: str) -> dict[str, Any]:
    """Write the index of a sharded store after checking its shards belong to one image list."""
    shards = [Shard(path) for path in shard_paths]
    foreign = [str(shard.path) for shard in shards if shard.meta["image_list_hash"] != list_hash]
    if foreign:
        raise UserError(f"shard(s) made from another image list: {', '.join(foreign)}. Delete them and rerun.")
    settings = {k: v for k, v in shards[0].meta.items() if k not in ("shard", "shards", "shard_list_hash")}
    index = {
        "image_list_hash": list_hash,
        "images": sum(len(shard) for shard in shards),
        "settings": settings,
        "shards": [{"file": shard.path.name, "images": len(shard)} for shard in shards],
    }
    write_json(out, index)
    return index


class ShardedStore:
    """Every shard of an index, addressed by image id; refuses a changed image list."""

    def __init__(self, index_path: str | os.PathLike[str], image_paths: Sequence[str] | None = None) -> None:
        self.index_path = Path(index_path)
        if not self.index_path.is_file():
            raise UserError(f"shard index not found: {self.index_path}. Run the prepare stage that makes it.")
        self.index = read_json(self.index_path)
        if image_paths is not None and image_list_hash(image_paths) != self.index["image_list_hash"]:
            raise UserError(
                f"{self.index_path} was made from a different image list (images added, removed or changed). "
                "Rerun the prepare stage for this dataset (delete the shards) so they match."
            )
        self.settings: dict[str, Any] = self.index["settings"]
        self._shards = [Shard(self.index_path.parent / entry["file"]) for entry in self.index["shards"]]

    def __len__(self) -> int:
        return sum(len(shard) for shard in self._shards)

    def __getitem__(self, name: str) -> Record:
        for shard in self._shards:
            if name in shard:
                return shard.record(name)
        raise KeyError(f"image {name} is not in {self.index_path}")

    def image_ids(self) -> list[str]:
        return [name for shard in self._shards for name in shard.image_ids]


def _run_index(args: argparse.Namespace) -> None:
    list_hash = image_list_hash(read_image_list(args.images))
    index = write_index(args.out, [str(path) for path in args.shard_files], list_hash)
    print(f"{index['images']} images in {len(index['shards'])} shards -> {args.out}")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("shard-index", help="index the shards of one image list", description=__doc__)
    parser.add_argument("--images", type=Path, required=True, help="the image list the shards were made from")
    parser.add_argument("--out", type=Path, required=True, help="index file to write (index.json)")
    parser.add_argument("shard_files", type=Path, nargs="+", help="shard files, in order")
    parser.set_defaults(func=_run_index)
