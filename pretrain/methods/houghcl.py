"""HoughCL (Lee et al. 2021): DenseCL whose positive key cells come from probabilistic Hough matching
(Sec. 3) instead of the argmax of appearance similarity. No learnable parameters are added.

Hyper-parameters, `cfg["houghcl"]` (the paper sets only d; the rest follow Min et al. 2019's code,
juhongm999/hpf, which the paper says it follows for p(m_g|x)):
- appearance_power: d in p(m_a) = ReLU(cos)^d; 3 (HoughCL Sec. 3).
- offset_bins: bins per axis of the offset space; 13, one per cell offset of the paper's 7 x 7 grid
  (2 * 7 - 1). hpf's 8192 cells (91 per axis) quantise a space of box offsets in pixels; at cell
  resolution they leave >= 6 empty bins between two offsets, so the 7 x 7 kernel smooths nothing and PHM
  degenerates to exact-offset counting (measured with benchmarks/positive_pairs.py: DEVELOPERS.md).
- kernel_size, kernel_sigma: the discretised Gaussian p(m_g|x); 7 and 7 / (2 * 2.354) (hpf
  `geometry.gaussian2d(7)`: a full width at half maximum of half the side).
"""

from __future__ import annotations

from typing import Any

import torch

from core.errors import UserError
from pretrain.matching import phm_match
from pretrain.methods import register
from pretrain.methods.densecl import DenseCL


@register("houghcl")
class HoughCL(DenseCL):
    def __init__(self, arch: str, cfg: dict[str, Any]) -> None:
        super().__init__(arch, cfg)
        hough = cfg["houghcl"]
        self.appearance_power: float = hough["appearance_power"]
        self.offset_bins: int = hough["offset_bins"]
        self.kernel_size: int = hough["kernel_size"]
        self.kernel_sigma: float = hough["kernel_sigma"]
        if self.kernel_size % 2 == 0:
            # An even kernel has no centre bin: the smoothed votes would be shifted by half a bin.
            raise UserError(f"pretrain.houghcl.kernel_size must be odd, got {self.kernel_size}")

    def match(self, query_map: torch.Tensor, key_map: torch.Tensor) -> torch.Tensor:
        return phm_match(query_map, key_map, grid=query_map.shape[-1], appearance_power=self.appearance_power,
                         offset_bins=self.offset_bins, kernel_size=self.kernel_size, kernel_sigma=self.kernel_sigma)
