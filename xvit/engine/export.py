"""Exporting a checkpoint for deployment: ``torch.export`` (pt2) and ONNX, checked against eager.

The model is traced once with ``torch.export`` (under ``no_grad``, so the graph holds inference
ops only; the batch dimension is dynamic, frames and size are fixed). ``pt2`` saves that
``ExportedProgram`` with ``torch.export.save``; ``onnx`` translates it with the ``torch.onnx``
exporter (dynamo) into a model whose input ``video`` is ``(batch, 3, T, S, S)``.

Each export carries what a consumer needs without xvit, as JSON (``EXPORT_KEYS``): the
``ClipSpec`` (frames, sampling, crop, short side, mean, std, views, class names) and the model's
``create_model`` arguments, in ONNX ``metadata_props`` or in the pt2 archive's extra files.

Verification (``verify_export``): the file as written is loaded back and run on a random clip
(batch 2) and on the views of a real decoded video (an H.264 clip generated for the purpose, or
``--video``), against the eager model; for ONNX both the exported program and onnxruntime are
checked. The largest absolute logit difference must stay within ``TOLERANCE`` (fp32).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from xvit.data.bench import make_bench_video
from xvit.data.clip import ClipSpec
from xvit.engine.checkpoint import atomic_write, load_checkpoint
from xvit.engine.onnx_model import CLIP_KEY, INPUT_KEY, MODEL_KEY, OUTPUT_KEY, OnnxModel, require
from xvit.engine.predict import video_views
from xvit.errors import UserError

FORMATS = ("onnx", "pt2")
TOLERANCE = 1e-4  # max |logit difference| allowed between an export and eager PyTorch (fp32)
MAX_BATCH = 4096  # upper bound of the dynamic batch dimension
PT2_META_FILE = "xvit.json"  # the extra file of a pt2 archive holding the metadata
QUIET_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx")  # INFO chatter of the ONNX exporter


def export_metadata(model_config: dict, clip: ClipSpec) -> dict[str, str]:
    """The metadata every export carries: ``EXPORT_KEYS`` -> text."""
    S, T = clip.crop_size, clip.num_frames
    mean, std = list(clip.mean), list(clip.std)
    return {
        CLIP_KEY: json.dumps(clip.to_dict()),
        MODEL_KEY: json.dumps(model_config),
        INPUT_KEY: f"video: float32 (batch, 3, {T}, {S}, {S}), RGB in [0, 1] then (x - {mean}) / {std}",
        OUTPUT_KEY: f"logits: float32 (batch, {len(clip.class_names) or 'num_classes'}); softmax for probabilities",
    }


def read_pt2_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a pt2 export (``EXPORT_KEYS`` -> text); loads the program."""
    files = {PT2_META_FILE: ""}
    torch.export.load(str(path), extra_files=files)
    return json.loads(files[PT2_META_FILE])


def export_program(model: nn.Module, num_frames: int, img_size: int) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` for ``(batch, 3, num_frames, img_size, img_size)`` input.

    Traced with batch 2 (a batch of 1 would be specialised), under ``no_grad``.
    """
    x = torch.randn(2, 3, num_frames, img_size, img_size)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with torch.no_grad():
        return torch.export.export(model.eval(), (x,), dynamic_shapes=({0: batch},))


def save_pt2(program: torch.export.ExportedProgram, path: str | Path, metadata: dict[str, str]) -> None:
    """``torch.export.save`` with the metadata as the archive's extra file ``xvit.json``."""
    buffer = io.BytesIO()  # torch.export.save wants a .pt2 name or a buffer; atomic_write's is a .tmp
    torch.export.save(program, buffer, extra_files={PT2_META_FILE: json.dumps(metadata)})
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))


def to_onnx(program: torch.export.ExportedProgram, metadata: dict[str, str], opset: int | None = None):
    """The ONNX model (``onnx.ModelProto``) of an exported program: input ``video``, output
    ``logits``, dimension 0 named ``batch``, ``metadata`` in ``metadata_props``."""
    onnx = require("onnx")
    require("onnxscript")  # the torch.onnx (dynamo) exporter's translation library
    with contextlib.redirect_stdout(io.StringIO()), _quiet(QUIET_LOGGERS):  # the exporter's progress
        exported = torch.onnx.export(
            program, dynamo=True, opset_version=opset, input_names=["video"], output_names=["logits"]
        )
    proto = exported.model_proto
    _name_batch_dim(proto)
    onnx.helper.set_model_props(proto, metadata)
    return proto


@contextlib.contextmanager
def _quiet(names: tuple[str, ...]) -> Iterator[None]:
    """Raise the named loggers to WARNING for the duration (the ONNX optimiser logs every rewrite)."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _name_batch_dim(proto) -> None:
    """Rename the exporter's symbol for the batch size (``s0``, ``s77`` ...) to ``batch`` everywhere."""
    symbol = proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    if not symbol:
        return
    for value in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param == symbol:
                dim.dim_param = "batch"


def save_onnx(proto, path: str | Path) -> None:
    onnx = require("onnx")
    atomic_write(path, lambda tmp: onnx.save(proto, tmp))


@dataclass(frozen=True)
class Check:
    """One comparison of an export with eager PyTorch."""

    runtime: str  # "exported program", "onnxruntime (CPU)"
    input: str  # what was fed, in words
    shape: tuple[int, ...]
    max_diff: float  # max |logit difference|


@dataclass
class ExportReport:
    """What ``export_checkpoint`` did: the file, its settings and every check."""

    path: Path
    format: str
    clip: ClipSpec
    num_classes: int
    opset: int | None
    seconds: float
    tolerance: float
    checks: list[Check] = field(default_factory=list)

    @property
    def max_diff(self) -> float:
        return max(c.max_diff for c in self.checks)

    @property
    def passed(self) -> bool:
        return self.max_diff <= self.tolerance

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "format": self.format,
            "opset": self.opset,
            "num_frames": self.clip.num_frames,
            "crop_size": self.clip.crop_size,
            "num_classes": self.num_classes,
            "seconds": round(self.seconds, 3),
            "tolerance": self.tolerance,
            "max_diff": self.max_diff,
            "passed": self.passed,
            "checks": [{**c.__dict__, "shape": list(c.shape)} for c in self.checks],
        }


@torch.no_grad()
def compare(model: nn.Module, run: Callable[[Tensor], Tensor], x: Tensor) -> float:
    """Max |logit difference| between ``run(x)`` and the eager ``model(x)``."""
    ref = model(x).float()
    out = run(x).float()
    if out.shape != ref.shape:
        raise RuntimeError(f"export output shape {tuple(out.shape)} differs from eager {tuple(ref.shape)}")
    return (out - ref).abs().max().item()


def verification_inputs(clip: ClipSpec, video: str | Path | None) -> dict[str, Tensor]:
    """A random clip (batch 2) and the test views of a real decoded video: name -> ``(B, C, T, S, S)``.

    Without ``video`` a 2-second H.264 clip (moving textured shapes) is written to a temporary
    folder and decoded with ``clip``'s sampling, crops and normalisation.
    """
    S, T = clip.crop_size, clip.num_frames
    rng = torch.Generator().manual_seed(0)
    inputs = {"random clip": torch.randn(2, 3, T, S, S, generator=rng)}
    with tempfile.TemporaryDirectory() as tmp:
        if video is None:
            side = 2 * ((max(clip.test_short_side, 48) + 1) // 2)  # even sizes for yuv420p
            width = 2 * ((4 * side // 3 + 1) // 2)
            video = make_bench_video(Path(tmp) / "clip.mp4", seconds=2.0, fps=15, width=width, height=side)
            label = f"decoded H.264 clip ({clip.views_text} views)"
        else:
            label = f"{Path(video).name} ({clip.views_text} views)"
        inputs[label] = video_views(video, clip)  # (V, C, T, S, S)
    return inputs


def verify_export(
    model: nn.Module, runners: dict[str, Callable[[Tensor], Tensor]], inputs: dict[str, Tensor]
) -> list[Check]:
    """Every runner on every input against the eager model."""
    return [
        Check(runtime, name, tuple(x.shape), compare(model, run, x))
        for runtime, run in runners.items()
        for name, x in inputs.items()
    ]


def default_out(checkpoint: str | Path, fmt: str) -> Path:
    """``best.safetensors`` -> ``best.onnx`` / ``best.pt2`` beside it."""
    return Path(checkpoint).with_suffix(f".{fmt}")


def export_checkpoint(
    checkpoint: str | Path,
    fmt: str,
    out: str | Path | None = None,
    *,
    frames: int | None = None,
    opset: int | None = None,
    video: str | Path | None = None,
    tolerance: float = TOLERANCE,
) -> ExportReport:
    """Export ``checkpoint`` to ``out`` (default beside it) as ``fmt`` and verify the written file.

    ``frames``: clip length of the export (default: the checkpoint's; the temporal embedding is
    interpolated for another). A file whose checks exceed ``tolerance`` is removed again; the
    report says so (``passed``).
    """
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is unknown; use one of {', '.join(FORMATS)}")
    if frames is not None and frames < 1:
        raise UserError(f"--frames {frames}: must be >= 1")
    model, meta = load_checkpoint(checkpoint)
    clip = meta.clip.replace(num_frames=frames) if frames else meta.clip
    config = {**meta.model, "num_frames": clip.num_frames}
    out = Path(out) if out else default_out(checkpoint, fmt)
    start = time.perf_counter()
    program = export_program(model, clip.num_frames, clip.crop_size)
    metadata = export_metadata(config, clip)
    if fmt == "pt2":
        save_pt2(program, out, metadata)
        runners = {"exported program (reloaded)": torch.export.load(str(out)).module()}
    else:
        proto = to_onnx(program, metadata, opset)
        opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        save_onnx(proto, out)
        runners = {"exported program": program.module(), "onnxruntime (CPU)": OnnxModel(out)}
    seconds = time.perf_counter() - start
    report = ExportReport(out, fmt, clip, model.num_classes, opset if fmt == "onnx" else None, seconds, tolerance)
    report.checks = verify_export(model, runners, verification_inputs(clip, video))
    if not report.passed:
        out.unlink(missing_ok=True)
    return report
