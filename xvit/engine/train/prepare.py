"""Everything checked before a training run writes anything: data location (generating the
synthetic benchmark once), datasets, labels, model options, pretrained and resume checkpoints,
autocast dtype and CPU threads. ``prepare(cfg, dist) -> Prepared`` is what ``Trainer`` starts from.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from xvit.data.cache import build_frame_cache
from xvit.data.datasets import build_dataset
from xvit.data.synthetic import FLIP_LABEL_MAP, REVERSED_PAIRS, ensure_synthetic, task_of
from xvit.data.video import check_decoder
from xvit.engine import distributed as xdist
from xvit.engine.config import Config
from xvit.engine.eval.metrics import resolve_pairs
from xvit.engine.runtime import available_cores, resolve_dtype
from xvit.engine.train.resume import check_resume, find_resume
from xvit.errors import UserError
from xvit.models import create_model
from xvit.models.weights import resolve_weights

log = logging.getLogger("xvit.train")


@dataclass
class Prepared:
    """What ``prepare`` built and checked."""

    cfg: Config
    data: dict  # resolved data location: format, root, train/val annotations, class_names, flip map
    train_set: Dataset
    val_set: Dataset | None
    num_classes: int
    class_names: list[str]
    model: nn.Module
    steps_per_epoch: int
    resume: tuple[Path, Path] | None  # (weights, state) to continue from
    amp_dtype: torch.dtype | None
    pairs: list[tuple[int, int]]  # label pairs that are time reversals (pair order accuracy)


def prepare(cfg: Config, dist: xdist.DistInfo) -> Prepared:
    """Resolve and check data, labels, model, resume checkpoint; write nothing into ``run_dir``."""
    amp_dtype = resolve_amp(cfg.train.amp, dist.device)
    data, train_set, val_set, num_classes, class_names = prepare_data(cfg, dist)
    global_batch = cfg.train.batch_size * dist.world_size * cfg.train.accum_steps
    steps_per_epoch = len(train_set) // (cfg.train.batch_size * dist.world_size) // cfg.train.accum_steps
    if steps_per_epoch < 1:
        raise UserError(
            f"the training set has {len(train_set)} videos, fewer than one global batch of {global_batch} "
            f"(train.batch_size={cfg.train.batch_size} x {dist.world_size} processes x "
            f"train.accum_steps={cfg.train.accum_steps}); lower train.batch_size"
        )
    resume = find_resume(cfg.train.resume, cfg.run_dir)
    if resume is not None:
        check_resume(resume, cfg, num_classes, global_batch)
    model = build_model(cfg, num_classes, pretrained=None if resume else cfg.model.pretrained)
    attach_frame_cache(cfg, dist, train_set, val_set)
    pairs = resolve_pairs(cfg.eval.reversed_pairs or data.get("reversed_pairs") or [], class_names)
    return Prepared(
        cfg, data, train_set, val_set, num_classes, class_names, model, steps_per_epoch, resume, amp_dtype, pairs
    )


def prepare_data(cfg: Config, dist: xdist.DistInfo) -> tuple[dict, Dataset, Dataset | None, int, list[str]]:
    """The decoder checked, the data located (the synthetic set generated once), the datasets built
    and their labels checked: (data, train set, val set, number of classes, class names)."""
    check_decoder(cfg.data.decoder)  # before generating anything: torchcodec and FFmpeg installed
    data = resolve_data(cfg, dist)
    train_set, val_set = build_datasets(cfg, data)
    return data, train_set, val_set, *check_labels(cfg, data, train_set, val_set)


def cache_short_side(cfg: Config) -> int | None:
    """``data.cache_short_side``, else the largest short side the transforms use (None: native size).

    A random-resized crop (``data.scale``) samples the whole frame at any scale: frames stay native.
    """
    d = cfg.data
    if d.cache_short_side is not None or d.scale is not None:
        return d.cache_short_side
    return max(max(d.short_side_range), d.test_short_side or d.crop_size)


def attach_frame_cache(cfg: Config, dist: xdist.DistInfo, train_set: Dataset, val_set: Dataset | None) -> None:
    """Decode the train and val videos once (``data.cache``) and let both datasets read from it.

    ``disk``: rank 0 builds (or updates) the file, the other ranks then open it; ``memory``: every
    process decodes its own copy.
    """
    mode = cfg.data.cache
    if mode == "none":
        return
    sets = [ds for ds in (train_set, val_set) if ds is not None]
    paths = [str(s.path) for ds in sets for s in ds.samples]
    args = dict(
        directory=cfg.data.frame_cache_dir,
        short_side=cache_short_side(cfg),
        workers=max(1, available_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size))),
        decoder=cfg.data.decoder,
    )
    start = time.perf_counter()
    if mode == "disk" and dist.rank != 0:
        xdist.barrier(wait=True)  # rank 0 decodes first
    cache = build_frame_cache(mode, paths, progress=cfg.train.progress and dist.rank == 0, **args)
    if mode == "disk" and dist.rank == 0:
        xdist.barrier(wait=True)
    if dist.rank == 0:
        log.info("%s, ready in %.0f s", cache.summary(), time.perf_counter() - start)
    first = 0
    for ds in sets:
        ds.attach_cache(cache.subset(first, first + len(ds)))
        first += len(ds)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """``train.amp`` -> autocast dtype. auto: bf16 on CUDA (fp16 without bf16 support), float32 on CPU."""
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise UserError("train.amp=fp16 needs a CUDA device (GradScaler); use train.amp=bf16 or none on CPU")
    return resolve_dtype(amp, "train.amp")


def resolve_data(cfg: Config, dist: xdist.DistInfo) -> dict:
    """Where the data is: generate/cache the synthetic set, or check the configured paths exist."""
    d = cfg.data
    if d.format == "synthetic":
        cache = Path(d.cache_dir).expanduser()
        if dist.rank == 0:  # rank 0 generates, the others read the finished cache
            root = ensure_synthetic(cache, progress=cfg.train.progress, **d.synthetic)
        xdist.barrier(wait=True)
        if dist.rank != 0:
            root = ensure_synthetic(cache, progress=False, **d.synthetic)
        temporal = task_of(d.synthetic) == "temporal"  # the still pictures have no pairs, no flip-swapped labels
        return {
            "format": "list",
            "root": str(root),
            "train_annotations": str(root / "train.txt"),
            "val_annotations": str(root / "val.txt"),
            "class_names": str(root / "classes.txt"),
            "flip_label_map": d.flip_label_map or (dict(FLIP_LABEL_MAP) if temporal else None),
            "reversed_pairs": [list(p) for p in REVERSED_PAIRS] if temporal else [],
        }
    if d.root is None:
        raise UserError(f"data.root is not set; set data.root to the folder holding the {d.format} videos")
    paths = {
        "data.root": d.root,
        "data.train_annotations": d.train_annotations,
        "data.val_annotations": d.val_annotations,
    }
    if isinstance(d.class_names, str):
        paths["data.class_names"] = d.class_names
    for key, value in paths.items():
        if value is not None and not Path(value).expanduser().exists():
            raise UserError(f"{key}={value} does not exist; set {key}= to an existing path")
    return {
        "format": d.format,
        "root": d.root,
        "train_annotations": d.train_annotations,
        "val_annotations": d.val_annotations,
        "class_names": d.class_names,
        "flip_label_map": d.flip_label_map,
    }


def build_datasets(cfg: Config, data: dict) -> tuple[Dataset, Dataset | None]:
    """Training set (augmented) and, if evaluation is on, the multi-view validation set."""
    common = dict(
        format=data["format"],
        root=data["root"],
        class_names=data["class_names"],
        clip=cfg.clip_spec(),
        seed=cfg.seed,
        decoder=cfg.data.decoder,
    )
    train_set = _build_split(
        "train", data["train_annotations"], common, dict(augment=cfg.augment(data["flip_label_map"]))
    )
    val_set = None
    if cfg.eval.enabled or cfg.eval.every > 0:
        if data["val_annotations"] is None and data["format"] in ("list", "kinetics", "ssv2"):
            raise UserError("eval is on but data.val_annotations is not set; set it, or set eval.enabled=false")
        if common["class_names"] is None:  # the val split uses the classes found in the training split
            common = {**common, "class_names": list(train_set.class_names)}
        val_set = _build_split("val", data["val_annotations"], common, {})
    return train_set, val_set


def _build_split(split: str, annotations: str | None, common: dict, extra: dict) -> Dataset:
    if common["format"] == "folder" and annotations is not None:  # folder format: the split's own root
        common, annotations = {**common, "root": annotations}, None
    try:
        dataset = build_dataset(split, annotations=annotations, **common, **extra)
    except (FileNotFoundError, NotADirectoryError) as err:
        raise UserError(
            f"{split} data ({annotations or common['root']}): {err}; check data.root and data.{split}_annotations"
        ) from None
    if len(dataset) == 0:
        raise UserError(
            f"the {split} split ({annotations or common['root']}) holds no videos; check data.{split}_annotations"
        )
    return dataset


def check_labels(cfg: Config, data: dict, train_set: Dataset, val_set: Dataset | None) -> tuple[int, list[str]]:
    """The number of classes (``model.num_classes`` or the data's); every label must be in range."""
    data_classes = int(train_set.num_classes)
    num_classes = cfg.model.num_classes or data_classes
    for split, dataset, ann in (
        ("train", train_set, data["train_annotations"]),
        ("val", val_set, data["val_annotations"]),
    ):
        if dataset is None:
            continue
        for sample in dataset.samples:
            if not 0 <= int(sample.label) < num_classes:
                fix = (
                    f"set model.num_classes to at least {int(sample.label) + 1} or fix the annotation"
                    if cfg.model.num_classes
                    else "fix the annotation or the class list (data.class_names)"
                )
                where = getattr(sample, "origin", None) or f"{ann}: {sample.path}"
                raise UserError(
                    f"{split} data {where}: label {sample.label} is outside 0..{num_classes - 1} "
                    f"(the {num_classes} classes of the training data); {fix}"
                )
    names = list(getattr(train_set, "class_names", None) or [])
    if len(names) != num_classes:
        names = names[:num_classes] + [str(i) for i in range(len(names), num_classes)]
    return num_classes, names


def build_model(cfg: Config, num_classes: int, pretrained: str | None) -> nn.Module:
    """``create_model`` with the config's options; pretrained weights checked against data and config."""
    if pretrained is not None:
        check_pretrained(pretrained)
    options = {"drop_rate": cfg.model.drop_rate, "drop_path_rate": cfg.model.drop_path_rate, **cfg.model.options}
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and whatever ran before
    try:
        return create_model(
            cfg.model.name,
            num_frames=cfg.data.num_frames,
            num_classes=num_classes,
            img_size=cfg.data.crop_size,
            pretrained=pretrained,
            **options,
        )
    except TypeError as err:  # an option the model family does not take
        raise UserError(
            f"model {cfg.model.name} rejected model.options {cfg.model.options}: {err}; "
            "remove the option or clear them all with model.options={} (docs/training.md: each family's options)"
        ) from None


def check_pretrained(path: str) -> None:
    """``model.pretrained`` must exist. What it holds decides how it loads
    (``xvit.models.weights.load_pretrained``): an xvit checkpoint of the same model and task whole,
    one of another model or task (an image ViT, another family, other classes) by its backbone."""
    if not resolve_weights(path).is_file():
        raise UserError(
            f"model.pretrained={path} does not exist; set it to an xvit checkpoint (e.g. the image ViT of "
            "`xvit train --config synthetic_images`), or download a timm ViT checkpoint (e.g. "
            "vit_base_patch16_224.augreg_in21k) and set it to its path"
        )


def cpu_threads(cfg: Config, dist: xdist.DistInfo) -> int | None:
    """``train.threads``, or on CPU the cores of this process minus its data-loader workers.

    Oversubscribing the cores (torch's default uses all of them, and every worker needs one too)
    made CPU training 5-8x slower on a 2-core machine.
    """
    if cfg.train.threads or dist.device.type != "cpu":
        return cfg.train.threads
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size))
    threads = threads_per_process(cfg, processes)
    if dist.rank == 0:
        log.info(
            "CPU: %d torch threads per process (%d cores / process - %d data workers; set train.threads to change)",
            threads,
            cores_per_process(processes),
            cfg.data.num_workers,
        )
    return threads


def cores_per_process(processes: int) -> int:
    """This machine's cores shared by ``processes`` training processes (at least 1)."""
    return max(1, available_cores() // processes)


def threads_per_process(cfg: Config, processes: int) -> int:
    """Torch threads of each of ``processes`` training processes: its cores less its data-loader
    workers (at least 1)."""
    return max(1, cores_per_process(processes) - cfg.data.num_workers)
