"""Object detection transfer on Detectron2: VOC and COCO detectors, converters, compatibility patches."""

from finetune.detection import compat

# Before any submodule imports Detectron2: its modules use the patched names at import time.
compat.install()
