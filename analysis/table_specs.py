"""What each generated paper table shows: its columns as `<source>/<metric>` keys.

A source is a transfer protocol (`finetune.protocols.<name>`) or an analysis probe
(`analysis.probes.<name>`); the metric is a key of its metrics.json. The DAG builds a table from the
sources the active config defines and leaves the other columns out (never invented). Tables 2, 3 and
13 have their own layouts (`table2.py`, `table3.py`, `table13.py`). Table 12's rows are the ablation
variants (`pretrain.ablations`, keys `<method>/<variant>`), each scored by its method's `evaluate`.
Imported by the Snakemake workflow (common.smk): keep it free of heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TableSpec:
    title: str
    mirrors: str  # the papers' tables it reproduces
    columns: tuple[str, ...]
    digits: int = 2  # decimals shown in the Markdown (the CSV keeps 4)


def _cols(source: str, *metrics: str) -> tuple[str, ...]:
    return tuple(f"{source}/{metric}" for metric in metrics)


FEW_SHOT = ("few_shot", "few_shot_eurosat", "few_shot_cropdisease", "few_shot_chestx", "few_shot_isic",
            "few_shot_sketch", "few_shot_dtd", "few_shot_omniglot")

TABLES: dict[int, TableSpec] = {
    1: TableSpec("Table 1: main transfer benchmark",
                 "HoughCL Tab. 1-2; LC-loss Tab. 1-3; D3SSL Tab. 1; BMVC'22 (R18-C4 VOC)",
                 _cols("voc_detection", "AP", "AP50", "AP75") + _cols("voc_detection_fpn", "AP", "AP50")
                 + _cols("coco_instance_fpn", "AP", "APm") + _cols("coco_instance_c4", "AP", "APm")
                 + _cols("coco_retinanet", "AP") + _cols("voc_segmentation", "mIoU")
                 + _cols("cityscapes_segmentation", "mIoU")),
    4: TableSpec("Table 4: O-KNN and disturbed O-KNN", "D3SSL Tab. 4",
                 _cols("object_knn", "OKNN_top1", "OKNN_top5", "DOKNN_top1", "DOKNN_top5")),
    5: TableSpec("Table 5: coupling rate and mean cosine similarity per stage", "D3SSL Fig. 3b / 4b",
                 _cols("coupling", "CR_C2", "CR_C3", "CR_C4", "CR_C5", "MCS_C2", "MCS_C3", "MCS_C4", "MCS_C5"),
                 digits=4),  # ratios near 1: the papers' CR is 1.17-1.33
    6: TableSpec("Table 6: frozen-backbone transfer", "LC-loss Tab. 4; BMVC'22 Tab. 1-2 (linear evaluation)",
                 _cols("voc_detection_fpn_frozen", "AP", "AP50") + _cols("coco_retinanet_frozen", "AP")
                 + _cols("voc_segmentation_frozen", "mIoU") + _cols("cityscapes_segmentation_frozen", "mIoU")
                 + _cols("linear_eval", "top1", "top5")),
    7: TableSpec("Table 7: few-shot classification (5-way 5-shot)", "LC-loss Tab. 7",
                 tuple(f"{name}/top1" for name in FEW_SHOT)),
    8: TableSpec("Table 8: COCO keypoint detection", "LC-loss Tab. 8",
                 _cols("coco_keypoints", "APkp", "APkp50", "APkp75", "AP")),
    9: TableSpec("Table 9: mini-COCO (5 % and 10 % of train2017)", "LC-loss Tab. 9",
                 _cols("coco_mini5_instance_fpn", "AP", "APm") + _cols("coco_mini10_instance_fpn", "AP", "APm")),
    10: TableSpec("Table 10: hierarchical-grouping evaluations", "Hierarchical grouping Tab. 1-3",
                  _cols("voc_aspp_frozen", "mIoU") + _cols("segment_search", "mIoU")
                  + _cols("davis", "J_mean", "F_mean", "JF_mean")),
    11: TableSpec("Table 11: correspondence and positive-pair accuracy", "LC-loss Sec. 4.6; HoughCL Fig. 1",
                  _cols("correspondence", "correspondence_acc", "pair_acc", "pair_acc_phm")),
    12: TableSpec("Table 12: ablations", "D3SSL Tab. 5-7; LC-loss Fig. 3b; hierarchical grouping Tab. 1, 3 (cns)",
                  _cols("voc_detection", "AP", "AP50", "AP75") + _cols("voc_detection_fpn", "AP")
                  + _cols("coupling", "CR_C5", "MCS_C5") + _cols("voc_aspp_frozen", "mIoU")
                  + _cols("davis", "J_mean", "F_mean")),
}
ABLATION_TABLE = 12  # rows: the ablation variants, not the table rows


def sources_of(number: int) -> list[str]:
    """The sources (protocols or probes) table `number` reads, in column order."""
    return list(dict.fromkeys(column.split("/")[0] for column in TABLES[number].columns))
