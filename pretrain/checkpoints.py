"""The resume state of a pretraining run: only states that can resume it, and only under its own config.

`state.pth` holds model, optimizer, scaler, iteration and the run key (a hash of the config, seed, method
and image list). A state resumes only a run with the same key; any other start over, saying why.

A state saved at iteration i is known to be good once the forward pass of iteration i from it gave a
finite loss. When that loss is not finite, the state reproduces it on every resume, whatever the
learning rate (the forward comes before any update), so it is deleted and the one before it, which has
passed that test, becomes the resume state again (`state.previous.pth` keeps it until then).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from core.io import save_torch
from core.provenance import config_hash
from pretrain.export import load_training_state

log = logging.getLogger("pretrain")

STATE_FILE = "state.pth"
PREVIOUS_STATE_FILE = "state.previous.pth"


def run_key(method: str, cfg: dict[str, Any], seed: int, images_hash: str) -> str:
    """What a resume state must have been made under: the run's method, config, seed and image list."""
    return config_hash({"method": method, "config": cfg, "seed": seed, "images": images_hash})


class ResumeState:
    """The resume state files of one run folder (written by the main process only)."""

    def __init__(self, out: Path, key: str) -> None:
        self.path, self.previous = out / STATE_FILE, out / PREVIOUS_STATE_FILE
        self.key = key
        self.saved: int | None = None  # iteration of the state in `path`
        self.previous_saved: int | None = None

    def load(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
             total: int) -> int:
        """Load the resume state into the objects if it was made by this run; the iteration to start from."""
        if not self.path.exists():
            return 0
        state = load_training_state(self.path)
        if state.get("run_key") != self.key:
            log.warning("%s was written under another config, seed or image list (run key %s, this run %s): "
                        "starting over from iteration 0", self.path, state.get("run_key", "none"), self.key)
            self.discard()
            return 0
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        self.saved = state["iteration"]
        if self.previous.exists():
            self.previous_saved = load_training_state(self.previous)["iteration"]
        log.info("resuming from iteration %d of %d (%s)", self.saved, total, self.path)
        return self.saved

    def save(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
             iteration: int) -> None:
        """Write the state of `iteration`, keeping the last state as the previous one."""
        if self.path.exists():
            os.replace(self.path, self.previous)
            self.previous_saved = self.saved
        save_torch({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                    "iteration": iteration, "run_key": self.key}, self.path)
        self.saved = iteration

    def drop_if_poisoned(self, iteration: int) -> str:
        """After a non-finite loss at `iteration`: delete the state that gave it, if saved; name the one left."""
        if self.saved == iteration:
            self.path.unlink(missing_ok=True)
            self.saved = None
            if self.previous.exists():
                os.replace(self.previous, self.path)
                self.saved, self.previous_saved = self.previous_saved, None
            log.warning("deleted the state of iteration %d: its forward pass gives this loss", iteration)
        if self.saved is None:
            return "none (a rerun starts from iteration 0)"
        return f"{self.path} (iteration {self.saved})"

    def discard(self) -> None:
        """Delete both states (the run is exported, or they belong to another config)."""
        self.path.unlink(missing_ok=True)
        self.previous.unlink(missing_ok=True)
        self.saved = self.previous_saved = None
