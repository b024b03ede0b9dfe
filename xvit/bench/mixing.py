"""``xvit bench --mixing``: what X-ViT's space-time mixing (paper §3.2) costs over its physical
limit, the image ViT run on the T frames (the mixing adds no FLOPs). Three figures, one process:

- **saved-for-backward memory** of X-ViT over the frame ViT: the bytes of the distinct storages
  autograd keeps for backward, counted exactly with ``torch.autograd.graph.saved_tensors_hooks``
  (parameters excluded: they exist anyway), for the in-place mixing and the out-of-place
  reference;
- **the mixing step alone**, per ViT block (forward, no autograd): the out-of-place reference
  ``Attention.mix_kv`` against the in-place ``Attention.mix_kv_``;
- **inference and training step time** of X-ViT (in place, and the reference) relative to the
  frame ViT, interleaved: every repeat times every model in turn, its start rotated, and the
  ratios are paired per repeat, so drift of a shared machine hits all models alike.

A training step is forward, cross-entropy, backward and an SGD step (momentum 0.9, nesterov), as
in ``xvit.bench.runner``.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xvit.bench.memory import keep_freed_memory
from xvit.bench.stats import AA_TOLERANCE, aa_warning
from xvit.models import create_model
from xvit.models.layers import Attention

PHASES = ("infer", "train", "infer_cpu", "train_cpu")
WIDTHS = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12), "large": (1024, 16)}  # size -> (dim, heads)


@dataclass(frozen=True)
class MixingConfig:
    size: str = "base"  # models timed (step times, mixing step)
    patch: int = 16
    frames: int = 8
    batch: int = 1
    threads: int = 1
    memory_size: str = "tiny"  # models whose saved tensors are counted
    memory_batch: int = 2
    classes: int = 400
    sdpa: bool = True
    repeats: int = 5
    warmup: int = 1
    mix_calls: int = 50  # mixing-step calls per timed repeat
    seed: int = 0


def set_inplace_mix(model: nn.Module, enable: bool) -> nn.Module:
    """Select the in-place mixing or the out-of-place reference in every attention layer."""
    for m in model.modules():
        if isinstance(m, Attention):
            m.inplace_mix = enable
    return model


def saved_bytes(model: nn.Module, x: Tensor) -> int:
    """Bytes autograd keeps for the backward of ``cross_entropy(model(x), 0)``: the distinct
    storages of every saved tensor, the model's parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
        loss = F.cross_entropy(out, torch.zeros(len(out), dtype=torch.long))
    del loss, out
    return sum(storages.values())


def memory_figures(cfg: MixingConfig) -> dict:
    """Saved-for-backward bytes of the frame ViT, X-ViT in place and X-ViT's reference."""
    torch.manual_seed(cfg.seed)
    kw = dict(num_frames=cfg.frames, num_classes=cfg.classes)
    x = torch.randn(cfg.memory_batch, 3, cfg.frames, 224, 224)
    vit = create_model(f"vit_{cfg.memory_size}_patch{cfg.patch}_224", **kw).train()
    xvit = create_model(f"xvit_{cfg.memory_size}_patch{cfg.patch}_224", **kw).train()
    for m in (vit, xvit):
        m.set_fused_attn(cfg.sdpa)
    out = {"vit": saved_bytes(vit, x), "xvit": saved_bytes(set_inplace_mix(xvit, True), x)}
    out["xvit-reference"] = saved_bytes(set_inplace_mix(xvit, False), x)
    return out


def _per_call(fn: Callable[..., object], calls: int, *args: object) -> tuple[float, float]:
    """Mean wall-clock and process CPU seconds of ``fn(*args)`` over ``calls`` calls (at one
    thread, CPU time leaves out the time other work on a shared machine held the core)."""
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(calls):
        fn(*args)
    return (time.perf_counter() - t0) / calls, (time.process_time() - c0) / calls


def mixing_step_times(cfg: MixingConfig) -> dict[str, list[float]]:
    """Seconds per call of the mixing step of one X-ViT block at ``size`` (paper defaults: K and
    V, shift_div 4, t_w 1), per repeat, the versions in rotating order: the reference, in place,
    and ``copy``, one contiguous copy of as many bytes as the in-place step moves (the shifted
    half of K and V), the memory-bandwidth floor of any step that copies them once."""
    dim, heads = WIDTHS[cfg.size]
    n = (224 // cfg.patch) ** 2 + 1
    attn = Attention(dim, heads, mix="kv", shift_div=4)
    qkv = torch.randn(cfg.batch, cfg.frames, n, 3 * dim)
    five = qkv.view(cfg.batch, cfg.frames, n, 3, dim)
    src = torch.randn(cfg.batch, cfg.frames, n, 2 * 2 * attn.fold)  # K and V, two shifted groups each
    dst = torch.empty_like(src)
    fns = {
        "reference": lambda: attn.mix_kv(five),
        "inplace": lambda: attn.mix_kv_(qkv),
        "copy": lambda: dst.copy_(src),
    }
    times: dict[str, list[float]] = {k + c: [] for k in fns for c in ("", "_cpu")}
    with torch.no_grad():
        for r in range(cfg.warmup + cfg.repeats):
            for name in list(fns)[r % 3 :] + list(fns)[: r % 3]:
                wall, cpu = _per_call(fns[name], cfg.mix_calls)
                if r >= cfg.warmup:
                    times[name].append(wall)
                    times[name + "_cpu"].append(cpu)
    return times


def step_times(cfg: MixingConfig) -> dict[str, dict[str, list[float]]]:
    """Seconds per inference pass and per training step of the frame ViT, X-ViT (in place),
    X-ViT's reference, X-ViT with the frame ViT's head (``xvit-avg``: the mixing and the temporal
    embedding are all that differ) and the frame ViT again (``vit#2``, an A/A control: a second instance in the
    same schedule), interleaved: ``{model: {"infer": [...], "train": [...], "infer_cpu": [...],
    "train_cpu": [...]}}`` (wall clock; ``_cpu``: process CPU time)."""
    torch.manual_seed(cfg.seed)
    kw = dict(num_frames=cfg.frames, num_classes=cfg.classes)
    models = {
        "vit": create_model(f"vit_{cfg.size}_patch{cfg.patch}_224", **kw),
        "xvit": set_inplace_mix(create_model(f"xvit_{cfg.size}_patch{cfg.patch}_224", **kw), True),
        "xvit-reference": set_inplace_mix(create_model(f"xvit_{cfg.size}_patch{cfg.patch}_224", **kw), False),
        "xvit-avg": create_model(f"xvit_{cfg.size}_patch{cfg.patch}_224", head="avg", **kw),
        "vit#2": create_model(f"vit_{cfg.size}_patch{cfg.patch}_224", **kw),
    }
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-6, momentum=0.9, nesterov=True) for k, m in models.items()}
    x = torch.randn(cfg.batch, 3, cfg.frames, 224, 224)
    target = torch.zeros(cfg.batch, dtype=torch.long)
    for m in models.values():
        m.set_fused_attn(cfg.sdpa)

    def infer(m: nn.Module) -> None:
        with torch.no_grad():
            m.eval()(x)

    def train(m: nn.Module, opt: torch.optim.Optimizer) -> None:
        m.train()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(m(x), target).backward()
        opt.step()

    times = {k: {p: [] for p in PHASES} for k in models}
    names = list(models)
    for r in range(cfg.warmup + cfg.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            gc.collect()
            t_inf = _per_call(infer, 1, models[name])
            t_train = _per_call(train, 1, models[name], opts[name])
            if r >= cfg.warmup:
                for phase, value in zip(("infer", "infer_cpu", "train", "train_cpu"), (*t_inf, *t_train)):
                    times[name][phase].append(value)
    return times


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    """Ratio a/b: of the medians, and the median/min/max of the per-repeat ratios."""
    per = [x / y for x, y in zip(a, b)]
    return {
        "of_medians": statistics.median(a) / statistics.median(b),
        "paired_median": statistics.median(per),
        "paired_min": min(per),
        "paired_max": max(per),
    }


def run_mixing(cfg: MixingConfig) -> dict:
    """All three figures; ``torch`` is limited to ``cfg.threads`` threads for the run, and
    glibc keeps freed memory resident (as in ``xvit bench``'s workers: no page faults to
    re-grow the heap inside the timed steps)."""
    keep_freed_memory()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        memory = memory_figures(cfg)
        gc.collect()
        mixing = mixing_step_times(cfg)
        steps = step_times(cfg)
    finally:
        torch.set_num_threads(threads)
    ratios = {
        "memory": {k: memory[k] / memory["vit"] for k in ("xvit", "xvit-reference")},
        "mixing": paired(mixing["inplace"], mixing["reference"]),
        "mixing_cpu": paired(mixing["inplace_cpu"], mixing["reference_cpu"]),
        "mixing_over_copy": paired(mixing["inplace"], mixing["copy"]),
        "steps": {
            f"{m}/vit {phase}": paired(steps[m][phase], steps["vit"][phase])
            for phase in PHASES
            for m in ("xvit", "xvit-reference", "xvit-avg", "vit#2")
        },
    }
    return {"settings": asdict(cfg), "memory_bytes": memory, "mixing_s": mixing, "steps_s": steps, "ratios": ratios}


def format_mixing(doc: dict) -> str:
    """The figures of ``run_mixing`` as text lines."""
    s, mem, r = doc["settings"], doc["memory_bytes"], doc["ratios"]
    ms = {k: 1e3 * statistics.median(v) for k, v in doc["mixing_s"].items()}
    mr = r["mixing"]  # wall clock
    lines = [
        f"saved-for-backward memory ({s['memory_size']}/{s['patch']}, batch {s['memory_batch']}, "
        f"{s['frames']} frames, parameters excluded):",
        *(f"  {k:15s} {v / 2**20:9.1f} MiB  {v / mem['vit']:.3f}x vit" for k, v in mem.items()),
        "",
        f"mixing step per {s['size']}/{s['patch']} block (batch {s['batch']}, {s['frames']} frames, K and V, "
        f"shift_div 4, no autograd), median of {s['repeats']} x {s['mix_calls']} calls:",
        f"  wall clock: reference (out of place) {ms['reference']:.3f} ms, in place {ms['inplace']:.3f} ms, "
        f"in place / reference {_fmt(mr)}",
        f"  CPU time:   reference (out of place) {ms['reference_cpu']:.3f} ms, in place {ms['inplace_cpu']:.3f} ms, "
        f"in place / reference {_fmt(r['mixing_cpu'])}",
        f"  floor: one contiguous copy of the same {src_mib(s):.1f} MiB {ms['copy']:.3f} ms; "
        f"in place / copy {_fmt(r['mixing_over_copy'])}",
        "",
        f"step time relative to the frame ViT ({s['size']}/{s['patch']}, batch {s['batch']}, {s['frames']} frames, "
        f"{s['repeats']} interleaved repeats; _cpu: process CPU time; vit#2: the frame ViT again, A/A control): "
        "xvit-avg: X-ViT with the frame ViT's head; ratio of medians, paired per repeat median [min-max]:",
    ]
    for name, p in r["steps"].items():
        lines.append(f"  {name:28s} {p['of_medians']:.3f}   {_fmt(p)}")
    vit = doc["steps_s"]["vit"]
    lines.append(
        f"  (frame ViT: inference {statistics.median(vit['infer']):.2f} s, "
        f"training step {statistics.median(vit['train']):.2f} s)"
    )
    lines += [f"WARNING: {line}" for line in control_warnings(r["steps"])]
    return "\n".join(lines)


def control_warnings(steps: dict, tol: float = AA_TOLERANCE) -> list[str]:
    """One line per phase whose A/A control (``vit#2/vit``, wall clock, ratio of medians) is
    outside 1 +- ``tol``: step ratios closer to 1 than that are not resolved by the run."""
    lines = (
        aa_warning(f"vit#2/vit {phase}", steps[f"vit#2/vit {phase}"]["of_medians"], tol) for phase in ("infer", "train")
    )
    return [line for line in lines if line]


def src_mib(s: dict) -> float:
    """MiB of the shifted K/V channel groups of one block (what the in-place step copies)."""
    return s["batch"] * s["frames"] * ((224 // s["patch"]) ** 2 + 1) * WIDTHS[s["size"]][0] * 4 / 2**20


def _fmt(p: dict) -> str:
    return f"{p['paired_median']:.3f} [{p['paired_min']:.3f}-{p['paired_max']:.3f}]"
