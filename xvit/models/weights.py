"""Loading weights into any model (paper §4: ImageNet ViT initialisation), never silently
dropping any.

Three sources are recognised:

- an ImageNet image ViT in timm's format (``.pth``/``.bin``/``.safetensors`` state dict, with or
  without its classifier): backbone weights are copied by name, the spatial position embedding
  is resampled when the grid differs, temporal modules and the head keep their own init
  (TimeSformer's temporal attention starts as a copy of the spatial one, as its official code does);
- a checkpoint of the public X-ViT reference code (PySlowFast layout: ``model_state`` with
  ``base_model.*`` and ``consensus.*``): mapped to xvit's names; its 8-frame temporal embedding is
  tiled to the model's frame count, as the reference code reuses it for frames 8-15;
- a checkpoint written by xvit (safetensors with ``xvit`` metadata). Of the same model and task
  (name, number of classes, video or image) it is loaded whole and strictly. Of another model or
  task, e.g. an image ViT trained with ``xvit train --config synthetic_images``, it *initialises*
  the model (``transfer``): the ViT backbone (patch and position embeddings, blocks, final norm)
  must fit exactly and is loaded, every other tensor the two share by name and shape is loaded
  too, except the classifier; the rest of the model (temporal embedding, temporal attention head,
  TimeSformer's temporal attention, the classifier) starts at its init, and what the file holds
  beyond that is dropped, all named in one log line.

Files are read with safetensors or ``torch.load(weights_only=True)``: nothing is unpickled.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from timm.layers import resample_abs_pos_embed
from torch import Tensor, nn

from xvit.errors import UserError
from xvit.models.layers import resize_temporal_embed

log = logging.getLogger(__name__)

REFERENCE_FRAMES_HINT = "base_model.temp_embed"
# The tensors of an image ViT's backbone (timm's names), which every ViT family here shares.
_BACKBONE = re.compile(
    r"cls_token|pos_embed|(patch_embed\.proj|norm|blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2))"
    r"\.(weight|bias)"
)


SHIPPED = Path(__file__).parent / "shipped"  # weights that ship with the package (see shipped_weights)


def shipped_weights() -> dict[str, Path]:
    """The weights shipped inside the package, by name (the file name without ``.safetensors``):
    ``vit_micro_patch8_64.stills``, the image ViT of ``xvit train --config synthetic_images``."""
    return {p.name.removesuffix(".safetensors"): p for p in sorted(SHIPPED.glob("*.safetensors"))}


def resolve_weights(spec: str | Path) -> Path:
    """A weights file: the name of a shipped checkpoint (``shipped_weights``) or a path (``~`` expanded)."""
    return shipped_weights().get(str(spec)) or Path(spec).expanduser()


def is_backbone(name: str) -> bool:
    """Whether ``name`` is a tensor of the image-ViT backbone (patch/position embedding, blocks, norm)."""
    return _BACKBONE.fullmatch(name) is not None


@dataclass
class LoadReport:
    """What a load did, by parameter name."""

    source: str
    kind: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # model keys the file did not provide
    unexpected: list[str] = field(default_factory=list)  # file keys the model has no use for
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (name, file shape, model shape)
    adapted: list[str] = field(default_factory=list)  # e.g. resampled position embeddings

    def summary(self) -> str:
        """One line: what was loaded, adapted, left at its init (new) and left unused (dropped)."""
        parts = [f"loaded {len(self.loaded)} tensors from {self.source} ({self.kind})"]
        parts += [f"adapted: {a}" for a in self.adapted]
        if self.missing:
            parts.append(f"kept their own init ({len(self.missing)}): {_abbrev(self.missing)}")
        if self.unexpected:
            parts.append(f"unused from the file ({len(self.unexpected)}): {_abbrev(self.unexpected)}")
        parts += [f"shape mismatch, not loaded: {n} file {tuple(a)} vs model {tuple(b)}" for n, a, b in self.mismatched]
        return "; ".join(parts)


def _abbrev(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")


def read_state_dict(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and safetensors metadata of a weights file; unwraps the usual containers.

    Accepts a bare state dict or one nested under ``model_state`` (PySlowFast), ``state_dict``,
    ``model`` or ``module``, and strips a ``module.`` prefix (DDP).
    """
    path = resolve_weights(path)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist; pass the path of a .safetensors/.pth/.bin checkpoint")
    metadata: dict[str, str] = {}
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch.load(weights_only=True) met a Python object
        raise UserError(
            f"{path} holds pickled Python objects besides tensors, which xvit does not load (unpickling can run "
            "code); save the weights as safetensors (safetensors.torch.save_file(model.state_dict(), "
            "'weights.safetensors')) or as a plain dict of tensors"
        ) from None
    except Exception as err:  # corrupt file, not a checkpoint, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"cannot read weights from {path} ({first[:200]}); it must be a safetensors file or a plain tensor "
            "state dict (.pth/.bin)"
        ) from None
    is_reference = isinstance(obj, dict) and "model_state" in obj
    for key in ("model_state", "state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise UserError(f"{path} does not hold a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    if is_reference:
        metadata.setdefault("layout", "x-vit-reference")
    return state, metadata


def detect_kind(state: dict[str, Tensor], metadata: dict[str, str]) -> str:
    if "xvit" in metadata:
        return "xvit"
    if metadata.get("layout") == "x-vit-reference" or any(k.startswith(("base_model.", "consensus.")) for k in state):
        return "x-vit-reference"
    if "patch_embed.proj.weight" in state:
        return "timm-vit"
    raise UserError(
        "unrecognised checkpoint: expected a timm ViT state dict (patch_embed.proj.weight, blocks.N...), "
        "an X-ViT reference checkpoint (model_state with base_model.*), or an xvit checkpoint"
    )


def from_reference(state: dict[str, Tensor], num_frames: int) -> dict[str, Tensor]:
    """Rename a reference-code state dict to xvit's names; tile its temporal embedding."""
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        if k.startswith("base_model."):
            out[k.removeprefix("base_model.")] = v
        elif k.startswith("consensus."):
            out["head." + k.removeprefix("consensus.")] = v
        else:
            out[k] = v  # e.g. the unused new_fc.*: reported as unexpected
    temp = out.get("temp_embed")
    if temp is not None and temp.shape[1] != num_frames:
        reps = -(-num_frames // temp.shape[1])
        out["temp_embed"] = temp.repeat(1, reps, 1, 1)[:, :num_frames]  # frame t uses embedding t mod 8
    return out


def adapt_tensor(name: str, value: Tensor, target: Tensor, model: nn.Module, report: LoadReport) -> Tensor | None:
    """Resample position/temporal embeddings to the model's shape; None if it cannot fit."""
    if value.shape == target.shape:
        return value
    if name == "pos_embed" and value.ndim == 3 and value.shape[-1] == target.shape[-1]:
        grid = model.img_size // model.patch_size
        report.adapted.append(f"pos_embed {tuple(value.shape)} -> {tuple(target.shape)} (bicubic)")
        return resample_abs_pos_embed(value, (grid, grid), num_prefix_tokens=1)
    if name in ("temp_embed", "time_embed") and value.shape[-1] == target.shape[-1]:
        report.adapted.append(f"{name} {value.shape[1]} -> {target.shape[1]} frames (linear)")
        return resize_temporal_embed(value.reshape(1, value.shape[1], 1, -1), target.shape[1]).reshape(target.shape)
    return None


def load_state_dict_reported(
    model: nn.Module,
    state: dict[str, Tensor],
    report: LoadReport,
    skip_prefixes: tuple[str, ...] = (),
    assign: bool = False,
) -> LoadReport:
    """Copy every tensor whose name the model has (adapting embeddings), report the rest.

    ``assign``: the model's tensors become the loaded ones instead of being copied into (a model
    built on the meta device has nothing to copy into)."""
    own = model.state_dict()
    new: dict[str, Tensor] = {}
    for name, value in state.items():
        if name not in own or name.startswith(skip_prefixes):
            report.unexpected.append(name)
            continue
        fitted = adapt_tensor(name, value, own[name], model, report)
        if fitted is None:
            report.mismatched.append((name, tuple(value.shape), tuple(own[name].shape)))
            continue
        new[name] = fitted.to(own[name].dtype)
    report.loaded = sorted(new)
    report.missing = [n for n in own if n not in new and not any(m[0] == n for m in report.mismatched)]
    model.load_state_dict(new, strict=False, assign=assign)
    return report


def classifier_names(model: nn.Module) -> set[str]:
    """Names of the parameters of the model's final classifier (``model.get_classifier()``)."""
    get = getattr(model, "get_classifier", None)
    if get is None:
        return set()
    ids = {id(p) for p in get().parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def image_init(model: nn.Module, state: dict[str, Tensor], report: LoadReport) -> dict[str, Tensor]:
    """An image ViT's tensors as the family starts from them (``model.adapt_image_weights``, e.g.
    TimeSformer's temporal attention copied from the spatial one); unchanged for other families."""
    adapt = getattr(model, "adapt_image_weights", None)
    if adapt is None:
        return state
    out, note = adapt(state)
    if note:
        report.adapted.append(note)
    return out


def _same_task(metadata: dict[str, str], model: nn.Module) -> bool:
    """Whether an xvit checkpoint is of ``model``'s own model and task (name, classes, video or image)."""
    own = getattr(model, "model_config", None)
    if not own:
        return True  # a model not built by create_model: the strict load of before
    src = json.loads(metadata["xvit"]).get("model") or {}
    return (
        src.get("name") == own["name"]
        and src.get("num_classes") == own["num_classes"]
        and (src.get("num_frames", 8) > 1) == (own["num_frames"] > 1)
    )


def transfer(model: nn.Module, state: dict[str, Tensor], report: LoadReport, assign: bool = False) -> LoadReport:
    """Initialise ``model`` from the weights of another model or task (see the module docstring).

    The backbone must fit: a tensor it lacks or one of another size is a ``UserError`` (a ViT of
    another width, depth or patch size). The classifier is never taken.
    """
    own = model.state_dict()
    state = image_init(model, state, report)
    need, have = {n for n in own if is_backbone(n)}, {n for n in state if is_backbone(n)}
    if need != have:
        odd = sorted(need - have) or sorted(have - need)
        where = "has no" if need - have else "has a backbone tensor the model lacks,"
        raise UserError(
            f"{report.source} {where} {odd[0]}: its ViT backbone ({len(have)} tensors) is not the model's "
            f"({len(need)}); initialise from a checkpoint of the same width and depth"
        )
    head = classifier_names(model)
    kept = {n: v for n, v in state.items() if n not in head}
    load_state_dict_reported(model, kept, report, assign=assign)
    report.unexpected += sorted(n for n in state if n in head)
    if report.mismatched:
        n, a, b = report.mismatched[0]
        raise UserError(
            f"{report.source}: {n} is {tuple(a)} in the file but {tuple(b)} in the model; the checkpoint is of another "
            f"size (width, depth, patch or heads), initialise from one of the model's size"
        )
    return report


def load_pretrained(model: nn.Module, path: str | Path, strict: bool | None = None, assign: bool = False) -> LoadReport:
    """Initialise ``model`` from ``path`` (see the module docstring); returns and logs the report.

    ``strict=None`` (the default) loads an xvit checkpoint of the same model and task whole and
    strictly, and one of another model or task by ``transfer``; every other source by name.
    ``strict=True`` raises ``UserError`` if any tensor is missing, unexpected or mismatched
    (``xvit.load_model``); ``strict=False`` loads what fits by name and warns about the rest.
    ``assign``: see ``load_state_dict_reported``.
    """
    state, metadata = read_state_dict(path)
    kind = detect_kind(state, metadata)
    report = LoadReport(source=str(path), kind=kind)
    if kind == "xvit" and strict is None and not _same_task(metadata, model):
        src = json.loads(metadata["xvit"]).get("model") or {}
        report.kind = f"xvit checkpoint of {src.get('name')}, {src.get('num_classes')} classes: transfer"
        log.info("%s", transfer(model, state, report, assign=assign).summary())
        return report
    if kind == "x-vit-reference":
        state = from_reference(state, getattr(model, "num_frames", 8))
    if kind == "timm-vit":
        state = image_init(model, state, report)
    # An image ViT's classifier (head.weight/bias, 1000 or 21843 classes) never fits a video head.
    skip = ("head.",) if kind == "timm-vit" else ()
    load_state_dict_reported(model, state, report, skip_prefixes=skip, assign=assign)
    strict = (kind == "xvit") if strict is None else strict
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise UserError(f"strict load of {path} failed: {report.summary()}")
    # the reference code's checkpoints carry an unused classifier, new_fc.*: expected, not a mismatch
    unexpected = [n for n in report.unexpected if not (kind == "x-vit-reference" and n.startswith("new_fc."))]
    level = (
        logging.WARNING
        if report.mismatched or (kind != "timm-vit" and (report.missing or unexpected))
        else logging.INFO
    )
    log.log(level, "%s", report.summary())
    if level == logging.WARNING:  # a plain script (no logging set up) sees it too
        warnings.warn(f"pretrained weights did not fit the model exactly: {report.summary()}", stacklevel=2)
    return report
