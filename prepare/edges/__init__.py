"""Structured-forest edges (Dollár & Zitnick, TPAMI 2014) trained on BSDS500, run by OpenCV.

- `options`: the forest settings, under OpenCV's model-file names;
- `features`: the features OpenCV computes at inference, for training patches;
- `bsds`, `samples`: BSDS500 reading and the per-tree training samples;
- `forest`: growing one tree (structured labels, Gini splits, leaf edge patches);
- `opencv_model`: writing/reading/loading OpenCV's model.yml.gz;
- `train`: `python -m prepare edge-model` (resumable per tree);
- `detect`: edges, orientation and NMS through `cv2.ximgproc`;
- `reference`: a numpy re-implementation of OpenCV's inference, to check exported models.
"""
