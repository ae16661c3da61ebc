"""Fine-tune Faster R-CNN C4 on VOC07+12 trainval and evaluate on VOC07 test (MoCo's protocol)."""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_pascal_voc
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import PascalVOCDetectionEvaluator
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from core.errors import UserError
from core.io import write_json
from core.provenance import config_hash, provenance
from finetune.common import check_resumable, parse_protocol_json
from finetune.detection import roi_heads  # noqa: F401  (registers Res5ROIHeadsExtraNorm)
from finetune.detection.convert import DEPTHS, read_arch

CONFIG = Path(__file__).with_name("configs") / "voc_c4_bn.yaml"
PROTOCOL_KEYS = frozenset(
    {
        "max_iter",
        "steps",
        "warmup_iters",
        "base_lr",
        "ims_per_batch",
        "min_size_train",
        "max_size_train",
        "min_size_test",
        "max_size_test",
        "rpn_pre_nms_topk_test",
        "rpn_post_nms_topk_test",
        "roi_batch_size_per_image",
        "checkpoint_period",
        "precise_bn_iters",
    }
)
# (year, split) of MoCo's DATASETS: TRAIN voc_2007_trainval + voc_2012_trainval, TEST voc_2007_test.
_TRAIN_SPLITS = ((2007, "trainval"), (2012, "trainval"))
_TEST_SPLIT = (2007, "test")
_METRICS = ("AP", "AP50", "AP75")

logger = logging.getLogger(__name__)


def parse_protocol(text: str) -> dict[str, Any]:
    return parse_protocol_json(text, PROTOCOL_KEYS, "voc_detection")


def register_voc(voc_root: Path) -> tuple[tuple[str, ...], str]:
    """Register VOC07+12 trainval and VOC07 test of `voc_root`; return (train names, test name).

    Names carry a hash of the root, so one process can hold datasets of several roots.
    """
    tag = hashlib.sha256(str(voc_root.resolve()).encode()).hexdigest()[:8]
    names = {}
    for year, split in (*_TRAIN_SPLITS, _TEST_SPLIT):
        dirname = voc_root / f"VOC{year}"
        image_set = dirname / "ImageSets" / "Main" / f"{split}.txt"
        if not image_set.is_file():
            raise UserError(
                f"{image_set} is missing; --voc-root must be a VOCdevkit folder with VOC2007 and VOC2012 "
                "(build one with `python -m prepare voc`)."
            )
        name = names[year, split] = f"densebench_voc_{year}_{split}_{tag}"
        if name not in DatasetCatalog.list():
            register_pascal_voc(name, str(dirname), split, year)
    return tuple(names[key] for key in _TRAIN_SPLITS), names[_TEST_SPLIT]


def build_cfg(
    protocol: dict[str, Any],
    *,
    arch: str,
    weights: str | None,
    train_datasets: tuple[str, ...],
    test_dataset: str,
    seed: int,
    device: str,
    output_dir: Path,
) -> CfgNode:
    """The frozen Detectron2 config: configs/voc_c4_bn.yaml plus the run's settings."""
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.MODEL.RESNETS.DEPTH = DEPTHS[arch]
    if DEPTHS[arch] < 50:
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64  # BasicBlock ResNets are 64 wide at res2
    # BN statistics must be synchronised across processes, as MoCo's naiveSyncBN; SyncBN fails single-process.
    cfg.MODEL.RESNETS.NORM = "SyncBN" if comm.get_world_size() > 1 else "BN"
    cfg.MODEL.WEIGHTS = weights or ""
    cfg.MODEL.DEVICE = device
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = protocol["rpn_pre_nms_topk_test"]
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = protocol["rpn_post_nms_topk_test"]
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = protocol["roi_batch_size_per_image"]
    cfg.DATASETS.TRAIN = train_datasets
    cfg.DATASETS.TEST = (test_dataset,)
    if device == "cpu":
        cfg.DATALOADER.NUM_WORKERS = 0  # augmentation in the seeded main process: same seed, same run
    cfg.INPUT.MIN_SIZE_TRAIN = tuple(protocol["min_size_train"])
    cfg.INPUT.MAX_SIZE_TRAIN = protocol["max_size_train"]
    cfg.INPUT.MIN_SIZE_TEST = protocol["min_size_test"]
    cfg.INPUT.MAX_SIZE_TEST = protocol["max_size_test"]
    cfg.SOLVER.MAX_ITER = protocol["max_iter"]
    cfg.SOLVER.STEPS = tuple(protocol["steps"])
    cfg.SOLVER.WARMUP_ITERS = protocol["warmup_iters"]
    cfg.SOLVER.BASE_LR = protocol["base_lr"]
    cfg.SOLVER.IMS_PER_BATCH = protocol["ims_per_batch"]
    cfg.SOLVER.CHECKPOINT_PERIOD = protocol["checkpoint_period"]
    # Base-RCNN-C4-BN enables precise BN over Detectron2's default 200 batches; 0 turns it off.
    cfg.TEST.PRECISE_BN.ENABLED = protocol["precise_bn_iters"] > 0
    cfg.TEST.PRECISE_BN.NUM_ITER = protocol["precise_bn_iters"]
    cfg.SEED = seed
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.freeze()
    return cfg


class VOCTrainer(DefaultTrainer):
    """DefaultTrainer evaluating with the PASCAL VOC metric (AP, AP50, AP75)."""

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str) -> PascalVOCDetectionEvaluator:
        return PascalVOCDetectionEvaluator(dataset_name)


def _divergence(err: BaseException | None) -> FloatingPointError | None:
    """Detectron2's non-finite loss/prediction error (FloatingPointError) behind `err`, if any.

    It may come chained: when it fires in the precise-BN hook, fvcore leaves hooks behind and a
    later hook fails with an AssertionError raised while handling it.
    """
    while err is not None and not isinstance(err, FloatingPointError):
        err = err.__cause__ or err.__context__
    return err


def run(
    *,
    voc_root: Path,
    weights: Path | None,
    arch: str,
    protocol: dict[str, Any],
    seed: int,
    threads: int,
    device: str,
    out: Path,
) -> dict[str, Any]:
    """Train, evaluate and write `out`/metrics.json (last, atomically); return what it holds."""
    if weights is not None:
        weights_arch = read_arch(weights)
        if weights_arch not in (None, arch):
            raise UserError(
                f"{weights} holds a {weights_arch} backbone but --arch is {arch}; pass --arch {weights_arch}."
            )
    torch.set_num_threads(threads)
    work_dir = out / "work"
    work_dir.mkdir(parents=True, exist_ok=True)
    for name in ("detectron2", "finetune"):
        setup_logger(str(work_dir), distributed_rank=comm.get_rank(), name=name)

    train_datasets, test_dataset = register_voc(voc_root)
    weights_str = None if weights is None else str(weights)
    cfg = build_cfg(
        protocol,
        arch=arch,
        weights=weights_str,
        train_datasets=train_datasets,
        test_dataset=test_dataset,
        seed=seed,
        device=device,
        output_dir=work_dir,
    )
    run_key = config_hash(
        {"protocol": protocol, "seed": seed, "weights": weights_str, "arch": arch, "voc": str(voc_root)}
    )
    check_resumable(work_dir, run_key, has_checkpoint=(work_dir / "last_checkpoint").is_file())
    seed_all_rng(seed)  # before building the model: its initialisation draws from the RNGs
    trainer = VOCTrainer(cfg)
    trainer.resume_or_load(resume=True)
    if trainer.start_iter > 0:
        logger.info("resuming from iteration %d", trainer.start_iter)
    try:
        trainer.train()
    except Exception as err:
        divergence = _divergence(err)
        if divergence is None:
            raise
        raise UserError(
            f"training diverged ({divergence}); lower base_lr (now {protocol['base_lr']}) or raise warmup_iters in the "
            f"protocol, then delete {work_dir} and rerun."
        ) from err

    # Set by DefaultTrainer's final EvalHook; train() returns it only when TEST.EXPECTED_RESULTS is set.
    metrics = {key: float(trainer._last_eval_results["bbox"][key]) for key in _METRICS}
    if not all(math.isfinite(value) for value in metrics.values()):
        raise UserError(f"VOC evaluation gave non-finite metrics {metrics}; check the test annotations of {voc_root}.")
    summary = {
        "protocol": "voc_detection",
        "metrics": metrics,
        "weights": weights_str,
        "iterations": protocol["max_iter"],
        "provenance": provenance(protocol, seed),
    }
    write_json(out / "metrics.json", summary)
    logger.info("VOC07 test: %s", ", ".join(f"{key} {value:.2f}" for key, value in metrics.items()))
    return summary
