"""``xvit bench``: inference and training cost of several models measured side by side
(the supplement's Table 1, SPEC §7.2: X-ViT's videos/s against TimeSformer's and ViViT's).

For every model and frame count it measures inference videos/s and latency at each batch size,
training-step clips/s (forward, cross-entropy, backward, SGD momentum step), peak memory,
parameters and GFLOPs (multiply-adds) per view. How, so the numbers can be trusted:

- **One process per model** (started from a clean fork server), so one model's allocations,
  caches or compiled kernels cannot mask or slow another's; all run the same input sizes.
- **Interleaved**: each repeat runs every setting for every model in turn (round-robin, start
  rotated each repeat), so drift of a shared machine hits all models alike; warm-up passes
  first; devices are synchronised around each timed region; we report the **median over
  repeats** and the spread ``(max - min) / median``; ratios are also computed per repeat
  (paired), which cancels drift common to a repeat.
- **Peak memory**, above what the model's process held before the model was built (so it
  includes weights, gradients, optimizer state and activations). CUDA: ``max_memory_allocated``
  after ``reset_peak_memory_stats``. CPU: the kernel's resident-set high-water mark ``VmHWM``,
  reset to the current RSS (``/proc/self/clear_refs`` = 5) at the start of each phase after
  ``malloc_trim`` has returned freed heap to the OS; exact (no sampling gaps) and per phase.
- **Peers** (``--peers``, needs ``pip install 'xvit[bench]'``): HF transformers' TimeSformer
  (divided) and ViViT (model 1) built from a config at the same size, randomly initialised.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import json
import logging
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xvit.errors import UserError

log = logging.getLogger(__name__)

# alias -> (family, model options): X-ViT with the frame ViT's head isolates the mixing step.
ALIASES: dict[str, tuple[str, dict]] = {
    "xvit": ("xvit", {}),
    "xvit-avg": ("xvit", {"head": "avg"}),
    "vit": ("vit", {}),
    "tsm": ("tsm_vit", {}),
    "timesformer": ("timesformer", {}),
    "joint": ("joint", {}),
}
PEERS = ("hf-timesformer", "hf-vivit")
DEFAULT_MODELS = ["xvit", "xvit-avg", "vit", "tsm", "timesformer", "joint"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# (a, b): report time(a) / time(b) when both were measured.
RATIO_PAIRS = [
    ("xvit", "vit"),
    ("xvit-avg", "vit"),
    ("tsm", "vit"),
    ("timesformer", "xvit"),
    ("joint", "xvit"),
    ("hf-timesformer", "xvit"),
    ("hf-vivit", "xvit"),
    ("hf-timesformer", "timesformer"),
    ("hf-vivit", "joint"),
]
PEER_INSTALL = "pip install 'xvit[bench]'  (or: pip install 'transformers>=4.40')"


@dataclass
class ModelSpec:
    """One benchmarked model: ``label`` (alias or name), ``family`` ("xvit" or "hf"), registry
    ``name`` (or the peer's alias) and extra ``create_model`` options."""

    label: str
    family: str
    name: str
    options: dict = field(default_factory=dict)


@dataclass
class BenchConfig:
    """Everything a worker needs to build and run its model (picklable)."""

    device: str = "cpu"
    dtype: str = "fp32"
    compile: bool = False
    sdpa: bool = True
    threads: int = 1
    img_size: int = 224
    size: str = "base"  # ViT size of the peers
    patch: int = 16
    classes: int = 400
    vivit_tubelet: int = 1  # temporal tubelet of HF ViViT (1: same tokens as ours; 2: ViViT's default)
    seed: int = 0


# ----------------------------------------------------------------------------- memory


def _proc_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _trim_heap() -> None:
    """Give freed heap memory back to the OS, so the next phase's peak is its own."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_rss_peak() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_method(device: str) -> str:
    if device == "cuda":
        return "torch.cuda.max_memory_allocated, reset per phase"
    if _proc_status_kb("VmHWM") is None:
        return "unavailable (no /proc/self/status)"
    if _reset_rss_peak():
        return "RSS high-water mark (VmHWM) reset per phase after malloc_trim, minus RSS before the model was built"
    return "RSS high-water mark (VmHWM) since process start (cannot reset here: an upper bound)"


# ----------------------------------------------------------------------------- worker side


class PeerAdapter(nn.Module):
    """An HF video classifier called like ours: ``(B, T, C, H, W)`` pixels -> logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.net(pixel_values=pixel_values).logits


def peer_model(alias: str, cfg: BenchConfig, frames: int, attn: str) -> nn.Module:
    """HF TimeSformer (divided) or ViViT (model 1) at our size, randomly initialised."""
    import transformers as hf

    from xvit.models.base import SIZES

    s = SIZES[cfg.size]
    common = dict(
        image_size=cfg.img_size,
        num_frames=frames,
        hidden_size=s["embed_dim"],
        num_hidden_layers=s["depth"],
        num_attention_heads=s["num_heads"],
        intermediate_size=4 * s["embed_dim"],
        hidden_act="gelu",
        num_labels=cfg.classes,
    )
    if alias == "hf-timesformer":
        config, cls = hf.TimesformerConfig(patch_size=cfg.patch, attention_type="divided_space_time", **common), hf.TimesformerForVideoClassification
    else:
        if frames % cfg.vivit_tubelet:
            raise UserError(f"ViViT tubelet {cfg.vivit_tubelet} does not divide {frames} frames; pick --vivit-tubelet 1")
        config, cls = hf.VivitConfig(tubelet_size=[cfg.vivit_tubelet, cfg.patch, cfg.patch], **common), hf.VivitForVideoClassification
    config._attn_implementation = attn
    return PeerAdapter(cls(config))


def peer_attn(alias: str, sdpa: bool) -> str:
    """HF's TimeSformer has only the eager attention; ViViT has SDPA."""
    return "sdpa" if sdpa and alias == "hf-vivit" else "eager"


def count_gmacs(model: nn.Module, x: Tensor) -> float:
    """Multiply-adds (G) of one forward of ``model`` on ``x``; meta tensors cost nothing."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 2 / 1e9


def build_model(spec: ModelSpec, cfg: BenchConfig, frames: int) -> tuple[nn.Module, dict]:
    """The model on the CPU plus ``{"params", "gmacs", "attn", "layout"}`` (GMACs per view)."""
    if spec.family == "hf":
        attn = peer_attn(spec.name, cfg.sdpa)
        with torch.device("meta"):  # FLOPs through eager attention, like xvit.flops
            meta = peer_model(spec.name, cfg, frames, "eager")
            gmacs = count_gmacs(meta, torch.empty(1, frames, 3, cfg.img_size, cfg.img_size))
        model = peer_model(spec.name, cfg, frames, attn)
        info = {"attn": attn, "layout": "BTCHW", "gmacs": gmacs}
    else:
        from xvit.flops import model_cost
        from xvit.models import create_model

        model = create_model(spec.name, num_frames=frames, num_classes=cfg.classes, img_size=cfg.img_size, **spec.options)
        model.set_fused_attn(cfg.sdpa)
        cost = model_cost(spec.name, frames, cfg.img_size, cfg.classes, **spec.options)
        info = {"attn": "sdpa" if cfg.sdpa else "eager", "layout": "BCTHW", "gmacs": cost["gmacs"]}
    info["params"] = sum(p.numel() for p in model.parameters())
    return model, info


class Runner:
    """One model in its own process: (re)built per frame count, timed one phase at a time."""

    def __init__(self, spec: ModelSpec, cfg: BenchConfig) -> None:
        self.spec, self.cfg = spec, cfg
        self.device = torch.device(cfg.device)
        self.dtype = DTYPES[cfg.dtype]
        self.model: nn.Module | None = None
        self.frames = 0
        self.baseline = 0  # bytes held before the model was built
        self._init_runtime()

    def _init_runtime(self) -> None:
        """Import and initialise the libraries (oneDNN, OpenMP, CUDA, HF's model code) with a
        toy forward/backward, so that the memory baseline taken before a model includes them."""
        if self.spec.family == "hf":
            import transformers as hf

            hf.TimesformerForVideoClassification, hf.VivitForVideoClassification  # noqa: B018  (lazy imports)
        conv = nn.Conv2d(3, 8, 4, stride=4).to(self.device)
        x = torch.randn(2, 3, 16, 16, device=self.device)
        with self._autocast():
            t = conv(x).flatten(2).transpose(1, 2).unsqueeze(1)  # (2, 1, 16, 8)
            out = F.scaled_dot_product_attention(t, t, t)
            loss = F.gelu(F.layer_norm(out, (8,))).float().square().mean()
        loss.backward()

    def load(self, frames: int) -> dict:
        """Build the model for ``frames`` (freeing the previous one); returns its cost info."""
        self.model = self.step_fn = None
        if self.cfg.compile:
            torch._dynamo.reset()
        _trim_heap()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            self.baseline = torch.cuda.memory_allocated()
        else:
            self.baseline = (_proc_status_kb("VmRSS") or 0) * 1024
        torch.manual_seed(self.cfg.seed)
        model, info = build_model(self.spec, self.cfg, frames)
        self.model, self.frames, self.layout = model.to(self.device), frames, info["layout"]
        self.step_fn = torch.compile(self.model) if self.cfg.compile else self.model
        return info

    def inputs(self, batch: int) -> tuple[Tensor, Tensor]:
        s = self.cfg.img_size
        shape = (batch, 3, self.frames, s, s) if self.layout == "BCTHW" else (batch, self.frames, 3, s, s)
        g = torch.Generator().manual_seed(self.cfg.seed)
        x = torch.randn(shape, generator=g).to(self.device)
        y = torch.randint(0, self.cfg.classes, (batch,), generator=g).to(self.device)
        return x, y

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def _autocast(self):
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _start_memory(self) -> None:
        _trim_heap()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        else:
            _reset_rss_peak()

    def _peak_memory(self) -> int | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated() - self.baseline
        hwm = _proc_status_kb("VmHWM")
        return None if hwm is None else hwm * 1024 - self.baseline

    def phase(self, kind: str, batch: int, iters: int) -> dict:
        """Run ``iters`` inference forwards (``kind="infer"``) or training steps at ``batch``;
        seconds per iteration (wall clock and this process's CPU time), peak memory in bytes."""
        x, y = self.inputs(batch)
        self._start_memory()
        self._sync()
        t0, c0 = time.perf_counter(), time.process_time()
        opt = self._infer(x, iters) if kind == "infer" else self._train(x, y, iters)
        self._sync()
        wall, cpu = (time.perf_counter() - t0) / iters, (time.process_time() - c0) / iters
        mem = self._peak_memory()
        del opt  # momentum buffers and gradients are freed outside the timed region
        self.model.zero_grad(set_to_none=True)
        return {"wall": wall, "cpu": cpu, "mem": mem}

    def _infer(self, x: Tensor, iters: int) -> None:
        self.model.eval()
        with torch.inference_mode(), self._autocast():
            for _ in range(iters):
                self.step_fn(x)

    def _train(self, x: Tensor, y: Tensor, iters: int) -> torch.optim.Optimizer:
        """Forward, cross-entropy, backward, SGD step (SPEC §6: momentum 0.9, nesterov). A fresh
        optimizer per phase: its momentum buffers count in this phase's memory, not the next."""
        self.model.train()
        opt = torch.optim.SGD(self.model.parameters(), lr=1e-4, momentum=0.9, nesterov=True)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        for _ in range(iters):
            opt.zero_grad(set_to_none=True)
            with self._autocast():
                loss = F.cross_entropy(self.step_fn(x).float(), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        return opt


def worker_main(conn, spec: ModelSpec, cfg: BenchConfig) -> None:
    """Serve ``("load", frames)``, ``("phase", kind, batch, iters)`` and ``("stop",)`` requests;
    errors (out of memory, a failed compile) are answered as ``{"error": ...}``."""
    torch.set_num_threads(cfg.threads)
    runner = Runner(spec, cfg)
    while True:
        msg = conn.recv()
        if msg[0] == "stop":
            break
        try:
            out = getattr(runner, msg[0])(*msg[1:])
        except Exception as err:  # reported per model; the others keep running
            out = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]}
        conn.send(out)
    conn.close()


# ----------------------------------------------------------------------------- parent side


class Pool:
    """One worker process per model, started from a fork server that has imported xvit (fast
    start; no OpenMP or CUDA state is forked)."""

    def __init__(self, specs: list[ModelSpec], cfg: BenchConfig) -> None:
        methods = mp.get_all_start_methods()
        ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
        if "forkserver" in methods:
            ctx.set_forkserver_preload(["xvit.bench", "xvit.flops"])
        self.conns, self.procs = {}, {}
        for spec in specs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child, spec, cfg), daemon=True, name=f"bench-{spec.label}")
            proc.start()
            child.close()
            self.conns[spec.label], self.procs[spec.label] = parent, proc

    def call(self, label: str, *msg) -> dict:
        conn = self.conns[label]
        try:
            conn.send(msg)
            return conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            proc = self.procs[label]
            proc.join(timeout=5)
            return {"error": f"worker process died (exit code {proc.exitcode}; out of memory?)"}

    def close(self) -> None:
        for label, conn in self.conns.items():
            try:
                conn.send(("stop",))
            except (BrokenPipeError, OSError):
                pass
            self.procs[label].join(timeout=30)
            if self.procs[label].is_alive():
                self.procs[label].terminate()


def phase_keys(args: argparse.Namespace) -> list[tuple[str, int]]:
    keys = [] if args.no_infer else [("infer", b) for b in args.batch_sizes]
    return keys + ([] if args.no_train else [("train", args.train_batch_size)])


def measure(specs: list[ModelSpec], cfg: BenchConfig, args: argparse.Namespace) -> list[dict]:
    """Every (model, frames): warm-up passes, then ``repeats`` interleaved passes; raw results."""
    from tqdm import tqdm

    keys = phase_keys(args)
    passes = args.warmup + args.repeats
    results: list[dict] = []
    pool = Pool(specs, cfg)
    bar = tqdm(total=len(args.frames) * passes * len(keys) * len(specs), desc="bench", unit="run", file=sys.stderr)
    try:
        for frames in args.frames:
            block = {}
            for spec in specs:
                bar.set_postfix_str(f"building {spec.label} T={frames}")
                info = pool.call(spec.label, "load", frames)
                if "error" in info:
                    log.warning("%s T=%d could not be built: %s", spec.label, frames, info["error"])
                block[spec.label] = {**_describe(spec, cfg, frames), **info, "phases": {f"{k}_b{b}": _empty_phase(k, b, args.iters) for k, b in keys}}
            for p in range(passes):
                order = specs[p % len(specs):] + specs[: p % len(specs)]  # rotate who goes first
                for kind, batch in keys:
                    for spec in order:
                        row = block[spec.label]
                        ph = row["phases"][f"{kind}_b{batch}"]
                        bar.set_postfix_str(f"T={frames} {kind} b{batch} {spec.label} ({'warm-up' if p < args.warmup else f'repeat {p - args.warmup + 1}'})")
                        if not row.get("error") and not ph["error"]:
                            out = pool.call(spec.label, "phase", kind, batch, args.iters)
                            _record(ph, out, timed=p >= args.warmup, label=f"{spec.label} T={frames}")
                        bar.update()
            results.extend(block.values())
    finally:
        bar.close()
        pool.close()
    return [_summarise(r) for r in results]


def _describe(spec: ModelSpec, cfg: BenchConfig, frames: int) -> dict:
    return {"label": spec.label, "family": spec.family, "name": spec.name, "options": spec.options, "frames": frames, "img_size": cfg.img_size}


def _empty_phase(kind: str, batch: int, iters: int) -> dict:
    return {"kind": kind, "batch": batch, "iters": iters, "wall_s": [], "cpu_s": [], "mem_bytes": [], "error": None}


def _record(ph: dict, out: dict, timed: bool, label: str) -> None:
    if "error" in out:
        ph["error"] = out["error"]
        log.warning("%s %s b%d failed: %s", label, ph["kind"], ph["batch"], out["error"])
    elif timed:
        ph["wall_s"].append(out["wall"])
        ph["cpu_s"].append(out["cpu"])
        ph["mem_bytes"].append(out["mem"])


def _summarise(row: dict) -> dict:
    """Medians, spread, videos/s, latency and peak memory of every phase of one row."""
    for ph in row["phases"].values():
        walls = ph["wall_s"]
        ok = bool(walls) and not ph["error"]
        med = statistics.median(walls) if ok else None
        mems = [m for m in ph["mem_bytes"] if m is not None]
        ph.update(
            median_s=med,
            min_s=min(walls) if ok else None,
            max_s=max(walls) if ok else None,
            spread=(max(walls) - min(walls)) / med if ok else None,
            cpu_median_s=statistics.median(ph["cpu_s"]) if ok else None,
            videos_per_s=ph["batch"] / med if ok else None,
            latency_ms=med * 1e3 if ok else None,
            peak_mem_mb=max(mems) / 2**20 if ok and mems else None,
        )
    return row


def compute_ratios(results: list[dict]) -> list[dict]:
    """time(a) / time(b) per phase and frame count: of the medians, and paired per repeat."""
    by_key = {(r["label"], r["frames"]): r for r in results}
    out = []
    for a, b in RATIO_PAIRS:
        for frames in sorted({r["frames"] for r in results}):
            ra, rb = by_key.get((a, frames)), by_key.get((b, frames))
            if not ra or not rb or ra.get("error") or rb.get("error"):
                continue
            phases = {}
            for key, pa in ra["phases"].items():
                pb = rb["phases"].get(key)
                if pb and pa["median_s"] is not None and pb["median_s"] is not None:
                    phases[key] = {**_ratio(pa, pb, "wall_s", "wall"), **_ratio(pa, pb, "cpu_s", "cpu")}
            out.append({"a": a, "b": b, "frames": frames, "gmacs_ratio": ra["gmacs"] / rb["gmacs"], "phases": phases})
    return out


def _ratio(pa: dict, pb: dict, times: str, name: str) -> dict:
    """Ratio of the medians, of the minima (the least disturbed repeats), and the median / min /
    max of the per-repeat (paired) ratios."""
    paired = [x / y for x, y in zip(pa[times], pb[times])]
    return {
        name: statistics.median(pa[times]) / statistics.median(pb[times]),
        f"{name}_of_min": min(pa[times]) / min(pb[times]),
        f"{name}_paired_median": statistics.median(paired),
        f"{name}_paired_min": min(paired),
        f"{name}_paired_max": max(paired),
    }


# ----------------------------------------------------------------------------- report


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(cfg: BenchConfig) -> dict:
    env = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if cfg.device == "cuda" else None,
        "memory_method": memory_method(cfg.device),
    }
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:
        env["transformers"] = None
    return env


def settings_lines(cfg: BenchConfig, env: dict, args: argparse.Namespace) -> list[str]:
    dev = f"cuda ({env['gpu']})" if cfg.device == "cuda" else f"cpu ({env['cpu']}, {env['cpu_count']} logical CPUs)"
    train = "off" if args.no_train else f"batch {args.train_batch_size}, SGD momentum 0.9 nesterov, cross-entropy"
    return [
        f"device: {dev} | dtype: {cfg.dtype}{'' if cfg.dtype == 'fp32' else ' (autocast)'} | threads: {cfg.threads} | compile: {'on' if cfg.compile else 'off'} | sdpa: {'on' if cfg.sdpa else 'off'}",
        f"frames: {' '.join(map(str, args.frames))} | resolution: {cfg.img_size} px | size: {cfg.size}/{cfg.patch} | infer batch sizes: {'off' if args.no_infer else ' '.join(map(str, args.batch_sizes))} | train: {train}",
        f"repeats: {args.repeats} (median; spread = (max - min) / median) | warm-up passes: {args.warmup} | iterations per repeat: {args.iters} | models interleaved, one process each",
        f"torch {env['torch']} | transformers {env['transformers'] or '-'} | python {env['python']} | {env['date_utc']} UTC",
        f"GFLOPs: multiply-adds per view | peak memory: {env['memory_method']}",
    ]


def _num(x: float | None) -> str:
    """Three significant digits (at least the units)."""
    if x is None:
        return "n/a"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _spread(ph: dict) -> str:
    return "" if ph["spread"] is None or len(ph["wall_s"]) < 2 else f" ±{ph['spread'] * 50:.0f}%"


def format_table(results: list[dict], keys: list[tuple[str, int]]) -> str:
    """Markdown table, one row per (model, frames)."""
    head = ["model", "T", "params (M)", "GFLOPs"]
    for kind, b in keys:
        head += [f"infer b{b} videos/s", f"latency b{b} (ms)"] if kind == "infer" else [f"train b{b} clips/s"]
    head += [f"peak MB {k} b{b}" for k, b in keys if k == "train" or b == max(bb for kk, bb in keys if kk == "infer")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [f"`{r['label']}`", str(r["frames"]), _num(r["params"] / 1e6) if "params" in r else "n/a", _num(r.get("gmacs"))]
        for kind, b in keys:
            ph = r["phases"][f"{kind}_b{b}"]
            cells.append(_num(ph["videos_per_s"]) + _spread(ph) if not ph["error"] else "error")
            if kind == "infer":
                cells.append(_num(ph["latency_ms"]))
        for k, b in keys:
            if k == "train" or b == max(bb for kk, bb in keys if kk == "infer"):
                cells.append(_num(r["phases"][f"{k}_b{b}"]["peak_mem_mb"]))
        lines.append("| " + " | ".join(cells) + " |")
    errors = dict.fromkeys(f"- `{r['label']}` T={r['frames']}: {e}" for r in results for e in _errors(r))
    return "\n".join(lines + (["", "errors:", *errors] if errors else []))


def _errors(row: dict) -> list[str]:
    """The load error of a row, or those of its phases."""
    if row.get("error"):
        return [row["error"]]
    return [f"{ph['kind']} b{ph['batch']}: {ph['error']}" for ph in row["phases"].values() if ph["error"]]


def format_ratios(ratios: list[dict], keys: list[tuple[str, int]], name: str = "wall") -> str:
    """Markdown table of time ratios (``name``: "wall" or "cpu" time): ratio of the medians
    [paired per-repeat min-max], then the ratio of the minima."""
    if not ratios:
        return ""
    head = ["time ratio", "T", "FLOPs ratio"] + [f"{k} b{b}" for k, b in keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in ratios:
        cells = [f"{r['a']} / {r['b']}", str(r["frames"]), f"{r['gmacs_ratio']:.3f}"]
        for k, b in keys:
            p = r["phases"].get(f"{k}_b{b}")
            cells.append("n/a" if p is None else f"{p[name]:.3f} [{p[name + '_paired_min']:.3f}-{p[name + '_paired_max']:.3f}] {p[name + '_of_min']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path, keys: list[tuple[str, int]], title: str) -> None:
    """Videos/s (inference at the largest batch; training if no inference) against GFLOPs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kind, batch = max(keys, key=lambda k: (k[0] == "infer", k[1]))
    fig, ax = plt.subplots(figsize=(7, 5))
    for frames, marker in zip(sorted({r["frames"] for r in results}), "osD^v<>"):
        pts = [(r.get("gmacs"), r["phases"][f"{kind}_b{batch}"]["videos_per_s"], r["label"]) for r in results if r["frames"] == frames]
        pts = [p for p in pts if p[0] and p[1]]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=f"{frames} frames")
        pts.sort(key=lambda p: (round(p[0], 1), p[1]))
        for i, (g, v, label) in enumerate(pts):
            same = sum(round(q[0], 1) == round(g, 1) for q in pts[:i])  # stack labels of equal-cost models
            ax.annotate(label, (g, v), textcoords="offset points", xytext=(5, -3 + 8 * same), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("GFLOPs per view (multiply-adds)")
    ax.set_ylabel(f"{'videos' if kind == 'infer' else 'training clips'}/s (batch {batch})")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS, metavar="M", help=f"aliases ({' '.join([*ALIASES, *PEERS])}) or model names (default: {' '.join(DEFAULT_MODELS)})")
    p.add_argument("--size", default="base", help="ViT size of the aliases and peers (default base; nano, micro, tiny, small, large)")
    p.add_argument("--patch", type=int, default=16, help="patch size of the aliases and peers (default 16)")
    p.add_argument("--img-size", type=int, default=None, help="input resolution (default: the model's, 224)")
    p.add_argument("--frames", type=int, nargs="+", default=[8, 16], help="frame counts (default 8 16)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4], help="inference batch sizes (default 1 4)")
    p.add_argument("--train-batch-size", type=int, default=None, help="training-step batch (default: the largest inference batch)")
    p.add_argument("--classes", type=int, default=400, help="classifier size (default 400, Kinetics)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="fp32, or bf16/fp16 autocast (default fp32)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False, help="torch.compile every model (default off)")
    p.add_argument("--sdpa", action=argparse.BooleanOptionalAction, default=True, help="fused scaled_dot_product_attention (default on); --no-sdpa: eager")
    p.add_argument("--threads", type=int, default=None, help="intra-op CPU threads per model (default: torch's, one per core)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes over every model (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes first (default 1)")
    p.add_argument("--iters", type=int, default=1, help="iterations timed per repeat (default 1)")
    p.add_argument("--no-train", action="store_true", help="skip the training step")
    p.add_argument("--no-infer", action="store_true", help="skip inference")
    p.add_argument("--peers", action="store_true", help=f"add HF transformers' TimeSformer and ViViT (needs {PEER_INSTALL})")
    p.add_argument("--vivit-tubelet", type=int, default=1, help="HF ViViT temporal tubelet: 1 (default: same tokens and FLOPs as `joint`) or 2 (ViViT's 16x2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write every measurement as JSON")
    p.add_argument("--plot", type=Path, default=None, metavar="PATH", help="videos/s against GFLOPs (log axes), PNG/PDF/SVG")


def peers_available() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_models(args: argparse.Namespace) -> list[ModelSpec]:
    """Aliases -> registry names at ``--size``/``--patch``; peers dropped with a message if HF
    transformers is missing."""
    from xvit.models import list_models

    wanted = list(dict.fromkeys(args.models + (list(PEERS) if args.peers else [])))
    if any(m in PEERS for m in wanted) and not peers_available():
        print(f"xvit bench: the peers (HF TimeSformer, ViViT) need transformers: {PEER_INSTALL}; running without them", file=sys.stderr)
        wanted = [m for m in wanted if m not in PEERS]
    specs = []
    for m in wanted:
        if m in PEERS:
            specs.append(ModelSpec(m, "hf", m))
        elif m in ALIASES:
            family, options = ALIASES[m]
            names = list_models(f"{family}_{args.size}_patch{args.patch}_*")
            if len(names) != 1:
                raise UserError(f"no {family} model of size {args.size!r} with patch {args.patch}; see `xvit models` for the sizes")
            specs.append(ModelSpec(m, "xvit", names[0], dict(options)))
        elif m in list_models():
            specs.append(ModelSpec(m, "xvit", m))
        else:
            raise UserError(f"unknown model {m!r} in --models: use an alias ({', '.join([*ALIASES, *PEERS])}) or a name from `xvit models`")
    if not specs:
        raise UserError("no model left to benchmark; give --models")
    return specs


def make_config(args: argparse.Namespace) -> BenchConfig:
    """Validate the options and fill the defaults that depend on the machine."""
    from xvit.models.base import SIZES, VARIANTS

    if args.no_train and args.no_infer:
        raise UserError("--no-train and --no-infer leave nothing to measure")
    for opt in ("frames", "batch_sizes"):
        if min(getattr(args, opt)) < 1:
            raise UserError(f"--{opt.replace('_', '-')} must be >= 1, got {getattr(args, opt)}")
    for opt in ("classes", "threads", "train_batch_size", "vivit_tubelet"):
        if getattr(args, opt) is not None and getattr(args, opt) < 1:
            raise UserError(f"--{opt.replace('_', '-')} must be >= 1, got {getattr(args, opt)}")
    if min(args.repeats, args.iters) < 1 or args.warmup < 0:
        raise UserError(f"--repeats and --iters must be >= 1 and --warmup >= 0, got {args.repeats}, {args.iters}, {args.warmup}")
    if args.size not in SIZES:
        raise UserError(f"unknown --size {args.size!r}; choose from {', '.join(SIZES)}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda, but torch sees no CUDA device; use --device cpu")
    args.train_batch_size = args.train_batch_size or max(args.batch_sizes)
    img = args.img_size or next((i for s, p, i in VARIANTS if s == args.size and p == args.patch), 224)
    if args.compile and args.warmup == 0:
        log.warning("--compile with --warmup 0: the first repeat includes compilation")
    threads = args.threads or torch.get_num_threads()
    return BenchConfig(device, args.dtype, args.compile, args.sdpa, threads, img, args.size, args.patch, args.classes, args.vivit_tubelet, args.seed)


def run(args: argparse.Namespace) -> int:
    cfg = make_config(args)
    specs = resolve_models(args)
    env = environment(cfg)
    keys = phase_keys(args)
    log.info("benchmarking %s at %s frames on %s", ", ".join(s.label for s in specs), args.frames, cfg.device)
    results = measure(specs, cfg, args)
    ratios = compute_ratios(results)
    lines = settings_lines(cfg, env, args)
    print("\n".join("# " + line for line in lines))
    print()
    print(format_table(results, keys))
    if ratios:
        print("\nwall-clock time ratios A / B (> 1: A is slower): ratio of medians [per-repeat ratios min-max] ratio of minima:\n")
        print(format_ratios(ratios, keys, "wall"))
        if cfg.device == "cpu":
            print("\nCPU-time ratios (the process's CPU time, less sensitive to other load on the machine):\n")
            print(format_ratios(ratios, keys, "cpu"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {"settings": {**asdict(cfg), **{k: getattr(args, k) for k in ("frames", "batch_sizes", "train_batch_size", "repeats", "warmup", "iters")}}}
        doc.update(environment=env, models=[asdict(s) for s in specs], results=results, ratios=ratios)
        args.json.write_text(json.dumps(doc, indent=1))
        print(f"\nwrote {args.json}")
    if args.plot:
        where = env["gpu"] if cfg.device == "cuda" else f"{env['cpu']}, {cfg.threads} thread{'s' * (cfg.threads != 1)}"
        plot(results, args.plot, keys, f"xvit bench: {where}, {cfg.dtype}, {cfg.img_size} px, torch {env['torch']}")
        print(f"wrote {args.plot}")
    measured = any(ph["median_s"] is not None for r in results for ph in r["phases"].values())
    return 0 if measured else 1  # errors of some models are reported in the table
