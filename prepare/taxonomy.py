"""Class vocabularies: the 80 COCO categories (real ids), COCO person keypoints, the 20 VOC classes."""

from __future__ import annotations

from typing import Any

# COCO ids are not contiguous (1..90 with gaps); they are grouped by supercategory in id order,
# so this nesting reproduces the official `categories` list order exactly.
_COCO_BY_SUPERCATEGORY: tuple[tuple[str, tuple[tuple[int, str], ...]], ...] = (
    ("person", ((1, "person"),)),
    ("vehicle", ((2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"), (7, "train"),
                 (8, "truck"), (9, "boat"))),
    ("outdoor", ((10, "traffic light"), (11, "fire hydrant"), (13, "stop sign"), (14, "parking meter"),
                 (15, "bench"))),
    ("animal", ((16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"), (21, "cow"),
                (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"))),
    ("accessory", ((27, "backpack"), (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"))),
    ("sports", ((34, "frisbee"), (35, "skis"), (36, "snowboard"), (37, "sports ball"), (38, "kite"),
                (39, "baseball bat"), (40, "baseball glove"), (41, "skateboard"), (42, "surfboard"),
                (43, "tennis racket"))),
    ("kitchen", ((44, "bottle"), (46, "wine glass"), (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"),
                 (51, "bowl"))),
    ("food", ((52, "banana"), (53, "apple"), (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"),
              (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"))),
    ("furniture", ((62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"),
                   (70, "toilet"))),
    ("electronic", ((72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"),
                    (77, "cell phone"))),
    ("appliance", ((78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"), (82, "refrigerator"))),
    ("indoor", ((84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"),
                (89, "hair drier"), (90, "toothbrush"))),
)

COCO_CATEGORIES: tuple[dict[str, Any], ...] = tuple(
    {"supercategory": supercategory, "id": cat_id, "name": name}
    for supercategory, members in _COCO_BY_SUPERCATEGORY
    for cat_id, name in members
)
COCO_ID_BY_NAME: dict[str, int] = {cat["name"]: cat["id"] for cat in COCO_CATEGORIES}

# The COCO person category of person_keypoints_*.json; skeleton indices are 1-based, as in COCO.
PERSON_KEYPOINTS: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
PERSON_SKELETON: tuple[tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9), (8, 10),
    (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)

# PASCAL VOC class order (index 1..20 in SegmentationClass PNGs; 0 is background).
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
# Only names that differ between the two vocabularies; the other VOC names are COCO names as-is.
_VOC_RENAMED_FROM_COCO: dict[str, str] = {
    "airplane": "aeroplane", "dining table": "diningtable", "motorcycle": "motorbike",
    "potted plant": "pottedplant", "couch": "sofa", "tv": "tvmonitor",
}
VOC_NAME_BY_COCO_ID: dict[int, str] = {
    COCO_ID_BY_NAME[coco_name]: voc_name
    for coco_name, voc_name in (
        *_VOC_RENAMED_FROM_COCO.items(),
        *((name, name) for name in VOC_CLASSES if name not in _VOC_RENAMED_FROM_COCO.values()),
    )
}
