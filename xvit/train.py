"""``xvit train``: wiring of config, data, model, optimizer, checkpoints, DDP and evaluation.

``xvit train [--config NAME|PATH] [key.sub=value ...]`` trains ``model.name`` (and then every model
of ``compare``, each in ``run_dir/<name>``) with the recipe of the config (SPEC §6) and evaluates it
with multi-view testing. Everything a user can get wrong (config keys, data paths, labels, model
options, pretrained or resume checkpoints) is checked before the run directory is created. A run
directory holds ``config.yaml`` (the resolved config), ``checkpoints/``, ``tb/`` (TensorBoard),
``metrics.jsonl`` and ``results.json``. Under ``torchrun`` it runs DDP; only rank 0 writes.
The engine (one epoch) is ``xvit.engine``, checkpoints ``xvit.state``, evaluation ``xvit.evaluate``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from xvit import distributed as xdist
from xvit.config import Config, load_config, save_config, shipped_configs
from xvit.errors import UserError
from xvit.state import check_resume, find_resume

log = logging.getLogger("xvit.train")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``xvit train``."""
    parser.add_argument("--config", "-c", default=None, metavar="CONFIG",
                        help=f"YAML path or shipped config name (default: synthetic); shipped: {', '.join(shipped_configs())}")
    parser.add_argument("--resume", action="store_true",
                        help="continue run_dir's checkpoint if there is one (train.resume=auto, the default); "
                             "train.resume=PATH continues another run, train.resume=never refuses to")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides with dotted keys and YAML values, e.g. optim.lr=0.01 train.epochs=5")
    parser.epilog = ("DDP: torchrun --nproc_per_node=N -m xvit train ... (train.batch_size is per process). "
                     "See docs/training.md.")


def run(args: argparse.Namespace) -> int:
    """Entry point of the ``train`` command."""
    overrides = list(args.overrides) + (["train.resume=auto"] if args.resume else [])
    cfg = load_config(args.config, overrides)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None), end="")
        return 0
    # process-wide torch settings a run changes; restored for in-process callers (tests, notebooks)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    info = xdist.init_distributed(cfg.train.device)
    try:
        train_all(cfg, info)
    finally:
        xdist.cleanup()
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    return 0


# ----------------------------------------------------------------------------------------------
# the main job: one model, or a model and the models it is compared with


def train_all(cfg: Config, dist: xdist.DistInfo) -> list[dict]:
    """Train ``cfg.model.name`` then each ``cfg.compare`` model; print a comparison table; return results."""
    from xvit.models import list_models

    names = [cfg.model.name, *cfg.compare]
    for key, name in zip(["model.name"] + [f"compare[{i}]" for i in range(len(cfg.compare))], names):
        if name not in list_models():
            import difflib

            close = difflib.get_close_matches(name, list_models(), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise UserError(f"{key}={name!r} is not a registered model; {hint}list them with `xvit models`")
    if not cfg.compare:
        return [train_model(cfg, dist)]
    results = []
    for name in names:
        sub = dataclasses.replace(cfg, run_dir=str(Path(cfg.run_dir) / name), compare=[],
                                  model=dataclasses.replace(cfg.model, name=name))
        results.append(train_model(sub, dist, top_config=cfg))
        if results[-1].get("stopped"):  # train.stop_after_steps: the whole job stops, as if killed
            return results
    if dist.rank == 0:
        table = results_table(results)
        print("\n" + table)
        Path(cfg.run_dir, "summary.md").write_text(table + "\n")
        Path(cfg.run_dir, "summary.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def results_table(results: list[dict]) -> str:
    """Markdown table: model, top-1, top-5, mean class accuracy, views, params, train/eval time."""
    rows = ["| model | top-1 | top-5 | mean class acc | views | params (M) | train time | eval time |",
            "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for r in results:
        def pct(key: str) -> str:
            return "-" if r.get(key) is None else f"{r[key]:.1f}"
        rows.append(f"| {r['model']} | {pct('top1')} | {pct('top5')} | {pct('mean_class_acc')} | {r.get('views', '-')} "
                    f"| {r['params_m']:.2f} | {_fmt_time(r['train_time_s'])} | {_fmt_time(r.get('eval_time_s'))} |")
    return "\n".join(rows)


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes}m {sec:02d}s" if minutes else f"{sec}s"


# ----------------------------------------------------------------------------------------------
# preparation: every check before anything is written to the run directory


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


def prepare(cfg: Config, dist: xdist.DistInfo) -> Prepared:
    """Resolve and check data, labels, model, resume checkpoint; write nothing into ``run_dir``."""
    amp_dtype = resolve_amp(cfg.train.amp, dist.device)
    data = resolve_data(cfg, dist)
    train_set, val_set = build_datasets(cfg, data)
    num_classes, class_names = check_labels(cfg, data, train_set, val_set)
    global_batch = cfg.train.batch_size * dist.world_size * cfg.train.accum_steps
    steps_per_epoch = len(train_set) // (cfg.train.batch_size * dist.world_size) // cfg.train.accum_steps
    if steps_per_epoch < 1:
        raise UserError(f"the training set has {len(train_set)} videos, fewer than one global batch of {global_batch} "
                        f"(train.batch_size={cfg.train.batch_size} x {dist.world_size} processes x "
                        f"train.accum_steps={cfg.train.accum_steps}); lower train.batch_size")
    resume = find_resume(cfg.train.resume, cfg.run_dir)
    if resume is not None:
        check_resume(resume, cfg, num_classes, global_batch)
    model = build_model(cfg, num_classes, pretrained=None if resume else cfg.model.pretrained)
    return Prepared(cfg, data, train_set, val_set, num_classes, class_names, model, steps_per_epoch, resume, amp_dtype)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """``train.amp`` -> autocast dtype. auto: bf16 on CUDA (fp16 without bf16 support), float32 on CPU."""
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise UserError("train.amp=fp16 needs a CUDA device (GradScaler); use train.amp=bf16 or none on CPU")
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def resolve_data(cfg: Config, dist: xdist.DistInfo) -> dict:
    """Where the data is: generate/cache the synthetic set, or check the configured paths exist."""
    d = cfg.data
    if d.format == "synthetic":
        from xvit.data.synthetic import FLIP_LABEL_MAP, ensure_synthetic

        cache = Path(d.cache_dir).expanduser()
        if dist.rank == 0:  # rank 0 generates, the others read the finished cache
            root = ensure_synthetic(cache, progress=cfg.train.progress, **d.synthetic)
        xdist.barrier()
        if dist.rank != 0:
            root = ensure_synthetic(cache, progress=False, **d.synthetic)
        return {"format": "list", "root": str(root), "train_annotations": str(root / "train.txt"),
                "val_annotations": str(root / "val.txt"), "class_names": str(root / "classes.txt"),
                "flip_label_map": d.flip_label_map or dict(FLIP_LABEL_MAP)}
    if d.root is None:
        raise UserError(f"data.root is not set; set data.root to the folder holding the {d.format} videos")
    paths = {"data.root": d.root, "data.train_annotations": d.train_annotations,
             "data.val_annotations": d.val_annotations}
    if isinstance(d.class_names, str):
        paths["data.class_names"] = d.class_names
    for key, value in paths.items():
        if value is not None and not Path(value).expanduser().exists():
            raise UserError(f"{key}={value} does not exist; set {key}= to an existing path")
    return {"format": d.format, "root": d.root, "train_annotations": d.train_annotations,
            "val_annotations": d.val_annotations, "class_names": d.class_names, "flip_label_map": d.flip_label_map}


def build_datasets(cfg: Config, data: dict) -> tuple[Dataset, Dataset | None]:
    """Training set (augmented) and, if evaluation is on, the multi-view validation set."""
    from xvit.data.datasets import build_dataset

    d = cfg.data
    common = dict(format=data["format"], root=data["root"], class_names=data["class_names"], num_frames=d.num_frames,
                  sampling=d.sampling, frame_stride=d.frame_stride, crop_size=d.crop_size, mean=tuple(d.mean),
                  std=tuple(d.std), seed=cfg.seed)
    train_set = _build_split(build_dataset, "train", data["train_annotations"], common, dict(
        short_side_range=tuple(d.short_side_range), scale=None if d.scale is None else tuple(d.scale),
        auto_augment=d.auto_augment, random_erasing=d.random_erasing, hflip=d.hflip,
        flip_label_map=data["flip_label_map"]))
    val_set = None
    if cfg.eval.enabled or cfg.eval.every > 0:
        if data["val_annotations"] is None and data["format"] in ("list", "kinetics", "ssv2"):
            raise UserError("eval is on but data.val_annotations is not set; set it, or set eval.enabled=false")
        from xvit.data.transforms import parse_views

        clips, crops = parse_views(cfg.eval.views)
        if common["class_names"] is None:  # the val split uses the classes found in the training split
            common = {**common, "class_names": list(train_set.class_names)}
        val_set = _build_split(build_dataset, "val", data["val_annotations"], common, dict(
            test_short_side=d.test_short_side, num_clips=clips, num_crops=crops))
    return train_set, val_set


def _build_split(build_dataset, split: str, annotations: str | None, common: dict, extra: dict) -> Dataset:
    if common["format"] == "folder" and annotations is not None:  # folder format: the split's own root
        common, annotations = {**common, "root": annotations}, None
    try:
        dataset = build_dataset(split, annotations=annotations, **common, **extra)
    except (FileNotFoundError, NotADirectoryError) as err:
        raise UserError(f"{split} data ({annotations or common['root']}): {err}; check data.root and "
                        f"data.{split}_annotations") from None
    if len(dataset) == 0:
        raise UserError(f"the {split} split ({annotations or common['root']}) holds no videos; check data.{split}_annotations")
    return dataset


def check_labels(cfg: Config, data: dict, train_set: Dataset, val_set: Dataset | None) -> tuple[int, list[str]]:
    """The number of classes (``model.num_classes`` or the data's); every label must be in range."""
    data_classes = int(train_set.num_classes)
    num_classes = cfg.model.num_classes or data_classes
    for split, dataset, ann in (("train", train_set, data["train_annotations"]), ("val", val_set, data["val_annotations"])):
        if dataset is None:
            continue
        for sample in dataset.samples:
            if not 0 <= int(sample.label) < num_classes:
                fix = (f"set model.num_classes to at least {int(sample.label) + 1} or fix the annotation"
                       if cfg.model.num_classes else "fix the annotation or the class list (data.class_names)")
                where = getattr(sample, "origin", None) or f"{ann}: {sample.path}"
                raise UserError(f"{split} data {where}: label {sample.label} is outside 0..{num_classes - 1} "
                                f"(the {num_classes} classes of the training data); {fix}")
    names = list(getattr(train_set, "class_names", None) or [])
    if len(names) != num_classes:
        names = names[:num_classes] + [str(i) for i in range(len(names), num_classes)]
    return num_classes, names


def build_model(cfg: Config, num_classes: int, pretrained: str | None) -> nn.Module:
    """``create_model`` with the config's options; pretrained weights checked against data and config."""
    from xvit.models import create_model

    if pretrained is not None:
        check_pretrained(pretrained, cfg, num_classes)
    options = {"drop_rate": cfg.model.drop_rate, "drop_path_rate": cfg.model.drop_path_rate, **cfg.model.options}
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and whatever ran before
    try:
        return create_model(cfg.model.name, num_frames=cfg.data.num_frames, num_classes=num_classes,
                            img_size=cfg.data.crop_size, pretrained=pretrained, **options)
    except TypeError as err:  # an option the model family does not take
        raise UserError(f"model {cfg.model.name} rejected model.options {cfg.model.options}: {err}; "
                        "remove the option (see docs/training.md for each family's options)") from None


def check_pretrained(path: str, cfg: Config, num_classes: int) -> None:
    """An xvit checkpoint as ``pretrained`` must match the data's classes and the config's frames.

    (timm ImageNet ViT weights have no xvit metadata: their head is replaced, frames do not apply.)
    """
    from xvit.checkpoint import read_meta

    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"model.pretrained={path} does not exist; download the timm ViT checkpoint "
                        "(e.g. vit_base_patch16_224.augreg_in21k) and set model.pretrained to its path")
    if file.suffix != ".safetensors":
        return
    try:
        meta = read_meta(file)
    except UserError:
        return  # a plain safetensors state dict (timm format)
    m = meta.get("model") or {}
    if m.get("num_classes") not in (None, num_classes):
        raise UserError(f"model.pretrained={path} predicts {m['num_classes']} classes but the data has {num_classes}; "
                        f"train on data with {m['num_classes']} classes, or use an image (timm) checkpoint to start anew")
    if m.get("num_frames") not in (None, cfg.data.num_frames):
        raise UserError(f"model.pretrained={path} was trained with {m['num_frames']} frames but data.num_frames="
                        f"{cfg.data.num_frames}; set data.num_frames={m['num_frames']}")


# ----------------------------------------------------------------------------------------------
# training


def train_model(cfg: Config, dist: xdist.DistInfo, top_config: Config | None = None) -> dict:
    """Prepare (all checks), create the run directory, train, evaluate; return the run's results."""
    seed_everything(cfg.seed, deterministic=cfg.train.deterministic, threads=cpu_threads(cfg, dist))
    prep = prepare(cfg, dist)
    run_dir = Path(cfg.run_dir).expanduser()
    if dist.rank == 0:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        if top_config is not None:
            save_config(top_config, run_dir.parent / "config.yaml")
    xdist.barrier()
    return Trainer(prep, dist, run_dir).fit()


def cpu_threads(cfg: Config, dist: xdist.DistInfo) -> int | None:
    """``train.threads``, or on CPU the cores of this process minus its data-loader workers.

    Oversubscribing the cores (torch's default uses all of them, and every worker needs one too)
    made CPU training 5-8x slower on a 2-core machine.
    """
    if cfg.train.threads or dist.device.type != "cpu":
        return cfg.train.threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size)))
    threads = max(1, per_process - cfg.data.num_workers)
    if dist.rank == 0:
        log.info("CPU: %d torch threads per process (%d cores / process - %d data workers; set train.threads to change)",
                 threads, per_process, cfg.data.num_workers)
    return threads


def seed_everything(seed: int, *, deterministic: bool = False, threads: int | None = None) -> None:
    """Seed python, numpy and torch; optionally deterministic algorithms; CPU threads."""
    if threads:
        torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


class EpochSeeded(Dataset):
    """Wraps a training set so that item ``i`` of epoch ``e`` draws its augmentation from a seed of (seed, e, i).

    The transforms use the global torch/numpy/python generators; here they are seeded per item
    and restored afterwards, so an item's augmentation does not depend on which worker or rank
    loads it, nor on where a resumed run starts: what makes mid-epoch resume and 1-vs-N-process
    runs reproducible.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        item_seed = int(np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(1)[0])
        with _forked_rng():
            random.seed(item_seed)
            np.random.seed(item_seed)
            torch.default_generator.manual_seed(item_seed)  # CPU only: never touches a CUDA generator
            return self.dataset[index]


@contextlib.contextmanager
def _forked_rng():
    """Restore the CPU generators of python, numpy and torch on exit."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def make_train_loader(prep: Prepared, dist: xdist.DistInfo) -> tuple[DataLoader, xdist.ResumableSampler, EpochSeeded]:
    """Shuffled (seed + epoch), per-rank, drop-last loader whose sampler can start mid-epoch."""
    cfg = prep.cfg
    dataset = EpochSeeded(prep.train_set, cfg.seed)
    sampler = xdist.ResumableSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, seed=cfg.seed)
    loader = DataLoader(dataset, batch_size=cfg.train.batch_size, sampler=sampler, num_workers=cfg.data.num_workers,
                        drop_last=True, pin_memory=dist.device.type == "cuda",
                        generator=torch.Generator().manual_seed(cfg.seed))  # not the global generator
    return loader, sampler, dataset


def make_val_loader(prep: Prepared, dist: xdist.DistInfo) -> DataLoader | None:
    """Multi-view validation loader; each video on exactly one rank (``ShardSampler``)."""
    if prep.val_set is None:
        return None
    from xvit.data.datasets import collate_views

    cfg = prep.cfg
    workers = cfg.data.num_workers if cfg.eval.num_workers is None else cfg.eval.num_workers
    sampler = xdist.ShardSampler(prep.val_set, dist.world_size, dist.rank)
    return DataLoader(prep.val_set, batch_size=cfg.eval.batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate_views, pin_memory=dist.device.type == "cuda")


# ----------------------------------------------------------------------------------------------
# logging


class RunLogger:
    """``metrics.jsonl`` (one JSON object per line) and TensorBoard scalars in ``tb/``; rank 0 only."""

    def __init__(self, run_dir: Path, *, enabled: bool, tensorboard: bool, purge_step: int | None = None):
        self.enabled = enabled
        self.file = open(run_dir / "metrics.jsonl", "a") if enabled else None
        self.writer = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=purge_step)

    def log(self, kind: str, step: int, values: dict) -> None:
        """Append ``{"kind": kind, "global_step": step, **values}``; scalars go to TensorBoard as ``kind/key``."""
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in values.items()}
        self.file.write(json.dumps({"kind": kind, "global_step": step, "time": round(time.time(), 3), **clean}) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in clean.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                    self.writer.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.writer is not None:
            self.writer.close()


# ----------------------------------------------------------------------------------------------
# the training loop


class Trainer:
    """Owns model, optimizer, schedule, loaders and logger of one run; ``fit()`` trains and evaluates it."""

    def __init__(self, prep: Prepared, dist: xdist.DistInfo, run_dir: Path):
        from xvit.mixup import VideoMixup
        from xvit.optim import WarmupCosine, build_optimizer, scaled_lr

        cfg, t, o = prep.cfg, prep.cfg.train, prep.cfg.optim
        self.prep, self.cfg, self.dist, self.run_dir = prep, cfg, dist, run_dir
        self.main = dist.rank == 0
        self.model = prep.model.to(dist.device)
        self.net = self.model
        if dist.world_size > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
        self.global_batch = t.batch_size * dist.world_size * t.accum_steps
        self.lr = scaled_lr(o.lr, self.global_batch, o.lr_base_batch)
        self.optimizer = build_optimizer(self.model, name=o.name, lr=self.lr, weight_decay=o.weight_decay,
                                         momentum=o.momentum, nesterov=o.nesterov, betas=tuple(o.betas))
        self.total_steps = prep.steps_per_epoch * t.epochs
        self.scheduler = WarmupCosine(self.optimizer, total_steps=self.total_steps,
                                      warmup_steps=round(o.warmup_epochs * prep.steps_per_epoch), min_lr=o.min_lr)
        self.scaler = torch.amp.GradScaler("cuda") if prep.amp_dtype == torch.float16 else None
        self.mixer = VideoMixup(prep.num_classes, mixup_alpha=t.mixup_alpha, cutmix_alpha=t.cutmix_alpha,
                                prob=t.mix_prob, switch_prob=t.mix_switch_prob, label_smoothing=t.label_smoothing)
        self.loader, self.sampler, self.train_data = make_train_loader(prep, dist)
        self.val_loader = make_val_loader(prep, dist)
        self.epoch, self.step_in_epoch, self.best_top1, self.elapsed_before = 0, 0, None, 0.0
        self.finished = False
        if prep.resume is not None:
            self._restore(*prep.resume)
        else:  # each rank its own stream (mixup, dropout); the weights were initialised identically
            seed_everything(cfg.seed + dist.rank)
        self.logger = RunLogger(run_dir, enabled=self.main, tensorboard=t.tensorboard,
                                purge_step=self.scheduler.last_step if prep.resume else None)
        self.session_start, self.eval_seconds = time.perf_counter(), 0.0

    # -- checkpoints -------------------------------------------------------------------------

    def _meta(self, epoch: int) -> dict:
        d, data, (clips, crops) = self.cfg.data, self.prep.data, _views(self.cfg.eval.views)
        return {
            "model": self.model.model_config,
            "data": {"class_names": self.prep.class_names, "num_frames": d.num_frames, "sampling": d.sampling,
                     "frame_stride": d.frame_stride, "crop_size": d.crop_size, "test_short_side": d.test_short_side,
                     "mean": list(d.mean), "std": list(d.std), "format": data["format"], "root": data["root"],
                     "val_annotations": data["val_annotations"], "test_views": self.cfg.eval.views,
                     "num_clips": clips, "num_crops": crops},
            "train": {"epoch": epoch, "step": self.scheduler.last_step, "run_dir": str(self.run_dir),
                      "global_batch": self.global_batch, "lr": self.lr, "config": self.cfg.to_dict()},
        }

    def elapsed(self) -> float:
        """Training seconds of this run so far (evaluations excluded), over all its sessions."""
        return self.elapsed_before + time.perf_counter() - self.session_start - self.eval_seconds

    def checkpoint(self, epoch: int, step_in_epoch: int) -> None:
        """Write last.safetensors + last.state.pt (all ranks take part: their RNG states are gathered)."""
        from xvit.checkpoint import save_model
        from xvit.state import LAST_STATE, LAST_WEIGHTS, atomic_torch_save, make_state, rng_state

        rngs = xdist.all_gather_object(rng_state())
        if self.main:
            folder = self.run_dir / "checkpoints"
            meta = self._meta(epoch)
            save_model(folder / LAST_WEIGHTS, self.model, meta)
            state = make_state(optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler, epoch=epoch,
                               step_in_epoch=step_in_epoch, global_step=self.scheduler.last_step,
                               best_top1=self.best_top1, rng=rngs, world_size=self.dist.world_size,
                               global_batch=self.global_batch, finished=self.finished, elapsed_s=self.elapsed())
            atomic_torch_save(state, folder / LAST_STATE)
            if self.cfg.train.keep_epoch_ckpts and step_in_epoch == 0:
                save_model(folder / f"epoch_{epoch:03d}.safetensors", self.model, meta)
        xdist.barrier()

    def _restore(self, weights: Path, state_path: Path) -> None:
        """Load weights, optimizer, schedule, scaler, position and RNG states from a checkpoint."""
        from safetensors.torch import load_file

        from xvit.state import load_state, set_rng_state

        self.model.load_state_dict(load_file(str(weights), device=str(self.dist.device)), strict=True)
        state = load_state(state_path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        self.best_top1 = None if state["best_top1"] < 0 else float(state["best_top1"])
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        self.finished = self.epoch >= self.cfg.train.epochs  # train.epochs may have been raised since
        if len(state["rng"]) == self.dist.world_size:
            set_rng_state(state["rng"][self.dist.rank])
        else:
            log.warning("checkpoint from %d processes, now %d: random streams re-seeded (not bit-exact)",
                        len(state["rng"]), self.dist.world_size)
            seed_everything(self.cfg.seed + self.dist.rank + 1000 * self.scheduler.last_step)
        if self.main:
            log.info("resumed %s at epoch %d, step %d of the epoch (global step %d)", weights, self.epoch,
                     self.step_in_epoch, self.scheduler.last_step)

    # -- the loop -----------------------------------------------------------------------------

    def fit(self) -> dict:
        """Train the remaining epochs (evaluating every ``eval.every``), then the final evaluation."""
        cfg, t = self.cfg, self.cfg.train
        results_path = self.run_dir / "results.json"
        if self.finished and results_path.is_file():
            results = json.loads(results_path.read_text())
            if self.main:
                print(f"{self.run_dir} is already trained ({t.epochs} epochs); its results ({results_path}):")
                self._print_results(results)
            return results
        self._log_start()
        try:
            while self.epoch < t.epochs:
                stats = self._train_epoch()
                if stats["stopped"]:
                    return {"model": cfg.model.name, "stopped": True, "global_step": self.scheduler.last_step}
                self.epoch, self.step_in_epoch = self.epoch + 1, 0
                self.finished = self.epoch >= t.epochs
                if cfg.eval.every and self.epoch % cfg.eval.every == 0 and not self.finished:
                    self.evaluate()
                self.checkpoint(self.epoch, 0)
            train_time = self.elapsed()
            res = self.evaluate() if cfg.eval.enabled else {}
            results = self._results(res, train_time)
            if self.main:
                results_path.write_text(json.dumps(results, indent=2) + "\n")
                self._print_results(results)
            return results
        finally:
            self.logger.close()

    def _train_epoch(self) -> dict:
        from xvit.engine import train_one_epoch

        cfg, t = self.cfg, self.cfg.train
        self.sampler.set_epoch(self.epoch)
        self.train_data.set_epoch(self.epoch)
        self.loader.generator.manual_seed(self.cfg.seed * 100_003 + self.epoch)  # worker seeds: by epoch
        self.sampler.set_start(self.step_in_epoch * t.accum_steps * t.batch_size)
        stats = train_one_epoch(
            self.net, self.loader, self.optimizer, self.scheduler, mixer=self.mixer, device=self.dist.device,
            epoch=self.epoch, steps=self.prep.steps_per_epoch, start_step=self.step_in_epoch,
            accum_steps=t.accum_steps, clip_grad=cfg.optim.clip_grad, amp_dtype=self.prep.amp_dtype,
            scaler=self.scaler, on_step=self._on_step, progress=t.progress)
        if not stats["stopped"]:
            self.logger.log("train_epoch", self.scheduler.last_step, {"epoch": self.epoch + 1, **stats})
            if self.main:
                log.info("epoch %d/%d: loss %.4f, train acc %.1f%%, lr %.2e, %.1f clips/s, %.0f s", self.epoch + 1,
                         t.epochs, stats["loss"], stats["acc"], stats["lr"], stats["clips_per_s"], stats["time_s"])
        return stats

    def _on_step(self, info: dict) -> bool:
        """Per optimizer step: log, checkpoint every ``ckpt_every_steps``, stop at ``stop_after_steps``."""
        t, step = self.cfg.train, info["global_step"]
        if step % t.log_every_steps == 0:
            self.logger.log("train_step", step, info)
        if t.stop_after_steps is not None and step >= t.stop_after_steps:
            if self.main:
                log.warning("train.stop_after_steps=%d reached: stopping without a checkpoint (debug)", step)
            return True
        if t.ckpt_every_steps and step % t.ckpt_every_steps == 0 and info["step_in_epoch"] < self.prep.steps_per_epoch:
            self.checkpoint(self.epoch, info["step_in_epoch"])
        return False

    def evaluate(self) -> dict:
        """Multi-view evaluation on the val split (``xvit.evaluate.evaluate``); keeps best.safetensors."""
        if self.val_loader is None:
            return {}
        from xvit.evaluate import evaluate

        start = time.perf_counter()
        res = evaluate(self.net, self.val_loader, num_classes=self.prep.num_classes, device=self.dist.device,
                       amp_dtype=self.prep.amp_dtype, distributed=self.dist.world_size > 1,
                       progress=self.cfg.train.progress)
        res["time_s"] = time.perf_counter() - start
        self.eval_seconds += res["time_s"]
        scalars = {k: res[k] for k in ("top1", "top5", "mean_class_acc", "num_videos", "num_missing", "time_s")}
        self.logger.log("val", self.scheduler.last_step, {"epoch": self.epoch, "views": self.cfg.eval.views, **scalars})
        if self.main:
            log.info("val (%s views) after epoch %d: top-1 %.2f%%, top-5 %.2f%%, mean class acc %.2f%% on %d videos "
                     "(%d unreadable), %.0f s", self.cfg.eval.views, self.epoch, res["top1"], res["top5"],
                     res["mean_class_acc"], res["num_videos"], res["num_missing"], res["time_s"])
        if self.best_top1 is None or res["top1"] > self.best_top1:
            self.best_top1 = res["top1"]
            if self.main:
                from xvit.checkpoint import save_model

                save_model(self.run_dir / "checkpoints" / "best.safetensors", self.model, self._meta(self.epoch))
        return res

    def _log_start(self) -> None:
        if not self.main:
            return
        cfg, p = self.cfg, self.prep
        params = sum(x.numel() for x in self.model.parameters()) / 1e6
        scaled = f" (optim.lr={cfg.optim.lr} x {self.global_batch}/{cfg.optim.lr_base_batch})" if cfg.optim.lr_base_batch else ""
        log.info("training %s (%.2fM params) on %d train / %s val videos, %d classes -> %s", cfg.model.name, params,
                 len(p.train_set), len(p.val_set) if p.val_set is not None else "no", p.num_classes, self.run_dir)
        log.info("%d epochs x %d steps, global batch %d (%d x %d processes x %d accum), %s lr %.3g%s, "
                 "warm-up %g epochs + cosine, device %s, amp %s", cfg.train.epochs, p.steps_per_epoch,
                 self.global_batch, cfg.train.batch_size, self.dist.world_size, cfg.train.accum_steps, cfg.optim.name,
                 self.lr, scaled, cfg.optim.warmup_epochs, self.dist.device, p.amp_dtype or "off (float32)")

    def _results(self, res: dict, train_time: float) -> dict:
        params = sum(x.numel() for x in self.model.parameters()) / 1e6
        out = {"model": self.cfg.model.name, "run_dir": str(self.run_dir), "epochs": self.cfg.train.epochs,
               "global_step": self.scheduler.last_step, "params_m": round(params, 3),
               "train_time_s": round(train_time, 1), "views": self.cfg.eval.views if res else None,
               "best_top1": self.best_top1}
        for key in ("top1", "top5", "mean_class_acc", "num_videos", "num_missing"):
            out[key] = res.get(key)
        out["eval_time_s"] = round(res["time_s"], 1) if res else None
        if res:
            per_class = torch.as_tensor(res["per_class_acc"]).tolist()
            out["per_class_acc"] = {n: (None if not np.isfinite(a) else round(a, 2))
                                    for n, a in zip(self.prep.class_names, per_class)}
        return out

    def _print_results(self, r: dict) -> None:
        if r.get("top1") is None:
            print(f"{r['model']}: trained {r['epochs']} epochs in {_fmt_time(r['train_time_s'])} -> {self.run_dir}")
            return
        print(f"{r['model']}: top-1 {r['top1']:.2f}%  top-5 {r['top5']:.2f}%  mean class acc {r['mean_class_acc']:.2f}% "
              f"({r['views']} views, {r['num_videos']} videos); trained in {_fmt_time(r['train_time_s'])} -> {self.run_dir}")


def _views(views: str) -> tuple[int, int]:
    from xvit.config import _parse_views

    return _parse_views(views)
