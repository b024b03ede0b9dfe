"""xvit's checkpoints: the one format every command reads.

A checkpoint is a safetensors file of the model's weights whose metadata (JSON under the key
``xvit``) is a ``CheckpointMeta``: the ``create_model`` arguments (``model``), the test-time
pipeline (``clip``: a ``ClipSpec``), where the evaluation data was (``data``) and the training
position (``train``). Files written before the clip spec existed (their pipeline spread over
``meta["data"]``) are read into the same type.

``load_model(path)`` (public as ``xvit.load_model``) rebuilds the model in eval mode and returns
it with its ``ClipSpec``. Every file is written atomically (``atomic_write``: temporary file in
the same folder, fsync, rename, fsync of the folder), so a crash never leaves a torn file. A
training checkpoint (weights + state of one step, one unit) is ``xvit.engine.snapshot``; the
training state and resume logic live in ``xvit.engine.train.resume``.

The model code (``xvit.models``, and timm with it: ~0.5 s of imports) is imported by
``load_checkpoint``, not by this module, so the metadata can be read before it (``xvit predict``
starts decoding with the clip spec while it is imported).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from xvit.data.clip import ClipSpec, parse_views
from xvit.engine.runtime import unwrap
from xvit.engine.snapshot import atomic_write
from xvit.errors import UserError

log = logging.getLogger(__name__)

META_VERSION = 2
_WARNED_ABSENT: set[tuple[str, ...]] = set()


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about itself, beside its weights."""

    model: dict[str, Any]  # create_model arguments: name, num_frames, num_classes, img_size, options
    clip: ClipSpec  # the test-time pipeline (frames, sampling, crop, norm, views, class names)
    data: dict[str, Any] = field(default_factory=dict)  # evaluation data: format, root, val_annotations
    train: dict[str, Any] = field(default_factory=dict)  # epoch, step, run_dir, global_batch, lr, config

    @property
    def name(self) -> str | None:
        return self.model.get("name")

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": META_VERSION,
            "model": self.model,
            "clip": self.clip.to_dict(),
            "data": self.data,
            "train": self.train,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CheckpointMeta:
        """Read any xvit metadata: this version's, or an older one whose pipeline is in ``raw["data"]``."""
        model = dict(raw.get("model") or {})
        data = dict(raw.get("data") or {})
        if "clip" in raw:
            clip = ClipSpec.from_dict(raw["clip"])
        else:
            clip = _legacy_clip(data, model)
            data = {k: data.get(k) for k in ("format", "root", "val_annotations") if data.get(k) is not None}
        return cls(model=model, clip=clip, data=data, train=dict(raw.get("train") or {}))


def _legacy_clip(data: dict, model: dict) -> ClipSpec:
    """The ``ClipSpec`` of a checkpoint written before it existed (keys in ``meta["data"]``).

    Absent keys fall back to the model (frames, size) and the paper's defaults (mean/std 0.5,
    segment sampling, short side = crop size; test views 2x3 for SSv2 and 1x3 otherwise, §4),
    with one warning naming them.
    """
    defaults = {
        "num_frames": model.get("num_frames", 8),
        "sampling": "segment",
        "frame_stride": 4,
        "crop_size": model.get("img_size", 224),
        "test_short_side": None,
        "mean": (0.5,) * 3,
        "std": (0.5,) * 3,
    }
    absent = [k for k in defaults if k not in data]
    if absent and tuple(absent) not in _WARNED_ABSENT:  # once per process, not once per video
        _WARNED_ABSENT.add(tuple(absent))
        log.warning(
            "checkpoint meta['data'] lacks %s; using %s",
            ", ".join(absent),
            ", ".join(f"{k}={defaults[k]}" for k in absent),
        )
    got = {k: data.get(k, v) for k, v in defaults.items()}
    if data.get("test_views"):
        views = parse_views(data["test_views"], key="meta['data']['test_views']")
    elif data.get("num_clips") and data.get("num_crops"):
        views = (int(data["num_clips"]), int(data["num_crops"]))
    else:
        views = (2, 3) if data.get("format") == "ssv2" else (1, 3)
    names = data.get("class_names") or ()
    if model.get("num_classes") is not None and len(names) != model["num_classes"]:
        names = ()
    return ClipSpec(
        num_frames=got["num_frames"],
        sampling=got["sampling"],
        frame_stride=got["frame_stride"],
        crop_size=got["crop_size"],
        short_side=got["test_short_side"],
        mean=got["mean"],
        std=got["std"],
        views=views,
        class_names=names,
    )


def write_model(path: str | Path, model: nn.Module, meta: CheckpointMeta | dict | None = None) -> None:
    """Write ``model``'s weights and ``meta`` to ``path`` (a .safetensors file), not atomically.

    ``meta`` is a ``CheckpointMeta``, or a plain dict as older xvit versions wrote (kept for
    their tests and tools); a dict's ``model`` defaults to the model's ``model_config``.
    """
    model = unwrap(model)
    if isinstance(meta, CheckpointMeta):
        raw = meta.to_dict()
    else:
        raw = dict(meta or {})
        raw.setdefault("model", getattr(model, "model_config", None))
        if raw["model"] is None:
            raise ValueError("model has no model_config; build it with xvit.create_model or pass meta['model']")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"xvit": json.dumps(raw)})


def save_model(path: str | Path, model: nn.Module, meta: CheckpointMeta | dict | None = None) -> None:
    """``write_model`` atomically: a crash leaves the old file or the new one, never a torn one."""
    atomic_write(path, lambda tmp: write_model(tmp, model, meta))


def read_raw_meta(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of an xvit checkpoint; ``UserError`` if ``path`` is not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found; pass the .safetensors file written by xvit train")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("xvit")
    except Exception as err:
        raise UserError(f"{path} is not a safetensors checkpoint ({err})") from err
    if raw is None:
        raise UserError(f"{path} has no xvit metadata; was it written by xvit (xvit train / save_model)?")
    return json.loads(raw)


def read_meta(path: str | Path) -> CheckpointMeta:
    """The ``CheckpointMeta`` of an xvit checkpoint (any version)."""
    return CheckpointMeta.from_dict(read_raw_meta(path))


def check_clip_fits(meta: CheckpointMeta, model: nn.Module, where: str | Path, section: str = "clip") -> None:
    """``UserError`` when the recorded clip length / crop size do not fit the model."""
    clip = meta.clip
    img = getattr(model, "img_size", None)
    if clip.num_frames != getattr(model, "num_frames", clip.num_frames):
        raise UserError(
            f"checkpoint {where}: meta['{section}']['num_frames']={clip.num_frames} but the model was built for "
            f"num_frames={model.num_frames}; fix the checkpoint's metadata (save it again with "
            f"xvit.engine.checkpoint.save_model and num_frames={model.num_frames})"
        )
    if img is not None and clip.crop_size != img:
        raise UserError(
            f"checkpoint {where}: meta['{section}']['crop_size']={clip.crop_size} but the model was built for "
            f"img_size={img}; fix the checkpoint's metadata (crop_size={img})"
        )


def load_checkpoint(path: str | Path, device: str = "cpu", **overrides) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the model recorded in ``path``, load its weights strictly, check its clip spec.

    ``overrides`` replace options of the recorded model (e.g. ``fused_attn=False``). The model is
    returned in eval mode on ``device``. It is built on the meta device and takes the loaded tensors
    as they are (``assign``): no time goes into a random initialisation that the weights replace
    (~2 s for ViT-B/16 on this machine's CPU), and a strict load leaves no tensor unset.
    """
    from xvit.models import create_model
    from xvit.models.weights import load_pretrained

    raw = read_raw_meta(path)
    meta = CheckpointMeta.from_dict(raw)
    cfg = meta.model
    with torch.device("meta"):
        model = create_model(
            cfg["name"],
            num_frames=cfg["num_frames"],
            num_classes=cfg["num_classes"],
            img_size=cfg["img_size"],
            **{**cfg.get("options", {}), **overrides},
        )
    load_pretrained(model, path, strict=True, assign=True)
    check_clip_fits(meta, model, path, section="clip" if "clip" in raw else "data")
    return model.to(device).eval(), meta


def load_model(checkpoint: str | Path, device: str = "cpu", **overrides) -> tuple[nn.Module, ClipSpec]:
    """A model in eval mode and its ``ClipSpec``, from a checkpoint written by ``xvit train``.

    The ``ClipSpec`` says how to feed it: frames, sampling, crop, normalisation, test views and
    class names (``xvit.engine.eval.predict.predict_video(model, clip, path)`` uses it).
    """
    model, meta = load_checkpoint(checkpoint, device, **overrides)
    return model, meta.clip
