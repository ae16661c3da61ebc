"""The structured-forest settings, under the names OpenCV's model file uses.

Defaults are Dollár & Zitnick's (TPAMI 2014; `edgesTrain.m` of the edges toolbox): 32 px image
patches predicting 16 px edge patches, channels shrunk 2x, 4 gradient orientations, smoothing radii
0 (gradients), 2 (regular channels), 8 (self-similarity channels), gradient normalisation radius 4,
a 5x5 self-similarity grid, 8 trees with 4 evaluated per location, stride 2.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SEOptions:
    """The `options` node of an OpenCV structured-edge model (all ints, as OpenCV reads them)."""

    stride: int = 2
    shrinkNumber: int = 2  # camelCase: OpenCV's node names, kept verbatim
    patchSize: int = 32
    patchInnerSize: int = 16
    numberOfGradientOrientations: int = 4
    gradientSmoothingRadius: int = 0
    regFeatureSmoothingRadius: int = 2
    ssFeatureSmoothingRadius: int = 8
    gradientNormalizationRadius: int = 4
    selfsimilarityGridSize: int = 5
    numberOfTrees: int = 8
    numberOfTreesToEvaluate: int = 4

    # Derived quantities, as OpenCV's loader and predictEdges derive them.
    @property
    def n_channels(self) -> int:
        """Feature channels: LUV (3) + (magnitude + orientations) at 2 scales."""
        return 2 * (self.numberOfGradientOrientations + 1) + 3

    @property
    def padding(self) -> int:
        """Reflect padding added around the image before computing channels."""
        return (self.patchSize - self.patchInnerSize) // 2

    @property
    def shrunk_patch(self) -> int:
        """Side of a feature patch in channel pixels (16 by default)."""
        return self.patchSize // self.shrinkNumber

    @property
    def n_regular(self) -> int:
        """Regular (pixel lookup) features: one per channel pixel of the patch."""
        return self.shrunk_patch**2 * self.n_channels

    @property
    def n_self_similarity(self) -> int:
        """Self-similarity features: one per pair of grid cells, per channel."""
        cells = self.selfsimilarityGridSize**2
        return cells * (cells - 1) // 2 * self.n_channels

    @property
    def n_features(self) -> int:
        return self.n_regular + self.n_self_similarity

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)
