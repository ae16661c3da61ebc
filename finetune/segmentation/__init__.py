"""Semantic segmentation transfer: FCN on PASCAL VOC 2012 with mmsegmentation."""
