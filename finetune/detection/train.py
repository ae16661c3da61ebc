"""Fine-tune a Detectron2 detector from a pretrained backbone and evaluate it: one launcher for
every detection protocol (VOC Faster R-CNN C4/FPN, COCO Mask R-CNN C4/FPN, RetinaNet, Keypoint
R-CNN, mini-COCO subsets, frozen-backbone variants). The protocol JSON picks the model and dataset."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer, HookBase
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from core.errors import UserError
from core.io import write_json
from core.preemption import StopRequest
from core.provenance import config_hash, provenance
from finetune.common import check_resumable, keep_final_weights, parse_protocol_json
from finetune.detection import (
    datasets,
    roi_heads,  # noqa: F401  (registers Res5ROIHeadsExtraNorm)
)
from finetune.detection.convert import DEPTHS, read_arch
from finetune.detection.preemption import PreemptionHook
from finetune.detection.stream import IterationSeed, ResumableTrainStream

CONFIGS = Path(__file__).with_name("configs")
# model -> the datasets it can be trained on (its config file is configs/<model>.yaml).
MODELS = {
    "faster_rcnn_c4": ("voc", "coco"),
    "faster_rcnn_fpn": ("voc", "coco"),
    "retinanet_fpn": ("voc", "coco"),
    "mask_rcnn_c4": ("coco",),
    "mask_rcnn_fpn": ("coco",),
    "keypoint_rcnn_fpn": ("coco_keypoints",),
}
PROTOCOL_KEYS = frozenset(
    {
        "model",
        "dataset",
        "frozen_backbone",
        "max_iter",
        "steps",
        "warmup_iters",
        "base_lr",
        "ims_per_batch",
        "min_size_train",
        "max_size_train",
        "min_size_test",
        "max_size_test",
        "detections_per_image",
        "checkpoint_period",
        "precise_bn_iters",
        "eval_images",
    }
)
# Proposal-based models only: RetinaNet has neither an RPN nor sampled RoIs.
RCNN_KEYS = frozenset({"rpn_pre_nms_topk_test", "rpn_post_nms_topk_test", "roi_batch_size_per_image"})
# Every norm the configs set to "BN"; all become SyncBN on several processes (MoCo's naiveSyncBN).
_NORM_KEYS = (("RESNETS", "NORM"), ("FPN", "NORM"), ("ROI_BOX_HEAD", "NORM"), ("ROI_MASK_HEAD", "NORM"))
# Detectron2's result task -> the metrics.json names (AP^b, AP^m, AP^kp of the papers' tables).
_METRICS = {"bbox": "AP", "segm": "APm", "keypoints": "APkp"}

logger = logging.getLogger(__name__)


def parse_protocol(text: str) -> dict[str, Any]:
    """--protocol-json: the common keys, plus RCNN_KEYS for proposal-based models; UserError otherwise."""
    try:
        model = json.loads(text).get("model")
    except (json.JSONDecodeError, AttributeError):
        model = None  # parse_protocol_json reports the malformed JSON
    keys = PROTOCOL_KEYS | (RCNN_KEYS if model != "retinanet_fpn" else frozenset())
    protocol = parse_protocol_json(text, keys, "<detection protocol>")
    if protocol["model"] not in MODELS:
        raise UserError(f"unknown detection model {protocol['model']!r}; choose one of {sorted(MODELS)}.")
    if protocol["dataset"] not in MODELS[protocol["model"]]:
        raise UserError(
            f"{protocol['model']} cannot train on dataset {protocol['dataset']!r}; "
            f"it takes {list(MODELS[protocol['model']])}."
        )
    eval_images = protocol["eval_images"]
    if eval_images is not None and (isinstance(eval_images, bool) or not isinstance(eval_images, int)
                                    or eval_images < 1):
        raise UserError(f"protocol eval_images must be null (the whole test set) or an integer >= 1, "
                        f"got {eval_images!r}.")
    if protocol["frozen_backbone"] and protocol["model"].endswith("_c4"):
        raise UserError(
            "frozen_backbone needs an FPN model (C4 trains res5 inside its box head); LC-loss Table 4 freezes "
            "Faster R-CNN FPN and RetinaNet backbones."
        )
    return protocol


def build_cfg(
    protocol: dict[str, Any],
    *,
    arch: str,
    weights: str | None,
    data: datasets.Registered,
    seed: int,
    device: str,
    output_dir: Path,
) -> CfgNode:
    """The frozen Detectron2 config: configs/<model>.yaml plus the run's settings."""
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / f"{protocol['model']}.yaml"))
    cfg.MODEL.RESNETS.DEPTH = DEPTHS[arch]
    if DEPTHS[arch] < 50:
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64  # BasicBlock ResNets are 64 wide at res2
    if comm.get_world_size() > 1:  # SyncBN fails single-process
        for section, key in _NORM_KEYS:
            if cfg.MODEL[section][key] == "BN":
                cfg.MODEL[section][key] = "SyncBN"
    if protocol["frozen_backbone"]:
        # LC-loss Table 4: the pretrained ResNet frozen (stem + res2-res5, BN as FrozenBN), the rest trained.
        cfg.MODEL.BACKBONE.FREEZE_AT = 5
    if protocol["dataset"] != "coco_keypoints":  # keypoint_rcnn_fpn.yaml sets its single class
        num_classes = len(MetadataCatalog.get(data.test).thing_classes)
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = cfg.MODEL.RETINANET.NUM_CLASSES = num_classes
    cfg.MODEL.WEIGHTS = weights or ""
    cfg.MODEL.DEVICE = device
    if protocol["model"] != "retinanet_fpn":
        cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = protocol["rpn_pre_nms_topk_test"]
        cfg.MODEL.RPN.POST_NMS_TOPK_TEST = protocol["rpn_post_nms_topk_test"]
        cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = protocol["roi_batch_size_per_image"]
    cfg.DATASETS.TRAIN = data.train
    cfg.DATASETS.TEST = (data.test,)
    if device == "cpu":
        cfg.DATALOADER.NUM_WORKERS = 0  # augmentation in the seeded main process: same seed, same run
    cfg.INPUT.MIN_SIZE_TRAIN = tuple(protocol["min_size_train"])
    cfg.INPUT.MAX_SIZE_TRAIN = protocol["max_size_train"]
    cfg.INPUT.MIN_SIZE_TEST = protocol["min_size_test"]
    cfg.INPUT.MAX_SIZE_TEST = protocol["max_size_test"]
    cfg.TEST.DETECTIONS_PER_IMAGE = protocol["detections_per_image"]
    cfg.SOLVER.MAX_ITER = protocol["max_iter"]
    cfg.SOLVER.STEPS = tuple(protocol["steps"])
    cfg.SOLVER.WARMUP_ITERS = protocol["warmup_iters"]
    cfg.SOLVER.BASE_LR = protocol["base_lr"]
    cfg.SOLVER.IMS_PER_BATCH = protocol["ims_per_batch"]
    cfg.SOLVER.CHECKPOINT_PERIOD = protocol["checkpoint_period"]
    # base_bn.yaml enables precise BN over Detectron2's default 200 batches; 0 turns it off.
    cfg.TEST.PRECISE_BN.ENABLED = protocol["precise_bn_iters"] > 0
    cfg.TEST.PRECISE_BN.NUM_ITER = protocol["precise_bn_iters"]
    cfg.SEED = seed
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.freeze()
    return cfg


# Detectron2 < 0.6 checkpoints leave out the optimizer state (SGD momentum), so a resumed run restarted it
# from zero; later versions save and load it under "_trainer" themselves.
_SAVES_OPTIMIZER = "state_dict" in vars(DefaultTrainer)


class TransferTrainer(DefaultTrainer):
    """DefaultTrainer evaluating with each dataset's own metric (VOC AP or COCO AP), whose checkpoints hold
    the optimizer state on every Detectron2 version, and whose training stream resumes where it stopped."""

    @classmethod
    def build_train_loader(cls, cfg: CfgNode) -> ResumableTrainStream:
        return ResumableTrainStream(cfg)

    def build_hooks(self) -> list[HookBase]:
        return [IterationSeed(self.cfg.SEED), *super().build_hooks()]

    def resume_or_load(self, resume: bool = True) -> None:
        super().resume_or_load(resume=resume)
        self._trainer.data_loader.start_iter = self.start_iter  # before its first batch is drawn

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str) -> DatasetEvaluator:
        tasks = ("bbox",) + ("segm",) * cfg.MODEL.MASK_ON + ("keypoints",) * cfg.MODEL.KEYPOINT_ON
        return datasets.build_evaluator(dataset_name, tasks, cfg.OUTPUT_DIR)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.setdefault("_trainer", self._trainer.state_dict())  # as Detectron2 >= 0.6 does
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if not _SAVES_OPTIMIZER and "_trainer" in state_dict:  # checkpoints from before this fix lack it
            self._trainer.load_state_dict(state_dict["_trainer"])


def _metrics(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """AP, AP50, AP75 of each task, under the names of _METRICS.

    COCOEvaluator gives NaN for a task with no detection above the score threshold (a detector
    fine-tuned for a few smoke iterations): that is an AP of 0.
    """
    metrics = {}
    for task, prefix in _METRICS.items():
        for suffix in ("", "50", "75"):
            if task in results:
                value = float(results[task][f"AP{suffix}"])
                metrics[f"{prefix}{suffix}"] = 0.0 if math.isnan(value) else value
    if any(math.isnan(float(results[task]["AP"])) for task in results):
        logger.warning("no detections above the test score threshold for some task: its AP is reported as 0")
    return metrics


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
    name: str,
    data_root: Path,
    train_json: Path | None,
    weights: Path | None,
    arch: str,
    protocol: dict[str, Any],
    seed: int,
    threads: int,
    device: str,
    out: Path,
    keep_checkpoints: bool = False,
) -> dict[str, Any] | None:
    """Train, evaluate and write `out`/metrics.json (last, atomically); return what it holds (None on the
    ranks other than 0 of a distributed run).

    Unless `keep_checkpoints`, the work dir then keeps only the final weights (`keep_final_weights`). On a
    stop signal (core.preemption), training saves a resume checkpoint and exits with 128 + signal number.
    """
    if weights is not None:
        weights_arch = read_arch(weights)
        if weights_arch not in (None, arch):
            raise UserError(
                f"{weights} holds a {weights_arch} backbone but --arch is {arch}; pass --arch {weights_arch}."
            )
    torch.set_num_threads(threads)
    work_dir = out / "work"
    work_dir.mkdir(parents=True, exist_ok=True)
    for logger_name in ("detectron2", "finetune"):
        setup_logger(str(work_dir), distributed_rank=comm.get_rank(), name=logger_name)

    data = datasets.register(protocol["dataset"], data_root, train_json, protocol["eval_images"], work_dir)
    weights_str = None if weights is None else str(weights)
    cfg = build_cfg(protocol, arch=arch, weights=weights_str, data=data, seed=seed, device=device,
                    output_dir=work_dir)
    run_key = config_hash(
        {"protocol": protocol, "seed": seed, "weights": weights_str, "arch": arch, "data": str(data_root),
         "train_json": None if train_json is None else str(train_json)}
    )
    check_resumable(work_dir, run_key, has_checkpoint=(work_dir / "last_checkpoint").is_file())
    seed_all_rng(seed)  # before building the model: its initialisation draws from the RNGs
    trainer = TransferTrainer(cfg)
    trainer.resume_or_load(resume=True)
    if trainer.start_iter > 0:
        logger.info("resuming from iteration %d", trainer.start_iter)
    with StopRequest() as stop:
        trainer.register_hooks([PreemptionHook(stop)])
        try:
            trainer.train()
        except Exception as err:
            divergence = _divergence(err)
            if divergence is None:
                raise
            raise UserError(
                f"training diverged ({divergence}); lower base_lr (now {protocol['base_lr']}) or raise warmup_iters "
                f"in the protocol, then delete {work_dir} and rerun."
            ) from err
    if not comm.is_main_process():
        return None  # the evaluators gather the results on rank 0, which writes the outputs

    # Set by DefaultTrainer's final EvalHook; train() returns it only when TEST.EXPECTED_RESULTS is set.
    metrics = _metrics(trainer._last_eval_results)
    if not metrics or not all(math.isfinite(value) for value in metrics.values()):
        raise UserError(f"evaluation gave no finite metrics ({metrics}); check the test annotations under {data_root}.")
    summary = {
        "protocol": name,
        "model": protocol["model"],
        "dataset": protocol["dataset"],
        "frozen_backbone": protocol["frozen_backbone"],
        "metrics": metrics,
        "weights": weights_str,
        "iterations": protocol["max_iter"],
        "provenance": provenance(protocol, seed),
    }
    write_json(out / "metrics.json", summary)
    if not keep_checkpoints:
        # The checkpointer holds the model unwrapped from DistributedDataParallel.
        keep_final_weights(work_dir, trainer.checkpointer.model.state_dict(), "model", "model_*.pth")
    logger.info("%s: %s", name, ", ".join(f"{key} {value:.2f}" for key, value in metrics.items()))
    return summary
