"""Exporting a checkpoint for deployment: ``torch.export`` (pt2) and ONNX, checked against eager.

The model is traced once with ``torch.export`` (under ``no_grad``, so the graph holds inference
ops only; the batch dimension is dynamic, frames and size are fixed). ``pt2`` saves that
``ExportedProgram`` with ``torch.export.save``; ``onnx`` translates it with the ``torch.onnx``
exporter (dynamo) into a model whose input ``video`` is ``(batch, 3, T, S, S)``.

Each export carries what a consumer needs without xvit, as JSON (``EXPORT_KEYS``): the
``ClipSpec`` (frames, sampling, crop, short side, mean, std, views, class names) and the model's
``create_model`` arguments, in ONNX ``metadata_props`` or in the pt2 archive's extra files.

``quantize="int8"`` (ONNX only) writes the fp32 export to a temporary file and quantizes it
dynamically with onnxruntime's tools (``quantize_onnx``): int8 weights for every linear layer,
activations quantized per call (``"uint8"``: unsigned weights, slower, no int16 saturation on
CPUs without VNNI); the metadata is carried over, with ``QUANT_KEY`` added.

Verification (``verify_export``): the file as written is loaded back and run on a random clip
(batch 2) and on the views of a real decoded video (an H.264 clip generated for the purpose, or
``--video``), against the eager model; for ONNX both the exported program and onnxruntime are
checked. The largest absolute logit difference must stay within ``TOLERANCE`` (fp32). An int8
file is held to ``INT8_TOLERANCE`` on its class probabilities instead, and the checks report its
logit difference and count the clips whose top-1 class it keeps.
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
from xvit.engine.deploy.onnx_model import (
    CLIP_KEY,
    DATA_KEY,
    INPUT_KEY,
    MODEL_KEY,
    OUTPUT_KEY,
    QUANT_KEY,
    OnnxModel,
    require,
)
from xvit.engine.eval.predict import video_views
from xvit.errors import UserError

FORMATS = ("onnx", "pt2")
# --quantize choices (ONNX only) -> the weight type. Activations are uint8 either way. On x86 CPUs
# without VNNI (AVX2 only, such as this machine's) onnxruntime's uint8 x int8 kernel sums pairs of
# products in int16 and can saturate; uint8 x uint8 cannot, and is slower (docs/deployment.md).
QUANTIZE = {"int8": "QInt8", "uint8": "QUInt8"}
TOLERANCE = 1e-4  # max |logit difference| allowed between an export and eager PyTorch (fp32)
# int8 / uint8: max |difference| of the class probabilities (softmax of the logits, what xvit
# predict prints) from eager PyTorch's. The graph itself is checked at TOLERANCE in the fp32 file
# it is quantized from; this bounds what quantization changes, in units that mean the same for
# every model (logits scale with the model; probabilities do not). Measured for the main job's
# X-ViT (int8, this AVX2 CPU): 0.003 on the check clips, 0.058 on the worst of 84 val clips; < 0.001
# for a random nano X-ViT; while that trained model with the mixing left out of one block moves
# them by 0.86 (docs/deployment.md). Accuracy is measured on data, not here.
INT8_TOLERANCE = 0.1
FP32_RUNTIME = "onnxruntime (CPU)"  # the fp32 check's runtime name
QUANT_OPS = ("MatMul",)  # what quantize_dynamic quantizes: every linear layer (the head's Gemms become MatMuls)


def quant_text(quantize: str) -> str:
    """``QUANT_KEY``'s value: the quantization in words."""
    return (
        f"{quantize} dynamic (onnxruntime.quantization.quantize_dynamic): MatMul weights {quantize} "
        f"({QUANTIZE[quantize]}, one scale per tensor), their activations quantized to uint8 per call; "
        "attention products, conv, norms and softmax in fp32"
    )


def quant_runtime(quantize: str) -> str:
    """The checks' name of the onnxruntime session on a ``quantize`` file: ``onnxruntime int8 (CPU)``."""
    return f"onnxruntime {quantize} (CPU)"


MAX_BATCH = 4096  # upper bound of the dynamic batch dimension
# ONNX opset of an export: 23 has Attention, one op for scaled_dot_product_attention, which
# onnxruntime (>= 1.23) runs 5% (fp32) to 11% (int8) faster than the MatMul/Softmax/Transpose
# chain of opset 20 at ViT-Tiny 8x224 (docs/deployment.md); --opset 20 for older runtimes.
DEFAULT_OPSET = 23
PT2_META_FILE = "xvit.json"  # the extra file of a pt2 archive holding the metadata
QUIET_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx")  # INFO chatter of the ONNX exporter


def export_metadata(model_config: dict, clip: ClipSpec, data: dict | None = None) -> dict[str, str]:
    """The metadata every export carries: ``EXPORT_KEYS`` -> text (``DATA_KEY`` only with ``data``)."""
    S, T = clip.crop_size, clip.num_frames
    mean, std = list(clip.mean), list(clip.std)
    meta = {
        CLIP_KEY: json.dumps(clip.to_dict()),
        MODEL_KEY: json.dumps(model_config),
        INPUT_KEY: f"video: float32 (batch, 3, {T}, {S}, {S}), RGB in [0, 1] then (x - {mean}) / {std}",
        OUTPUT_KEY: f"logits: float32 (batch, {len(clip.class_names) or 'num_classes'}); softmax for probabilities",
    }
    if data:
        meta[DATA_KEY] = json.dumps(data)
    return meta


def read_pt2_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a pt2 export (``EXPORT_KEYS`` -> text); loads the program."""
    files = {PT2_META_FILE: ""}
    torch.export.load(str(path), extra_files=files)
    return json.loads(files[PT2_META_FILE])


def export_program(model: nn.Module, num_frames: int, img_size: int) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` for ``(batch, 3, num_frames, img_size, img_size)`` input.

    Traced with batch 2 (a batch of 1 would be specialised), under ``no_grad``, in the model's
    export form (``export_form``): the temporal mixing as slices and concatenation.
    """
    x = torch.randn(2, 3, num_frames, img_size, img_size)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with torch.no_grad(), export_form(model):
        return torch.export.export(model.eval(), (x,), dynamic_shapes=({0: batch},))


@contextlib.contextmanager
def export_form(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in its export form for the duration (``VideoModel.set_export_form``): X-ViT's K/V
    mixing and TSM-ViT's shift as slices + concatenation, which ONNX holds as Slice/Concat instead
    of the ScatterND that in-place slice assignments become (onnxruntime ran the in-place graph at
    0.42x eager PyTorch, ViT-Tiny 8x224). Models without temporal exchange are traced as they are."""
    set_form = getattr(model, "set_export_form", None)
    if set_form is None:
        yield model
        return
    set_form(True)
    try:
        yield model
    finally:
        set_form(False)


def save_pt2(program: torch.export.ExportedProgram, path: str | Path, metadata: dict[str, str]) -> None:
    """``torch.export.save`` with the metadata as the archive's extra file ``xvit.json``."""
    buffer = io.BytesIO()  # torch.export.save wants a .pt2 name or a buffer; atomic_write's is a .tmp
    torch.export.save(program, buffer, extra_files={PT2_META_FILE: json.dumps(metadata)})
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))


def to_onnx(program: torch.export.ExportedProgram, metadata: dict[str, str], opset: int | None = None):
    """The ONNX model (``onnx.ModelProto``) of an exported program at ``opset`` (default
    ``DEFAULT_OPSET``): input ``video``, output ``logits``, dimension 0 named ``batch``,
    ``metadata`` in ``metadata_props``."""
    onnx = require("onnx")
    require("onnxscript")  # the torch.onnx (dynamo) exporter's translation library
    with contextlib.redirect_stdout(io.StringIO()), _quiet(QUIET_LOGGERS):  # the exporter's progress
        exported = torch.onnx.export(
            program, dynamo=True, opset_version=opset or DEFAULT_OPSET, input_names=["video"], output_names=["logits"]
        )
    proto = exported.model_proto
    _name_batch_dim(proto)
    onnx.helper.set_model_props(proto, metadata)
    return proto


@contextlib.contextmanager
def _quiet(names: tuple[str, ...], level: int = logging.WARNING) -> Iterator[None]:
    """Raise the named loggers to ``level`` for the duration (the ONNX optimiser logs every rewrite)."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
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


def quantize_onnx(src: str | Path, dst: str | Path, metadata: dict[str, str], quantize: str = "int8") -> None:
    """Dynamic 8-bit quantization of the fp32 ONNX export ``src`` into ``dst``; ``metadata`` and
    ``QUANT_KEY`` go into its ``metadata_props`` (quantize_dynamic does not keep them).

    ``onnxruntime.quantization.quantize_dynamic`` with ``QUANTIZE[quantize]`` weights (one scale
    per tensor) for every linear layer: qkv, output projection and MLP of the blocks and of the
    head's temporal block, and the head's two final linears (54 in X-ViT ViT-Tiny and ViT-B).
    onnxruntime runs each as one DynamicQuantizeMatMul that quantizes its input to uint8 from
    that call's range. The attention products (two activations), the patch-embedding conv, norms
    and softmax stay fp32. Per-channel weight scales, ``reduce_range``, quantizing the conv too and
    onnxruntime's pre-processing (``quant_pre_process``) were each slower, or changed more
    predictions, here (docs/deployment.md).
    """
    onnx = require("onnx")
    quantization = require("onnxruntime.quantization")
    with (
        tempfile.TemporaryDirectory() as tmp,
        _quiet(("",), logging.ERROR),
    ):  # advice to pre-process, on the root logger
        path = Path(tmp) / "int8.onnx"
        quantization.quantize_dynamic(
            str(src),
            str(path),
            op_types_to_quantize=list(QUANT_OPS),
            weight_type=getattr(quantization.QuantType, QUANTIZE[quantize]),
        )
        proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {**metadata, QUANT_KEY: quant_text(quantize)})
    save_onnx(proto, dst)


@dataclass(frozen=True)
class Check:
    """One comparison of an export with eager PyTorch."""

    runtime: str  # "exported program", "onnxruntime (CPU)", "onnxruntime int8 (CPU)"
    input: str  # what was fed, in words
    shape: tuple[int, ...]
    max_diff: float  # max |logit difference|
    prob_diff: float = 0.0  # max |difference| of the softmax probabilities
    top1_agree: int = 0  # clips whose top-1 class is the eager model's
    quantized: bool = False  # an int8 / uint8 file: judged by prob_diff (fp32: by max_diff)


@dataclass
class ExportReport:
    """What ``export_checkpoint`` did: the file, its settings and every check."""

    path: Path
    format: str
    clip: ClipSpec
    num_classes: int
    opset: int | None
    seconds: float  # trace, translation and writing of the (fp32) file
    tolerance: float
    checks: list[Check] = field(default_factory=list)
    quantize: str | None = None  # "int8", "uint8" or None (fp32)
    int8_tolerance: float = INT8_TOLERANCE
    quantize_seconds: float | None = None
    size_bytes: int = 0  # the written file
    fp32_size_bytes: int | None = None  # int8: the fp32 file it was quantized from

    @property
    def max_diff(self) -> float:
        """Max |logit difference| of the fp32 checks (exported program, fp32 onnxruntime)."""
        return max(c.max_diff for c in self.checks if not c.quantized)

    @property
    def max_prob_diff(self) -> float | None:
        """Max |probability difference| of the int8 checks (None without int8)."""
        diffs = [c.prob_diff for c in self.checks if c.quantized]
        return max(diffs) if diffs else None

    @property
    def max_quantized_diff(self) -> float | None:
        """Max |logit difference| of the int8 checks (None without int8)."""
        diffs = [c.max_diff for c in self.checks if c.quantized]
        return max(diffs) if diffs else None

    @property
    def top1_agreement(self) -> tuple[int, int]:
        """(clips whose top-1 the int8 file keeps, clips checked)."""
        checks = [c for c in self.checks if c.quantized]
        return sum(c.top1_agree for c in checks), sum(c.shape[0] for c in checks)

    @property
    def passed(self) -> bool:
        int8_ok = self.max_prob_diff is None or self.max_prob_diff <= self.int8_tolerance
        return self.max_diff <= self.tolerance and int8_ok

    def to_dict(self) -> dict:
        agree, clips = self.top1_agreement
        return {
            "path": str(self.path),
            "format": self.format,
            "quantize": self.quantize,
            "opset": self.opset,
            "num_frames": self.clip.num_frames,
            "crop_size": self.clip.crop_size,
            "num_classes": self.num_classes,
            "seconds": round(self.seconds, 3),
            "quantize_seconds": None if self.quantize_seconds is None else round(self.quantize_seconds, 3),
            "size_bytes": self.size_bytes,
            "fp32_size_bytes": self.fp32_size_bytes,
            "tolerance": self.tolerance,
            "max_diff": self.max_diff,
            "int8_tolerance": self.int8_tolerance if self.quantize else None,
            "max_quantized_diff": self.max_quantized_diff,
            "max_prob_diff": self.max_prob_diff,
            "top1_agree": [agree, clips] if self.quantize else None,
            "passed": self.passed,
            "checks": [{**c.__dict__, "shape": list(c.shape)} for c in self.checks],
        }


@torch.no_grad()
def compare(model: nn.Module, run: Callable[[Tensor], Tensor], x: Tensor) -> tuple[float, float, int]:
    """``run(x)`` against the eager ``model(x)``: (max |logit difference|, max |softmax probability
    difference|, clips with the same top-1 class)."""
    ref = model(x).float()  # (B, K)
    out = run(x).float()
    if out.shape != ref.shape:
        raise RuntimeError(f"export output shape {tuple(out.shape)} differs from eager {tuple(ref.shape)}")
    prob = (out.softmax(dim=1) - ref.softmax(dim=1)).abs().max().item()
    agree = int((out.argmax(dim=1) == ref.argmax(dim=1)).sum())
    return (out - ref).abs().max().item(), prob, agree


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
    model: nn.Module,
    runners: dict[str, Callable[[Tensor], Tensor]],
    inputs: dict[str, Tensor],
    quantized: tuple[str, ...] = (),
) -> list[Check]:
    """Every runner on every input against the eager model; runners named in ``quantized`` are 8-bit."""
    return [
        Check(runtime, name, tuple(x.shape), *compare(model, run, x), quantized=runtime in quantized)
        for runtime, run in runners.items()
        for name, x in inputs.items()
    ]


def default_out(checkpoint: str | Path, fmt: str, quantize: str | None = None) -> Path:
    """``best.safetensors`` -> ``best.onnx`` / ``best.int8.onnx`` (``quantize``) / ``best.pt2`` beside it."""
    return Path(checkpoint).with_suffix(f".{quantize}.{fmt}" if quantize else f".{fmt}")


def export_checkpoint(
    checkpoint: str | Path,
    fmt: str,
    out: str | Path | None = None,
    *,
    frames: int | None = None,
    opset: int | None = None,
    video: str | Path | None = None,
    tolerance: float = TOLERANCE,
    quantize: str | None = None,
    int8_tolerance: float = INT8_TOLERANCE,
) -> ExportReport:
    """Export ``checkpoint`` to ``out`` (default beside it) as ``fmt`` and verify the written file.

    ``frames``: clip length of the export (default: the checkpoint's; the temporal embedding is
    interpolated for another). ``quantize`` (ONNX, ``QUANTIZE``): the file written is the
    dynamically quantized model, checked beside the fp32 export it was made from. A file whose checks exceed
    ``tolerance`` (fp32) or ``int8_tolerance`` is removed again; the report says so (``passed``).
    """
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is unknown; use one of {', '.join(FORMATS)}")
    if quantize is not None and (quantize not in QUANTIZE or fmt != "onnx"):
        raise UserError(f"--quantize {quantize}: use {' or '.join(QUANTIZE)}, with --format onnx")
    if frames is not None and frames < 1:
        raise UserError(f"--frames {frames}: must be >= 1")
    model, meta = load_checkpoint(checkpoint)
    clip = meta.clip.replace(num_frames=frames) if frames else meta.clip
    config = {**meta.model, "num_frames": clip.num_frames}
    out = Path(out) if out else default_out(checkpoint, fmt, quantize)
    report = ExportReport(
        out, fmt, clip, model.num_classes, None, 0.0, tolerance, quantize=quantize, int8_tolerance=int8_tolerance
    )
    start = time.perf_counter()
    program = export_program(model, clip.num_frames, clip.crop_size)
    metadata = export_metadata(config, clip, meta.data)
    with tempfile.TemporaryDirectory() as tmp:  # an int8 export's fp32 file lives here
        if fmt == "pt2":
            save_pt2(program, out, metadata)
            report.seconds = time.perf_counter() - start
            runners = {"exported program (reloaded)": torch.export.load(str(out)).module()}
        else:
            runners = _write_onnx(program, metadata, opset, report, Path(tmp), start)
        report.size_bytes = out.stat().st_size
    quantized = (quant_runtime(quantize),) if quantize else ()
    report.checks = verify_export(model, runners, verification_inputs(clip, video), quantized)
    if not report.passed:
        out.unlink(missing_ok=True)
    return report


def _write_onnx(
    program: torch.export.ExportedProgram,
    metadata: dict[str, str],
    opset: int | None,
    report: ExportReport,
    tmp: Path,
    start: float,
) -> dict[str, Callable[[Tensor], Tensor]]:
    """The ONNX file of ``report`` (fp32, or int8 from an fp32 file in ``tmp``); fills in its opset,
    times and the fp32 size, and returns the runners to check: name -> callable."""
    proto = to_onnx(program, metadata, opset)
    report.opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    fp32 = tmp / "fp32.onnx" if report.quantize else report.path
    save_onnx(proto, fp32)
    report.seconds = time.perf_counter() - start
    runners = {"exported program": program.module(), FP32_RUNTIME: OnnxModel(fp32)}
    if report.quantize:
        begin = time.perf_counter()
        quantize_onnx(fp32, report.path, metadata, report.quantize)
        report.quantize_seconds = time.perf_counter() - begin
        report.fp32_size_bytes = fp32.stat().st_size
        runners[quant_runtime(report.quantize)] = OnnxModel(report.path)
    return runners
