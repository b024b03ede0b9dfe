"""``xvit bench-deploy``: what serving X-ViT costs in each runtime a deployer can choose, side by side
in one run: PyTorch eager, onnxruntime on the fp32 ONNX export, onnxruntime on its dynamic int8
quantization, and the ``torch.export`` program (pt2) run by PyTorch.

For every model size (X-ViT ViT-Tiny/16 and ViT-B/16 by default, 8 frames at 224 px, random
weights, 400 classes) a checkpoint in xvit's format is written and exported by the real export
path (``xvit.engine.deploy.export``: ``export_checkpoint`` with its checks, ``quantize_onnx``), each
export timed and its file size recorded. Then every runtime runs in its own worker process
(``xvit.bench.runner.Pool``, so that one runtime's memory and threads cannot touch another's),
interleaved: each pass times every runtime at each batch size in turn, the start rotated, with
``threads`` intra-op threads (torch's for eager and pt2, onnxruntime's for ONNX). A timed phase is
one untimed call, then enough calls to last ``min_seconds`` (counted in the warm-up pass). The
warm-up pass also measures peak memory: the worker's RSS high-water mark during the phase
(``xvit.bench.memory``), whole and above the worker's RSS before it loaded the model. Speed ratios
to eager are the medians of the ratios paired per pass.
"""

from __future__ import annotations

import importlib
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from xvit.bench import memory
from xvit.bench.predict import write_checkpoint
from xvit.bench.report import environment
from xvit.bench.runner import Pool
from xvit.engine.checkpoint import load_checkpoint
from xvit.engine.deploy.export import QUANTIZE, export_checkpoint, quantize_onnx, verify_export
from xvit.engine.deploy.onnx_model import OnnxModel
from xvit.models.sizes import VARIANTS, variant_name
from xvit.progress import progress_bar

RUNTIMES = ("eager", "onnx", "int8", "uint8", "pt2")
DEFAULT_RUNTIMES = ("eager", "onnx", "int8", "pt2")
RUNTIME_NAMES = {
    "eager": "PyTorch eager",
    "onnx": "onnxruntime fp32",
    "int8": "onnxruntime int8",
    "uint8": "onnxruntime uint8",
    "pt2": "torch.export pt2 (PyTorch)",
}


@dataclass(frozen=True)
class DeployConfig:
    """The run's settings (picklable: every worker gets it)."""

    sizes: tuple[str, ...] = ("tiny", "base")  # X-ViT sizes, each at its first variant (tiny, base: /16 at 224 px)
    frames: int = 8
    classes: int = 400
    batch_sizes: tuple[int, ...] = (1, 8)
    runtimes: tuple[str, ...] = DEFAULT_RUNTIMES
    threads: int = 2  # intra-op threads of every runtime
    repeats: int = 3  # timed passes
    warmup: int = 1  # untimed passes first; the first one measures memory and sizes the phases
    min_seconds: float = 2.0  # a timed phase makes at least this many seconds of calls
    seed: int = 0
    device: str = "cpu"  # read by xvit.bench.runner.worker_main
    keep_heap: bool = True  # workers keep freed memory resident (xvit.bench.memory.keep_freed_memory)


@dataclass(frozen=True)
class RuntimeSpec:
    """One runtime of one model: what a worker loads."""

    label: str  # "tiny onnx"
    runtime: str  # one of RUNTIMES
    path: str  # the checkpoint (eager), the .onnx file (onnx, int8, uint8) or the .pt2 file
    shape: tuple[int, int, int]  # (frames, height, width) of a clip


def load_runtime(runtime: str, path: str | Path, threads: int) -> Callable[[Tensor], Tensor]:
    """A callable ``(B, 3, T, S, S) -> (B, K)`` logits for ``runtime`` reading ``path``."""
    if runtime == "eager":
        return load_checkpoint(path)[0]
    if runtime in ("onnx", *QUANTIZE):
        return OnnxModel(path, threads=threads)
    if runtime == "pt2":
        return torch.export.load(str(path)).module()
    raise ValueError(f"unknown runtime {runtime!r}; one of {RUNTIMES}")


class RuntimeRunner:
    """Served by ``xvit.bench.runner.worker_main`` in a worker process: ``load``, then ``phase``."""

    def __init__(self, spec: RuntimeSpec, cfg: DeployConfig) -> None:
        self.spec, self.cfg = spec, cfg
        self.model: Callable[[Tensor], Tensor] | None = None
        self.baseline = 0  # bytes resident before the model was loaded

    def load(self) -> dict:
        if self.spec.runtime in ("onnx", *QUANTIZE):
            import onnxruntime  # noqa: F401  (its library counts in the baseline, not in the model's memory)
        memory.trim_heap()
        self.baseline = (memory.proc_status_kb("VmRSS") or 0) * 1024
        start = time.perf_counter()
        self.model = load_runtime(self.spec.runtime, self.spec.path, self.cfg.threads)
        return {"load_seconds": time.perf_counter() - start}

    @torch.inference_mode()
    def phase(self, batch: int, calls: int, memory_pass: bool) -> dict:
        """``calls`` timed calls at ``batch`` after one untimed one: seconds per call, and with
        ``memory_pass`` the peak RSS of the phase (bytes, whole and above the baseline)."""
        g = torch.Generator().manual_seed(self.cfg.seed)
        x = torch.randn(batch, 3, *self.spec.shape, generator=g)  # (B, 3, T, S, S)
        if memory_pass:
            memory.trim_heap()
            memory.reset_rss_peak()
        self.model(x)
        start = time.perf_counter()
        for _ in range(calls):
            self.model(x)
        wall = (time.perf_counter() - start) / calls
        peak = (memory.proc_status_kb("VmHWM") or 0) * 1024 if memory_pass else None
        return {"wall": wall, "calls": calls, "peak_rss": peak, "mem": None if peak is None else peak - self.baseline}


def variant(size: str) -> tuple[str, int]:
    """The X-ViT model of ``size`` (its first registered variant: ``xvit_base_patch16_224``) and its input size."""
    size, patch, img = next(v for v in VARIANTS if v[0] == size)
    return variant_name("xvit", size, patch, img), img


def prepare_size(size: str, cfg: DeployConfig, work: Path) -> tuple[dict[str, Path], dict[str, dict]]:
    """The random-weight checkpoint of X-ViT ``size`` and its exports in ``work``.

    Returns runtime -> file, and runtime -> what its export took (seconds, file size, checks)."""
    name, img = variant(size)
    torch.manual_seed(cfg.seed)
    ckpt = write_checkpoint(work / f"{name}.safetensors", name, num_classes=cfg.classes, num_frames=cfg.frames)
    files: dict[str, Path] = {"eager": ckpt}
    records: dict[str, dict] = {"eager": {"size_bytes": ckpt.stat().st_size}}
    quantized = [q for q in QUANTIZE if q in cfg.runtimes]
    if "onnx" in cfg.runtimes or quantized:
        fp32 = export_checkpoint(ckpt, "onnx", work / f"{name}.onnx")
        files["onnx"] = fp32.path
        records["onnx"] = _record(fp32.seconds, fp32.path, fp32.max_diff, fp32.passed)
    if quantized:
        model = load_checkpoint(ckpt)[0]
        x = torch.randn(2, 3, cfg.frames, img, img, generator=torch.Generator().manual_seed(cfg.seed))
        metadata = dict(OnnxModel(fp32.path).session.get_modelmeta().custom_metadata_map)
    for q in quantized:
        files[q] = work / f"{name}.{q}.onnx"
        start = time.perf_counter()
        quantize_onnx(fp32.path, files[q], metadata, q)
        seconds = time.perf_counter() - start
        check = verify_export(model, {q: OnnxModel(files[q])}, {"random clip": x}, quantized=(q,))[0]
        records[q] = {
            **_record(fp32.seconds + seconds, files[q], check.max_diff, fp32.passed),
            "quantize_seconds": round(seconds, 2),
            "prob_diff": check.prob_diff,
        }
    if "pt2" in cfg.runtimes:
        pt2 = export_checkpoint(ckpt, "pt2", work / f"{name}.pt2")
        files["pt2"] = pt2.path
        records["pt2"] = _record(pt2.seconds, pt2.path, pt2.max_diff, pt2.passed)
    return {r: files[r] for r in cfg.runtimes}, {r: records[r] for r in cfg.runtimes}


def _record(seconds: float, path: Path, max_diff: float, passed: bool) -> dict:
    return {
        "export_seconds": round(seconds, 2),
        "size_bytes": path.stat().st_size,
        "max_diff": max_diff,
        "passed": passed,
    }


def measure_size(size: str, files: dict[str, Path], cfg: DeployConfig, bar) -> dict[str, dict]:
    """Every runtime of one size, interleaved: runtime -> {"load_seconds", "phases": {batch: [...]}}
    where each phase record is one pass's ``RuntimeRunner.phase`` answer (the warm-up's first)."""
    img = variant(size)[1]
    specs = [RuntimeSpec(f"{size} {r}", r, str(p), (cfg.frames, img, img)) for r, p in files.items()]
    pool = Pool(specs, cfg, runner_cls=RuntimeRunner)
    out: dict[str, dict] = {}
    try:
        for spec in specs:
            bar.set_postfix_str(f"loading {spec.label}")
            out[spec.runtime] = {**pool.call(spec.label, "load"), "phases": {b: [] for b in cfg.batch_sizes}}
        calls: dict[tuple[str, int], int] = {}
        for p in range(cfg.warmup + cfg.repeats):
            order = specs[p % len(specs) :] + specs[: p % len(specs)]
            for batch in cfg.batch_sizes:
                for spec in order:
                    bar.set_postfix_str(f"{spec.label} batch {batch} pass {p + 1}")
                    n = calls.get((spec.runtime, batch), 1)
                    rec = pool.call(spec.label, "phase", batch, n, p == 0)
                    if "error" in rec:
                        raise RuntimeError(f"{spec.label} batch {batch}: {rec['error']}")
                    out[spec.runtime]["phases"][batch].append({**rec, "timed": p >= cfg.warmup})
                    if p == 0:
                        calls[spec.runtime, batch] = max(1, math.ceil(cfg.min_seconds / rec["wall"]))
                    bar.update()
    finally:
        pool.close()
    return out


def summarise(size: str, runtime: str, runs: dict, eager: dict | None, record: dict, batch: int) -> dict:
    """One row: clips/s (median of the timed passes, and each), ratio to eager paired per pass, memory."""
    timed = [r for r in runs["phases"][batch] if r["timed"]]
    rates = [batch / r["wall"] for r in timed]
    row = {"size": size, "runtime": runtime, "batch": batch, "clips_per_s": statistics.median(rates)}
    row["repeats"] = [round(r, 3) for r in rates]
    row["spread"] = (max(rates) - min(rates)) / row["clips_per_s"]
    if eager is not None:
        base = [r["wall"] for r in eager["phases"][batch] if r["timed"]]
        row["x_eager"] = statistics.median(b / r["wall"] for b, r in zip(base, timed))
    first = runs["phases"][batch][0]
    row["peak_rss_mib"], row["mem_mib"] = first["peak_rss"] / 2**20, first["mem"] / 2**20
    row["calls"], row["load_seconds"] = timed[0]["calls"], runs["load_seconds"]
    return {**row, **record}


def bench_deploy(cfg: DeployConfig, work: Path) -> dict:
    """The whole run; ``work`` holds the checkpoints and exports. Returns the JSON document."""
    load_before = os.getloadavg()
    rows, started = [], time.perf_counter()
    total = len(cfg.sizes) * (cfg.warmup + cfg.repeats) * len(cfg.batch_sizes) * len(cfg.runtimes)
    bar = progress_bar(total=total, desc="bench-deploy", unit="phase")
    try:
        for size in cfg.sizes:
            bar.set_postfix_str(f"exporting {size}")
            files, records = prepare_size(size, cfg, work)
            runs = measure_size(size, files, cfg, bar)
            for batch in cfg.batch_sizes:
                for r in cfg.runtimes:
                    rows.append(summarise(size, r, runs[r], runs.get("eager"), records[r], batch))
    finally:
        bar.close()
    return {
        "settings": asdict(cfg),
        "environment": {**environment(cfg), "onnxruntime": _version("onnxruntime")},
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }


def _version(module: str) -> str | None:
    try:
        return importlib.import_module(module).__version__
    except ImportError:
        return None


def format_report(doc: dict) -> str:
    """The run as markdown: its settings, then one table row per (size, runtime)."""
    cfg, env = doc["settings"], doc["environment"]
    batches = cfg["batch_sizes"]
    before, after = doc["load_average_before"][0], doc["load_average_after"][0]
    lines = [
        f"X-ViT at {cfg['frames']} frames, {cfg['classes']} classes, random weights, fp32 input | "
        f"cpu: {env['cpu']} ({env['cpu_count']} logical CPUs) | {cfg['threads']} threads per runtime | "
        f"torch {env['torch']}, onnxruntime {env['onnxruntime']} | {cfg['repeats']} timed passes after "
        f"{cfg['warmup']} warm-up, >= {cfg['min_seconds']:g} s of calls per phase | load average (1 min) "
        f"{before:.2f} before, {after:.2f} after | {doc['seconds']:.0f} s",
        "",
        "| model | runtime | file (MiB) | export (s) | "
        + " | ".join(f"clips/s b{b} | x eager b{b}" for b in batches)
        + " | peak RSS (MiB) "
        + " / ".join(f"b{b}" for b in batches)
        + " | above the loaded process b"
        + str(batches[-1])
        + " (MiB) |",
        "|" + " --- |" * 4 + " ---: | ---: |" * len(batches) + " ---: | ---: |",
    ]
    rows = {(r["size"], r["runtime"], r["batch"]): r for r in doc["rows"]}
    for size in cfg["sizes"]:
        for runtime in cfg["runtimes"]:
            per = [rows[size, runtime, b] for b in batches]
            export = f"{per[0]['export_seconds']:.1f}" if "export_seconds" in per[0] else "—"
            speed = " | ".join(
                f"{r['clips_per_s']:.2f} | " + (f"{r['x_eager']:.2f}" if "x_eager" in r else "—") for r in per
            )
            peaks = " / ".join(f"{r['peak_rss_mib']:.0f}" for r in per)
            lines.append(
                f"| {variant(size)[0]} | {RUNTIME_NAMES[runtime]} | {per[0]['size_bytes'] / 2**20:.1f} | {export} "
                f"| {speed} | {peaks} | {per[-1]['mem_mib']:.0f} |"
            )
    lines.append("")
    for r in doc["rows"]:
        if r["runtime"] in QUANTIZE and r["batch"] == batches[0]:
            lines.append(
                f"{variant(r['size'])[0]} {r['runtime']} against eager on a random clip: max |logit difference| "
                f"{r['max_diff']:.3g}, of the probabilities {r['prob_diff']:.4f}; quantized in "
                f"{r['quantize_seconds']:.1f} s"
            )
    return "\n".join(lines)
