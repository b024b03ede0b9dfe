"""xvit's own model checkpoints: weights as safetensors, with the metadata needed to rebuild the
model and its test pipeline (``meta["model"]``: the ``create_model`` arguments; ``meta["data"]``:
class names, frames, sampling, crop, normalisation) stored as JSON inside the file.

Written atomically (temporary file, then rename) so a crash never leaves a torn checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from xvit.errors import UserError


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def save_model(path: str | Path, model: nn.Module, meta: dict | None = None) -> None:
    """Write ``model``'s weights and ``meta`` to ``path`` (a .safetensors file), atomically.

    ``meta["model"]`` defaults to the model's ``model_config`` (set by ``create_model``).
    """
    model = unwrap(model)
    meta = dict(meta or {})
    meta.setdefault("model", getattr(model, "model_config", None))
    if meta["model"] is None:
        raise ValueError("model has no model_config; build it with xvit.create_model or pass meta['model']")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"xvit": json.dumps(meta)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_meta(path: str | Path) -> dict:
    """The metadata stored by ``save_model``; ``UserError`` if ``path`` is not an xvit checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("xvit")
    except Exception as err:
        raise UserError(f"{path} is not a safetensors checkpoint ({err})") from err
    if raw is None:
        raise UserError(f"{path} has no xvit metadata; was it written by xvit (xvit train / xvit.checkpoint.save_model)?")
    return json.loads(raw)


def load_model(path: str | Path, map_location: str = "cpu", **overrides) -> tuple[nn.Module, dict]:
    """Rebuild the model recorded in ``path`` and load its weights strictly.

    ``overrides`` replace options of the recorded model (e.g. ``fused_attn=False``).
    """
    from xvit.models import create_model
    from xvit.weights import load_pretrained

    meta = read_meta(path)
    cfg = meta["model"]
    model = create_model(
        cfg["name"],
        num_frames=cfg["num_frames"],
        num_classes=cfg["num_classes"],
        img_size=cfg["img_size"],
        **{**cfg.get("options", {}), **overrides},
    )
    load_pretrained(model, path, strict=True)
    return model.to(map_location).eval(), meta
