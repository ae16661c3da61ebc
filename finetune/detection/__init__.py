"""VOC object detection transfer (Faster R-CNN C4, MoCo's protocol) on Detectron2."""

from finetune.detection import compat

# Before any submodule imports Detectron2: its modules use the patched names at import time.
compat.install()
