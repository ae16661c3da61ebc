"""What every transfer protocol shares: reading backbone.pth, the protocol JSON, resumable work
folders, and the command-line argument types."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from core.architectures import RESNET_LAYOUTS, RESNETS
from core.errors import UserError
from core.io import read_json, save_torch, write_json

EXPORT_FIX = "export the backbone with `python -m pretrain export`"
_BN_PARAMS = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_TORCHVISION_KEY = re.compile(
    rf"conv1\.weight|bn1\.{_BN_PARAMS}"
    rf"|layer[1-4]\.\d+\.(conv[1-3]\.weight|bn[1-3]\.{_BN_PARAMS}|downsample\.0\.weight|downsample\.1\.{_BN_PARAMS})"
)


def abbreviate(items: list[str]) -> str:
    """The first few of `items` for an error message, with how many more there are."""
    return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")


def load_weights_only(path: Path, allowed: list[type] | None = None) -> Any:
    """`torch.load(weights_only=True)`: only tensors, containers and the `allowed` classes are unpickled, so a file
    cannot run code. A file that pickles anything else is refused with the class it holds and how to re-save
    just its weights; the unsafe load is never suggested."""
    try:
        with torch.serialization.safe_globals(allowed or []):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if match := re.search(r"Unsupported global: GLOBAL (\S+)", str(err)):
            classes = "".join(f", {cls.__module__}.{cls.__qualname__}" for cls in allowed or [])
            raise UserError(
                f"{path} pickles a {match[1]} object; densebench loads checkpoints with torch.load(weights_only=True), "
                f"which allows only tensors, containers{classes}, so a file cannot run code. Where you trust the "
                "file, re-save just its weights (e.g. torch.save(ckpt['state_dict'], 'weights.pth')) and use that."
            ) from None
        raise UserError(f"cannot read {path} as a torch checkpoint ({_first_line(err)}); is it a .pth file?") from None
    except Exception as err:  # torch raises many types for corrupt or truncated files
        raise UserError(f"cannot read {path} as a torch checkpoint ({_first_line(err)}); is it a .pth file?") from err


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def load_backbone(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a torchvision ResNet state dict without fc; UserError for a missing or foreign checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"backbone checkpoint {path} does not exist; run the pretrain stage (or fix --backbone).")
    state_dict = load_weights_only(path)
    if not isinstance(state_dict, dict) or not state_dict:
        raise UserError(f"{path} is not a state dict; {EXPORT_FIX}.")
    foreign = sorted(key for key in state_dict if not _TORCHVISION_KEY.fullmatch(key))
    if foreign:
        raise UserError(
            f"{path} is not a torchvision ResNet backbone without fc: unexpected keys {abbreviate(foreign)}; "
            f"{EXPORT_FIX}."
        )
    return state_dict


def infer_arch(state_dict: dict[str, Any], fix: str = EXPORT_FIX) -> str:
    """The torchvision ResNet whose layout `state_dict` has; UserError (ending with `fix`) for any other."""
    blocks = tuple(
        len({key.split(".")[1] for key in state_dict if key.startswith(f"layer{stage}.")}) for stage in range(1, 5)
    )
    bottleneck = "layer1.0.conv3.weight" in state_dict
    try:
        return RESNET_LAYOUTS[blocks, bottleneck]
    except KeyError:
        raise UserError(
            f"backbone has {blocks} blocks per stage ({'bottleneck' if bottleneck else 'basic'} blocks), which is not "
            f"a torchvision ResNet ({', '.join(RESNETS)}); {fix}."
        ) from None


def frozen_resnet(arch: str, backbone: str | os.PathLike[str] | None, seed: int) -> torchvision.models.ResNet:
    """torchvision `arch` without fc (forward = pooled features), in eval mode and without gradients:
    the weights of `backbone` (backbone.pth), or torchvision's initialisation drawn from `seed`."""
    # torchvision initialises from the global RNG: scope the seed so the caller's RNG state is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = getattr(torchvision.models, arch)(weights=None)
    net.fc = nn.Identity()  # the export has no fc
    if backbone is not None:
        state_dict = load_backbone(backbone)
        found = infer_arch(state_dict)
        if found != arch:
            raise UserError(f"{backbone} holds a {found} backbone but --arch is {arch}; pass --arch {found}.")
        net.load_state_dict(state_dict)
    return net.eval().requires_grad_(False)


def parse_protocol_json(text: str, keys: frozenset[str], section: str) -> dict[str, Any]:
    """--protocol-json as a dict with exactly `keys` (the config's finetune.<section>, minus threads)."""
    try:
        protocol = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"--protocol-json is not valid JSON ({err}); pass a JSON object.") from err
    if not isinstance(protocol, dict):
        raise UserError(f"--protocol-json must be a JSON object of the finetune.{section} settings.")
    if unknown := sorted(protocol.keys() - keys):
        hint = " (pass threads with --threads)" if "threads" in unknown else ""
        raise UserError(f"unknown protocol keys {unknown}{hint}; allowed keys: {sorted(keys)}.")
    if missing := sorted(keys - protocol.keys()):
        raise UserError(f"protocol JSON lacks {missing}; add them (see workflow/config/smoke.yaml).")
    return protocol


def check_resumable(work_dir: Path, run_key: str, has_checkpoint: bool) -> None:
    """Refuse to resume checkpoints of another run (the frameworks would silently continue them)."""
    key_file = work_dir / "run.json"
    if has_checkpoint and (not key_file.is_file() or read_json(key_file).get("run_key") != run_key):
        raise UserError(
            f"{work_dir} holds checkpoints of a different run (other protocol, seed, weights, data or arch); "
            "delete it to start this run from scratch."
        )
    write_json(key_file, {"run_key": run_key})


FINAL_WEIGHTS = "model_final.pth"


def keep_final_weights(work_dir: Path, state_dict: dict[str, torch.Tensor], key: str, resume_glob: str) -> Path:
    """Replace a finished run's resume checkpoints (`resume_glob` in `work_dir`) by its weights alone.

    A resume checkpoint holds the weights, optimizer and schedule of one checkpoint period and serves
    only an interrupted run; kept after it, they were most of the disk a pipeline run used (~0.5 GB per
    smoke transfer job). The weights are written as {`key`: state_dict}, the framework's own layout, to
    work/model_final.pth. Both frameworks resume from work/last_checkpoint, removed first: a rerun of
    a finished job trains from scratch instead of resuming pruned state.
    """
    (work_dir / "last_checkpoint").unlink(missing_ok=True)
    for checkpoint in work_dir.glob(resume_glob):
        checkpoint.unlink()
    final = work_dir / FINAL_WEIGHTS
    save_torch({key: {name: value.detach().cpu() for name, value in state_dict.items()}}, final)
    return final


def _int_at_least(text: str, minimum: int, what: str) -> int:
    value = int(text)
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0, "an integer >= 0")


def weights_path(text: str) -> Path | None:
    """argparse type: a weights file, or 'none' for random init."""
    return None if text.lower() == "none" else Path(text)


def add_converter(subparsers: argparse._SubParsersAction, name: str, help: str, out_help: str,
                  convert: Callable[[Path, Path], str], fmt: str) -> None:
    """A `python -m finetune <name>` command: backbone.pth -> one framework's weights file."""

    def run(args: argparse.Namespace) -> None:
        arch = convert(args.backbone, args.out)
        print(f"wrote {args.out} ({arch}, {fmt})")

    parser = subparsers.add_parser(name, help=help)
    parser.add_argument("--backbone", type=Path, required=True, help="backbone.pth (torchvision ResNet, no fc)")
    parser.add_argument("--out", type=Path, required=True, help=out_help)
    parser.set_defaults(func=run)


def add_protocol(subparsers: argparse._SubParsersAction, name: str, help: str, *, archs: list[str],
                 weights_help: str, data_help: str, run: Callable[..., Any],
                 convert: Callable[[Path, Path], str], converted_name: str) -> argparse.ArgumentParser:
    """A `python -m finetune <name>` transfer launcher; `run` gets the parsed arguments as keywords.

    --name is the protocol's config section (finetune.protocols.<name>), recorded in metrics.json.
    --backbone takes a backbone.pth instead of --weights: `convert` writes the framework's weights to
    <out>/`converted_name` first (what the converter command would), removed when the run ends.
    Returns the parser, for a launcher's own extra arguments.
    """
    parser = subparsers.add_parser(name, help=help)
    parser.add_argument("--name", required=True, help="the protocol's config section, recorded in metrics.json")
    parser.add_argument("--data-root", type=Path, required=True, help=data_help)
    source = parser.add_mutually_exclusive_group(required=True)
    # No `type=weights_path` here: argparse would take the None of 'none' for "not given" in the required group.
    source.add_argument("--weights", help=f"{weights_help} or 'none' (random init)")
    source.add_argument("--backbone", type=Path,
                        help=f"backbone.pth (torchvision ResNet, no fc), converted to <out>/{converted_name} for the "
                        "run")
    parser.add_argument("--arch", choices=archs, required=True)
    parser.add_argument("--protocol-json", required=True, help="JSON object of the protocol's settings")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", type=Path, required=True, help="output folder: metrics.json, work/ for the framework")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help=f"keep work/'s resume checkpoints after the run (by default only work/{FINAL_WEIGHTS}, "
                        "the final weights, is kept)")

    def launch(args: argparse.Namespace) -> None:
        kwargs = {k: v for k, v in vars(args).items() if k not in ("func", "command", "backbone")}
        if args.backbone is None:
            run(**{**kwargs, "weights": weights_path(args.weights)})
            return
        # In the job rather than a job of its own: converting takes a second, starting a process several.
        converted = args.out / converted_name
        convert(args.backbone, converted)
        try:
            run(**{**kwargs, "weights": converted})
        finally:
            converted.unlink(missing_ok=True)  # rebuilt from backbone.pth in a second by a resumed run

    parser.set_defaults(func=launch)
    return parser
