"""GPU-hours of one dry-run job: its work (read from the printed shell command) over a published rate.

Per GPU rule (see workflow/rules/*.smk for the command lines read here):
- pretrain_run: epochs x images of the image set / images-per-second-per-GPU, scaled by view size;
- detection_transfer: iterations x seconds per iteration on the model zoo's 8 GPUs, scaled by batch size;
- segmentation_transfer: iterations x batch x GPU-seconds per image, scaled by crop pixels;
- frozen_feature_eval, alignment_uniformity: images forwarded / forward rate, scaled by pixels.
GPU-hours assume throughput scales linearly with the GPU count (the published numbers are per GPU or for
a fixed GPU count). Jobs without GPUs count 0 GPU-hours; their runtime x cores is an upper bound on CPU time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cluster.jobs import Job
from cluster.throughput import Entry, Throughput
from core.errors import UserError

CPU_SOURCE = "CPU job: requested runtime x cores, an upper bound"
# Weakest first: a number derived from several entries is as good as its weakest input.
BASIS = ("estimate", "measured", "published")


@dataclass(frozen=True)
class JobPlan:
    output: str  # identifies the job (a job shared by several tables is counted once in their union)
    rule: str
    stage: str  # pretrain | transfer | frozen eval/probes | cpu
    kind: str  # the throughput entry family, e.g. "mocov2 resnet50 coco" or "voc_detection resnet50"
    gpus: int
    gpu_hours: float  # the estimate
    requested_gpu_hours: float  # runtime x GPUs: the wall-time bound asked of the scheduler
    cpu_core_hours: float  # CPU jobs only: runtime x cores (an upper bound)
    entries: tuple[Entry, ...] = ()  # the throughput entries the estimate used

    @property
    def source(self) -> str:
        """The throughput entries used, each with its kind (published, measured here, or estimate)."""
        return "; ".join(f"{entry.key} ({entry.kind})" for entry in self.entries) or CPU_SOURCE

    @property
    def basis(self) -> str:
        """The weakest kind among the entries used ("runtime bound" for CPU jobs)."""
        return min((entry.kind for entry in self.entries), key=BASIS.index, default="runtime bound")


Work = tuple[str, float, list[Entry]]  # (kind, GPU-seconds, entries used)


def _protocol(job: Job) -> dict[str, Any]:
    return json.loads(job.option("--protocol-json"))


def _pretrain(job: Job, tp: Throughput) -> Work:
    method, data = job.option("--method"), job.option("--data-name")
    cfg = json.loads(job.option("--config-json"))
    rate = tp.entry("pretrain", "images_per_s_per_gpu", method, cfg["arch"], needed_by=job.output)
    images = tp.entry("datasets", data, needed_by=job.output)
    reference = tp.entry("pretrain", "reference_size", needed_by=job.output)
    exponent = tp.entry("pretrain", "size_exponent", needed_by=job.output)
    seconds = cfg["epochs"] * images.value / rate.value * (cfg["image_size"] / reference.value) ** exponent.value
    return f"{method} {cfg['arch']} {data}", seconds, [rate, images, reference, exponent]


def _detection(job: Job, tp: Throughput) -> Work:
    protocol, arch = _protocol(job), job.option("--arch")
    s_per_iter = tp.entry("detection", "s_per_iter", protocol["model"], needed_by=job.output)
    gpus = tp.entry("detection", "reference_gpus", needed_by=job.output)
    batch = tp.entry("detection", "reference_ims_per_batch", needed_by=job.output)
    factors = [tp.entry("arch_factor", arch, needed_by=job.output)]
    if not protocol["frozen_backbone"]:
        factors.append(tp.entry("detection", "syncbn_factor", needed_by=job.output))
    seconds = protocol["max_iter"] * s_per_iter.value * gpus.value * protocol["ims_per_batch"] / batch.value
    for factor in factors:
        seconds *= factor.value
    return f"{job.wildcards['protocol']} {arch}", seconds, [s_per_iter, gpus, batch, *factors]


def _segmentation(job: Job, tp: Throughput) -> Work:
    protocol, arch = _protocol(job), job.option("--arch")
    per_image = tp.entry("segmentation", "gpu_s_per_image", protocol["head"], needed_by=job.output)
    pixels = tp.entry("segmentation", "reference_pixels", needed_by=job.output)
    factor = tp.entry("arch_factor", arch, needed_by=job.output)
    seconds = (protocol["max_iters"] * protocol["batch_size"] * per_image.value
               * protocol["crop_size"] ** 2 / pixels.value * factor.value)
    return f"{job.wildcards['protocol']} {arch}", seconds, [per_image, pixels, factor]


def _forward_seconds(job: Job, tp: Throughput, arch: str, images: float, pixels: float) -> tuple[float, list[Entry]]:
    """GPU-seconds to forward `images` images of `pixels` pixels through `arch`."""
    rate = tp.entry("frozen", "forward_images_per_s_per_gpu", needed_by=job.output)
    reference = tp.entry("frozen", "reference_pixels", needed_by=job.output)
    factor = tp.entry("arch_factor", arch, needed_by=job.output)
    return images * pixels / reference.value / rate.value * factor.value, [rate, reference, factor]


def _frozen_work(job: Job, tp: Throughput, task: str, protocol: dict[str, Any]) -> tuple[float, float, list[Entry]]:
    """(images forwarded, pixels per image, dataset entries) of a frozen-feature evaluation."""

    def data(key: str) -> Entry:
        return tp.entry("datasets", key, needed_by=job.output)

    if task == "linear_eval":  # the encoder sees augmented crops every epoch, then the test set once
        train, test = data("stl10_train"), data("stl10_heldout")
        return protocol["epochs"] * train.value + test.value, protocol["crop"] ** 2, [train, test]
    if task == "few_shot":  # upper bound: every episode's images distinct (features are cached per image)
        images = protocol["episodes"] * protocol["ways"] * (protocol["shots"] + protocol["queries"])
        return images, protocol["crop"] ** 2, []
    if task == "davis":
        frames, pixels = data("davis_val_frames"), data("davis_frame_pixels")
        return frames.value, pixels.value, [frames, pixels]
    if task == "segment_search":
        images, pixels = data("voc_segment_search_images"), data("voc_image_pixels")
        return images.value, pixels.value, [images, pixels]
    raise UserError(f"{job.output}: no work rule for frozen-feature task '{task}'; add one to "
                    "cluster/estimate.py _frozen_work.")


def _frozen_eval(job: Job, tp: Throughput) -> Work:
    argv = job.argv  # python -m finetune <task> ...
    task, arch = (argv[3] if len(argv) > 3 else "").replace("-", "_"), job.option("--arch")
    images, pixels, entries = _frozen_work(job, tp, task, _protocol(job))
    seconds, rates = _forward_seconds(job, tp, arch, images, pixels)
    return f"{job.wildcards['protocol']} {arch}", seconds, [*rates, *entries]


def _alignment_uniformity(job: Job, tp: Throughput) -> Work:
    arch, size = job.option("--arch"), int(job.option("--image-size"))
    if "--max-images" in job.argv:
        images, entries = int(job.option("--max-images")), []
    else:  # the whole held-out split of the image set (common.smk pretrain_image_list: heldout-<data>/images.txt)
        data = re.search(r"heldout-([^/]+)/images\.txt$", job.option("--image-list"))
        if data is None:
            raise UserError(f"{job.output}: --image-list {job.option('--image-list')} is not a held-out image list "
                            "(heldout-<data>/images.txt); update cluster/estimate.py _alignment_uniformity.")
        count = tp.entry("datasets", f"{data[1]}_heldout", needed_by=job.output)
        images, entries = count.value, [count]
    seconds, rates = _forward_seconds(job, tp, arch, 2 * images, size ** 2)  # two views per image
    return f"alignment_uniformity {arch}", seconds, [*rates, *entries]


ESTIMATORS: dict[str, tuple[str, Callable[[Job, Throughput], Work]]] = {
    "pretrain_run": ("pretrain", _pretrain),
    "detection_transfer": ("transfer", _detection),
    "segmentation_transfer": ("transfer", _segmentation),
    "frozen_feature_eval": ("frozen eval/probes", _frozen_eval),
    "alignment_uniformity": ("frozen eval/probes", _alignment_uniformity),
}


def plan_job(job: Job, tp: Throughput) -> JobPlan:
    """The estimate (GPU jobs) or the CPU upper bound (jobs without GPUs) of one job."""
    requested = job.runtime_minutes / 60 * job.gpus
    if not job.gpus:
        return JobPlan(job.output, job.rule, "cpu", job.rule, 0, 0.0, 0.0, job.runtime_minutes / 60 * job.cores)
    if job.rule not in ESTIMATORS:
        raise UserError(f"{job.output}: rule {job.rule} requests {job.gpus} GPUs but cluster/estimate.py has no "
                        "estimator for it; add one to ESTIMATORS.")
    stage, estimator = ESTIMATORS[job.rule]
    kind, seconds, entries = estimator(job, tp)
    return JobPlan(job.output, job.rule, stage, kind, job.gpus, seconds / 3600, requested, 0.0,
                   tuple(dict.fromkeys(entries)))
