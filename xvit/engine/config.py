"""Training configuration: dataclasses with one comment per field, YAML files and ``key=value`` overrides.

A config is a YAML mapping with the sections ``model``, ``data``, ``optim``, ``train``, ``eval`` and a
few top-level keys (``run_dir``, ``seed``, ``compare``). ``base: NAME_OR_PATH`` inherits another
config. Command-line overrides use dotted keys with YAML-parsed values (``optim.lr=0.01``,
``data.short_side_range=[256,320]``, ``model.options.head=avg``). Unknown keys and values of the
wrong type raise ``UserError`` naming the key and its nearest valid spelling.

Shipped configs live in ``xvit/configs/*.yaml`` (the recipes of the X-ViT paper §4 and its reference
configs, and the synthetic main job). ``Config.clip_spec()`` and ``Config.augment()`` turn the
``data``/``eval`` keys into the typed ``ClipSpec`` / ``Augment`` that the rest of the code reads.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib.resources
import re
import signal
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from xvit.data.clip import Augment, ClipSpec, parse_views
from xvit.data.video import DECODERS
from xvit.errors import UserError

DEFAULT_CONFIG = "synthetic"


@dataclass
class ModelConfig:
    name: str = "xvit_micro_patch8_64"  # a registered model name (`xvit models` lists them)
    num_classes: int | None = None  # None: the number of classes of the training data
    pretrained: str | None = (
        None  # path to a timm ViT (.pth/.bin/.safetensors) or xvit checkpoint; the user downloads it
    )
    drop_rate: float = 0.0  # dropout before the classifier
    drop_path_rate: float = 0.0  # stochastic depth rate (linearly increasing over blocks)
    options: dict[str, Any] = field(default_factory=dict)  # other create_model options: head, shift_div, t_w, mix, ...


@dataclass
class DataConfig:
    format: str = "synthetic"  # synthetic | list | kinetics | ssv2 | folder
    root: str | None = None  # dataset root (video paths in the annotations are relative to it)
    train_annotations: str | None = None  # training annotation file (format folder: the split's folder)
    val_annotations: str | None = None  # validation annotation file (format folder: the split's folder)
    class_names: str | list[str] | None = None  # class-name file or list; None: from the annotations
    cache_dir: str = "~/.cache/xvit/synthetic"  # where format=synthetic writes (once) its videos
    synthetic: dict[str, Any] = field(default_factory=dict)  # ensure_synthetic(...) parameters
    num_frames: int = 8  # frames per clip (the model's T)
    sampling: str = "segment"  # segment (TSN, SSv2) | dense (fixed stride, Kinetics)
    frame_stride: int = 4  # dense sampling: stride between frames
    crop_size: int = 224  # training/test crop (the model's img_size)
    short_side_range: list[int] = field(default_factory=lambda: [256, 320])  # train: random short side
    scale: list[float] | None = None  # train: multi-scale crop area range, e.g. [0.25, 1.0]; None: short-side crop
    test_short_side: int | None = None  # test: resize short side to this (None: crop_size)
    auto_augment: str | None = None  # AutoAugment policy applied identically to every frame (None: off)
    random_erasing: float = 0.0  # train: probability of random erasing (same box on every frame)
    hflip: bool = True  # train: random horizontal flip (off for datasets with left/right classes)
    flip_label_map: dict[int, int] | None = None  # train: labels swapped when flipping (left <-> right)
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])  # per-channel mean (in21k ViT: 0.5)
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])  # per-channel std
    num_workers: int = 4  # data-loader worker processes per training process
    decoder: str = "pyav"  # pyav | torchcodec (pip install 'xvit[torchcodec]' + FFmpeg): reads the videos
    cache: str = "none"  # none | memory | disk: decode every video once, then sample from uint8 frames
    frame_cache_dir: str = "~/.cache/xvit/frames"  # data.cache=disk: where the memory-mapped frame files go
    cache_short_side: int | None = None  # cached frames' short side (only reduced); None: what the transforms use
    max_skipped_fraction: float = 0.01  # stop when more of the training videos than this are unreadable


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd (momentum, nesterov) | adamw
    lr: float = 0.03  # peak learning rate at a global batch of lr_base_batch
    lr_base_batch: int | None = 64  # lr is scaled linearly to the global batch (lr * batch / this); None: no scaling
    momentum: float = 0.9  # sgd momentum
    nesterov: bool = True  # sgd nesterov
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw betas
    weight_decay: float = 1e-4  # decoupled for adamw; not applied to norms, biases, tokens, embeddings
    warmup_epochs: float = 5.0  # linear warm-up (per step) from ~0 to the peak lr
    min_lr: float = 0.0  # cosine floor
    clip_grad: float | None = None  # max global gradient norm (None: no clipping)


@dataclass
class TrainConfig:
    epochs: int = 30  # training epochs
    batch_size: int = 8  # clips per process per step (global batch = batch_size * processes * accum_steps)
    accum_steps: int = 1  # gradient accumulation steps per optimizer step
    label_smoothing: float = 0.0  # label smoothing of the (mixed) targets
    mixup_alpha: float = 0.0  # mixup Beta(alpha, alpha); 0: off
    cutmix_alpha: float = 0.0  # cutmix Beta(alpha, alpha), same box on every frame; 0: off
    mix_prob: float = 1.0  # probability of mixing a batch when mixup or cutmix is on
    mix_switch_prob: float = 0.5  # probability of cutmix instead of mixup when both are on
    amp: str = "auto"  # auto (bf16 on CPU/CUDA where supported) | bf16 | fp16 (CUDA, with GradScaler) | none
    device: str = "auto"  # auto | cpu | cuda
    threads: int | None = None  # torch intra-op threads on CPU (None: cores per process - data.num_workers)
    # compare: the models side by side, a process each: auto (CPU, one process, threads unset, a core
    # per model) | always | never (one after the other); xvit.engine.train.side_by_side
    parallel: str = "auto"
    deterministic: bool = False  # torch.use_deterministic_algorithms + fixed sampler order + seeded workers
    resume: str = "auto"  # auto (continue from run_dir's checkpoint) | never | path to a checkpoint or run dir
    ckpt_every_steps: int = 0  # also checkpoint every N optimizer steps (0: only every epoch)
    ckpt_every_minutes: float = 30.0  # also checkpoint when this many minutes passed since the last one (0: off)
    # signals that make the run finish its step, write a checkpoint and exit with status 75 ([]: none)
    stop_signals: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGINT", "SIGUSR1"])
    keep_epoch_ckpts: bool = False  # keep checkpoints/epoch_NNN.safetensors for every epoch
    log_every_steps: int = 20  # metrics.jsonl / TensorBoard step logging interval
    progress: bool = True  # tqdm progress bar (rank 0)
    tensorboard: bool = True  # write TensorBoard scalars into run_dir/tb
    stop_after_steps: int | None = None  # debug: stop abruptly after N optimizer steps, as if killed
    dist_timeout_s: float = 120.0  # DDP: a dead or stuck rank ends the job after this many seconds


@dataclass
class EvalConfig:
    enabled: bool = True  # evaluate on the val split at the end of training
    every: int = 0  # also evaluate every N epochs (0: only at the end)
    views: str = "1x3"  # temporal clips x spatial crops, e.g. 1x3 (K400), 2x3 (SSv2)
    batch_size: int = 4  # videos per process per evaluation batch
    num_workers: int | None = None  # None: data.num_workers
    # [class, class] pairs that are time reversals of each other: their pair order accuracy is reported
    # (data.format=synthetic: its 5 pairs; names or label indices)
    reversed_pairs: list[list[str | int]] | None = None


@dataclass
class Config:
    run_dir: str = "runs/synthetic"  # output directory (config.yaml, checkpoints/, tb/, metrics.jsonl)
    seed: int = 0  # global seed (per process: seed + rank)
    compare: list[str] = field(default_factory=list)  # models trained afterwards the same way, each in run_dir/<name>
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def clip_spec(self, class_names: list[str] | tuple[str, ...] = ()) -> ClipSpec:
        """The test-time pipeline of this run (``data.*`` and ``eval.views``), as checkpoints store it."""
        d = self.data
        return ClipSpec(
            num_frames=d.num_frames,
            sampling=d.sampling,
            frame_stride=d.frame_stride,
            crop_size=d.crop_size,
            short_side=d.test_short_side,
            mean=tuple(d.mean),
            std=tuple(d.std),
            views=parse_views(self.eval.views, key="eval.views"),
            class_names=tuple(class_names),
        )

    def augment(self, flip_label_map: dict[int, int] | None = None) -> Augment:
        """The training augmentation of this run; ``flip_label_map`` defaults to ``data.flip_label_map``."""
        d = self.data
        return Augment(
            short_side_range=tuple(d.short_side_range),
            scale=None if d.scale is None else tuple(d.scale),
            auto_augment=d.auto_augment,
            random_erasing=d.random_erasing,
            hflip=d.hflip,
            flip_label_map=dict(flip_label_map or d.flip_label_map or {}),
        )


# ----------------------------------------------------------------------------------------------
# loading


def shipped_configs() -> list[str]:
    """Names of the configs shipped inside the package (``--config NAME``)."""
    root = importlib.resources.files("xvit") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def _resolve_config_path(spec: str, relative_to: Path | None = None) -> Path:
    """A config path or a shipped config name -> an existing file."""
    candidates = [Path(spec).expanduser()]
    if relative_to is not None and not Path(spec).is_absolute():
        candidates.insert(0, relative_to / spec)
    for path in candidates:
        if path.is_file():
            return path
    name = spec[: -len(".yaml")] if spec.endswith(".yaml") else spec
    shipped = importlib.resources.files("xvit") / "configs" / f"{name}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    names = shipped_configs()
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise UserError(f"config '{spec}' is neither a file nor a shipped config; {hint}shipped: {', '.join(names)}")


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML config, following ``base:`` (deep-merged, the including file wins)."""
    if path.resolve() in chain:
        raise UserError(f"config {path}: 'base' chain loops back on itself ({' -> '.join(map(str, chain))})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"config {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise UserError(
            f"config {path} must be a YAML mapping of sections (model:, data:, ...), got {type(data).__name__}"
        )
    base = data.pop("base", None)
    if base is None:
        return data
    parent = _read_yaml(_resolve_config_path(str(base), path.parent), chain + (path.resolve(),))
    return _deep_merge(parent, data)


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in _FREE_DICTS:
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# dict-valued fields whose keys are free (not checked against a dataclass); merged as a whole
_FREE_DICTS = {"options", "synthetic", "flip_label_map"}


_DECIMAL_INT = re.compile(r"[-+]?[0-9]+")


def _split_override(item: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.1"`` -> (["optim", "lr"], 0.1), the value parsed as YAML."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or "" in key.split("."):
        raise UserError(f"override '{item}' is not of the form key.sub=value (e.g. optim.lr=0.01)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise UserError(f"override '{item}': value is not valid YAML ({err})") from None
    if isinstance(value, int) and not isinstance(value, bool) and not _DECIMAL_INT.fullmatch(raw.strip()):
        value = raw.strip()  # YAML 1.1 reads 0x3, 0o7, 1_000 and 1:30 as integers: keep what was typed
    return key.split("."), value


def apply_overrides(data: dict[str, Any], items: list[str]) -> dict[str, Any]:
    """Set each dotted key of ``items`` in a copy of the nested dict ``data``, in order.

    A value replaces what was there (``model.options={}`` clears the options), while a longer key
    changes one entry (``model.options.head=avg`` keeps the other options).
    """
    out = copy.deepcopy(data)
    for item in items:
        parts, value = _split_override(item)
        node = out
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["optim.lr=0.1", "data.hflip=false"]`` -> nested dict with YAML-parsed values."""
    return apply_overrides({}, items)


def load_config(spec: str | None = None, overrides: list[str] | None = None) -> Config:
    """Build a ``Config`` from a shipped name or YAML path (default: synthetic) and dotted overrides."""
    path = _resolve_config_path(spec or DEFAULT_CONFIG)
    data = apply_overrides(_read_yaml(path), overrides or [])
    cfg = _build(Config, data, prefix="")
    validate_config(cfg)
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    """A ``Config`` from a plain nested dict (e.g. a resolved config.yaml), validated."""
    cfg = _build(Config, data, prefix="")
    validate_config(cfg)
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (loadable again with ``--config path``)."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None))


# ----------------------------------------------------------------------------------------------
# typed construction


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise UserError(f"config section '{prefix.rstrip('.') or 'top level'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = (
                f"; did you mean '{prefix}{close[0]}'?"
                if close
                else f"; valid keys: {', '.join(prefix + n for n in names)}"
            )
            raise UserError(f"unknown config key '{prefix}{key}'{hint}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value if value is not None else {}, prefix=f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a type hint (int -> float allowed); raise UserError naming ``key``."""
    ok, out = _match(value, hint)
    if not ok:
        quote = ""
        if isinstance(value, (int, float)) and not isinstance(value, bool) and _match("x", hint)[0]:
            quote = " (YAML read it as a number: quote the value, e.g. '1x3')"
        elif isinstance(value, bool) and _match("x", hint)[0]:
            quote = " (YAML reads on/off/yes/no as true/false: quote the value, or see the key's choices)"
        raise UserError(f"config key '{key}' expects {_type_name(hint)}, got {value!r}{quote}")
    return out


def _match(value: Any, hint: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True, value
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, out = _match(value, arg)
            if ok:
                return True, out
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return True, float(value)
            except ValueError:
                return False, value
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is str:
        return isinstance(value, str), value
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            return False, value
        (arg,) = typing.get_args(hint)
        outs = [_match(v, arg) for v in value]
        return all(ok for ok, _ in outs), [o for _, o in outs]
    if origin is dict:
        return isinstance(value, dict), value
    return isinstance(value, hint), value


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", None) if typing.get_origin(hint) is None else str(hint).replace("typing.", "")


# ----------------------------------------------------------------------------------------------
# value checks (names of choices; model names and data paths are checked when the run is prepared)


_CHOICES = {
    "data.format": ("synthetic", "list", "kinetics", "ssv2", "folder"),
    "data.sampling": ("segment", "dense"),
    "optim.name": ("sgd", "adamw"),
    "train.amp": ("auto", "bf16", "fp16", "none"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.parallel": ("auto", "always", "never"),
    "data.cache": ("none", "memory", "disk"),
    "data.decoder": DECODERS,
}


def validate_config(cfg: Config) -> None:
    """Check choices and ranges; raise UserError naming the key, the value and what is allowed."""
    for key, choices in _CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in choices:
            close = difflib.get_close_matches(str(value), choices, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise UserError(f"{key}={value!r} is not valid; {hint}choose one of {', '.join(choices)}")
    positive = {
        "train.epochs": cfg.train.epochs,
        "train.batch_size": cfg.train.batch_size,
        "train.accum_steps": cfg.train.accum_steps,
        "data.num_frames": cfg.data.num_frames,
        "data.crop_size": cfg.data.crop_size,
        "eval.batch_size": cfg.eval.batch_size,
        "optim.lr": cfg.optim.lr,
        "train.log_every_steps": cfg.train.log_every_steps,
        "train.dist_timeout_s": cfg.train.dist_timeout_s,
    }
    for key, value in positive.items():
        if value <= 0:
            raise UserError(f"{key}={value} must be positive")
    for key, value in {
        "train.ckpt_every_steps": cfg.train.ckpt_every_steps,
        "train.ckpt_every_minutes": cfg.train.ckpt_every_minutes,
        "eval.every": cfg.eval.every,
        "optim.warmup_epochs": cfg.optim.warmup_epochs,
        "data.num_workers": cfg.data.num_workers,
    }.items():
        if value < 0:
            raise UserError(f"{key}={value} must be >= 0")
    for key, value in {
        "train.label_smoothing": cfg.train.label_smoothing,
        "train.mix_prob": cfg.train.mix_prob,
        "data.random_erasing": cfg.data.random_erasing,
        "data.max_skipped_fraction": cfg.data.max_skipped_fraction,
    }.items():
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{key}={value} must be in [0, 1]")
    if len(cfg.data.mean) != 3 or len(cfg.data.std) != 3:
        raise UserError(f"data.mean and data.std need 3 values (RGB), got {cfg.data.mean} and {cfg.data.std}")
    if len(cfg.data.short_side_range) != 2:
        raise UserError(f"data.short_side_range needs [min, max], got {cfg.data.short_side_range}")
    parse_views(cfg.eval.views, key="eval.views")
    for name in cfg.train.stop_signals:
        if signal_number(name) is None:
            raise UserError(
                f"train.stop_signals: {name!r} is not a signal a process can catch; use names such as "
                "SIGTERM, SIGINT, SIGUSR1 (or [] for none)"
            )


def signal_number(name: str) -> int | None:
    """The number of a signal name (``SIGTERM`` or ``TERM``, any case) that a handler can catch, else None."""
    name = name.strip().upper()
    try:
        sig = signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    except KeyError:
        return None
    return None if sig in (signal.SIGKILL, signal.SIGSTOP) else int(sig)
