"""How supplement Table 1's speed and memory are measured, so the numbers can be trusted.

- **One process per model** (started from a clean fork server), so one model's allocations,
  caches or compiled kernels cannot mask or slow another's; all run the same input sizes.
- **Interleaved**: each repeat runs every setting for every model in turn (round-robin, start
  rotated each repeat), so drift of a shared machine hits all models alike; warm-up passes
  first; devices are synchronised around each timed region (``xvit.bench.stats`` takes the
  medians and the paired ratios).
- **Peak memory**, above what the model's process held before the model was built (so it
  includes weights, gradients, optimizer state and activations). CUDA: ``max_memory_allocated``
  after ``reset_peak_memory_stats``; CPU: the RSS high-water mark of ``xvit.bench.memory``.

A training step is forward, cross-entropy, backward and an SGD step (momentum 0.9, nesterov, as
in the paper's recipe).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import sys
import time
from contextlib import nullcontext
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xvit.bench import memory, peers
from xvit.bench.spec import BenchConfig, ModelSpec, Schedule
from xvit.bench.stats import empty_phase, record, summarise
from xvit.engine.runtime import DTYPES
from xvit.models import create_model
from xvit.models.flops import count_params, model_cost
from xvit.progress import progress_bar

log = logging.getLogger(__name__)
LOW_MEMORY = 0.2  # below this fraction of RAM available, a CPU worker trims its heap after a phase


# ----------------------------------------------------------------------------- worker side


def build_model(spec: ModelSpec, cfg: BenchConfig, frames: int) -> tuple[nn.Module, dict]:
    """The model on the CPU plus ``{"attn", "layout", "gmacs", "params"}`` (GMACs per view)."""
    if spec.family == "hf":
        return peers.build_peer(spec.name, cfg, frames)
    options, size = spec.options, spec.size(cfg)
    model = create_model(spec.name, num_frames=frames, num_classes=cfg.classes, img_size=size, **options)
    model.set_fused_attn(cfg.sdpa)
    cost = model_cost(spec.name, frames, size, cfg.classes, **options)
    info = {"attn": "sdpa" if cfg.sdpa else "eager", "layout": "BCTHW", "gmacs": cost["gmacs"]}
    return model, {**info, "params": count_params(model)}


class Runner:
    """One model in its own process: (re)built per frame count, timed one phase at a time."""

    def __init__(self, spec: ModelSpec, cfg: BenchConfig) -> None:
        self.spec, self.cfg = spec, cfg
        self.device = torch.device(cfg.device)
        self.dtype = DTYPES[cfg.dtype] or torch.float32
        self.model: nn.Module | None = None
        self.frames = 0
        self.baseline = 0  # bytes held before the model was built
        self._init_runtime()

    def _init_runtime(self) -> None:
        """Import and initialise the libraries (oneDNN, OpenMP, CUDA, HF's model code) with a
        toy forward/backward, so that the memory baseline taken before a model includes them."""
        if self.spec.family == "hf":
            peers.import_peer_classes()
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
        memory.trim_heap()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            self.baseline = torch.cuda.memory_allocated()
        else:
            self.baseline = (memory.proc_status_kb("VmRSS") or 0) * 1024
        torch.manual_seed(self.cfg.seed)
        model, info = build_model(self.spec, self.cfg, frames)
        self.model, self.frames, self.layout = model.to(self.device), frames, info["layout"]
        self.step_fn = torch.compile(self.model) if self.cfg.compile else self.model
        return info

    def inputs(self, batch: int) -> tuple[Tensor, Tensor]:
        s = self.spec.size(self.cfg)
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
        memory.trim_heap()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        else:
            memory.reset_rss_peak()

    def _peak_memory(self) -> int | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated() - self.baseline
        hwm = memory.proc_status_kb("VmHWM")
        return None if hwm is None else hwm * 1024 - self.baseline

    def phase(self, kind: str, batch: int, iters: int, settle: int = 1, memory_pass: bool = True) -> dict:
        """Run ``iters`` inference forwards (``kind="infer"``) or training steps at ``batch``;
        seconds per iteration (wall clock and this process's CPU time), minor page faults per
        iteration, and with ``memory_pass`` the phase's peak memory in bytes (else None).

        A memory pass first gives freed heap back to the OS, so that the peak is the phase's
        own; then every page the phase touches faults in again, and on a VM whose free pages go
        back to the host a fault costs 10x more at some times than at others (a ViT-B training
        step took 6.1 s or 9.2 s with the same 280,000 faults). So only one pass per phase
        measures memory (``measure`` makes it the first), the other passes leave the heap as
        it is, and ``settle`` untimed iterations run before the timed ones."""
        x, y = self.inputs(batch)
        if memory_pass:
            self._start_memory()
        if kind == "infer":
            self.model.eval()
            opt = None
            run = partial(self._infer, x)
        else:
            self.model.train()
            opt = torch.optim.SGD(self.model.parameters(), lr=1e-4, momentum=0.9, nesterov=True)
            scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
            run = partial(self._train, x, y, opt=opt, scaler=scaler)
        run(settle)
        self._sync()
        f0, t0, c0 = memory.page_faults(), time.perf_counter(), time.process_time()
        run(iters)
        self._sync()
        wall, cpu = (time.perf_counter() - t0) / iters, (time.process_time() - c0) / iters
        faults = (memory.page_faults() - f0) / iters
        mem = self._peak_memory() if memory_pass else None
        del opt, run  # momentum buffers and gradients are freed outside the timed region
        self.model.zero_grad(set_to_none=True)
        trimmed = self.device.type == "cpu" and memory.available_fraction() < LOW_MEMORY
        if trimmed:  # the kept heaps of all the models do not fit: give this one's back (its next phase faults)
            memory.trim_heap()
        return {"wall": wall, "cpu": cpu, "mem": mem, "faults": faults, "trimmed": trimmed}

    def _infer(self, x: Tensor, iters: int) -> None:
        with torch.inference_mode(), self._autocast():
            for _ in range(iters):
                self.step_fn(x)

    def _train(self, x: Tensor, y: Tensor, iters: int, opt: torch.optim.Optimizer, scaler) -> None:
        """Forward, cross-entropy, backward, SGD step (the paper's: momentum 0.9, nesterov). A fresh
        optimizer per phase: its momentum buffers count in this phase's memory, not the next."""
        for _ in range(iters):
            opt.zero_grad(set_to_none=True)
            with self._autocast():
                loss = F.cross_entropy(self.step_fn(x).float(), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()


def worker_main(conn, spec: ModelSpec, cfg: BenchConfig, runner_cls: type | None = None) -> None:
    """Serve ``("load", frames)``, ``("phase", kind, batch, iters)`` and ``("stop",)`` requests;
    errors (out of memory, a failed compile) are answered as ``{"error": ...}``. ``runner_cls``
    (default ``Runner``) is what serves them: any class built from ``(spec, cfg)`` whose methods
    the requests name (``xvit.bench.deploy.RuntimeRunner``)."""
    torch.set_num_threads(cfg.threads)
    if cfg.keep_heap and cfg.device == "cpu":
        memory.keep_freed_memory()
    runner = (runner_cls or Runner)(spec, cfg)
    while True:
        msg = conn.recv()
        if msg[0] == "stop":
            break
        try:
            out = getattr(runner, msg[0])(*msg[1:])
        except Exception as err:  # reported per model; the others keep running
            first_line = str(err).splitlines()[0] if str(err) else ""
            out = {"error": f"{type(err).__name__}: {first_line}"[:300]}
        conn.send(out)
    conn.close()


# ----------------------------------------------------------------------------- parent side


class Pool:
    """One worker process per model, started from a fork server that has imported xvit (fast
    start; no OpenMP or CUDA state is forked). ``runner_cls``: see ``worker_main``."""

    def __init__(self, specs: list[ModelSpec], cfg: BenchConfig, runner_cls: type | None = None) -> None:
        methods = mp.get_all_start_methods()
        ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
        if "forkserver" in methods:
            ctx.set_forkserver_preload(["xvit.bench.runner"])
        self.conns, self.procs = {}, {}
        for spec in specs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main, args=(child, spec, cfg, runner_cls), daemon=True, name=f"bench-{spec.label}"
            )
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


def measure(specs: list[ModelSpec], cfg: BenchConfig, schedule: Schedule) -> list[dict]:
    """Every (model, frames): warm-up passes, then ``repeats`` interleaved passes; one summarised
    row per (model, frames), in that order."""
    keys = schedule.keys()
    passes = schedule.warmup + schedule.repeats
    results: list[dict] = []
    pool = Pool(specs, cfg)
    total = len(schedule.frames) * passes * len(keys) * len(specs)
    bar = progress_bar(total=total, desc="bench", unit="run", file=sys.stderr)
    try:
        for frames in schedule.frames:
            block = {}
            for spec in specs:
                bar.set_postfix_str(f"building {spec.label} T={frames}")
                info = pool.call(spec.label, "load", frames)
                if "error" in info:
                    log.warning("%s T=%d could not be built: %s", spec.label, frames, info["error"])
                phases = {f"{k}_b{b}": empty_phase(k, b, schedule.iters) for k, b in keys}
                block[spec.label] = {**_describe(spec, cfg, frames), **info, "phases": phases}
            for p in range(passes):
                order = specs[p % len(specs) :] + specs[: p % len(specs)]  # rotate who goes first
                which = "warm-up" if p < schedule.warmup else f"repeat {p - schedule.warmup + 1}"
                for kind, batch in keys:
                    for spec in order:
                        row = block[spec.label]
                        ph = row["phases"][f"{kind}_b{batch}"]
                        bar.set_postfix_str(f"T={frames} {kind} b{batch} {spec.label} ({which})")
                        if not row.get("error") and not ph["error"]:
                            out = pool.call(spec.label, "phase", kind, batch, schedule.iters, schedule.settle, p == 0)
                            record(ph, out, timed=p >= schedule.warmup, label=f"{spec.label} T={frames}")
                        bar.update()
            results.extend(block.values())
    finally:
        bar.close()
        pool.close()
    return [summarise(r) for r in results]


def _describe(spec: ModelSpec, cfg: BenchConfig, frames: int) -> dict:
    return {
        "label": spec.label,
        "family": spec.family,
        "name": spec.name,
        "options": spec.options,
        "frames": frames,
        "img_size": spec.size(cfg),
    }
