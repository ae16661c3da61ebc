"""Transfer protocols: checkpoint converters, Detectron2 detection, mmseg segmentation."""
