"""Semantic segmentation transfer with mmsegmentation: FCN / DeepLabV3-ASPP heads on VOC 2012 or Cityscapes,
fine-tuned or on a frozen backbone (one launcher, `python -m finetune segmentation`)."""
