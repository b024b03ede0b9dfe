"""Supplement Table 1 as ``xvit bench`` prints it: the environment and settings, a markdown table
per (model, frames), the time-ratio tables, and a plot of videos/s against GFLOPs."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import torch

from xvit.bench.memory import memory_method
from xvit.bench.peers import transformers_version
from xvit.bench.spec import BenchConfig, Schedule


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# vector-ISA flags of /proc/cpuinfo that change the kernels torch picks (and ratios like bf16 / fp32)
ISA_FLAGS = ("avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "avx2", "fma")


def cpu_isa() -> list[str]:
    """The ``ISA_FLAGS`` this CPU reports in ``/proc/cpuinfo`` (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
    return [flag for flag in ISA_FLAGS if flag in flags]


def environment(cfg: BenchConfig) -> dict:
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cpu_isa": cpu_isa(),
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if cfg.device == "cuda" else None,
        "memory_method": memory_method(cfg.device),
        "transformers": transformers_version(),
    }


def settings_lines(cfg: BenchConfig, env: dict, schedule: Schedule) -> list[str]:
    """The header of the report: what was measured, where and how."""
    if cfg.device == "cuda":
        dev = f"cuda ({env['gpu']})"
    else:
        isa = " ".join(env["cpu_isa"]) or "unknown"
        dev = f"cpu ({env['cpu']}, {env['cpu_count']} logical CPUs, ISA: {isa})"
    dtype = cfg.dtype + ("" if cfg.dtype == "fp32" else " (autocast)")
    on_off = {True: "on", False: "off"}
    infer = " ".join(map(str, schedule.batch_sizes)) if schedule.infer else "off"
    train = f"batch {schedule.train_batch_size}, SGD momentum 0.9 nesterov, cross-entropy" if schedule.train else "off"
    kept = ", freed memory kept" if cfg.keep_heap and cfg.device == "cpu" else ""
    return [
        f"device: {dev} | dtype: {dtype} | threads: {cfg.threads} | compile: {on_off[cfg.compile]}"
        f" | sdpa: {on_off[cfg.sdpa]}",
        f"frames: {' '.join(map(str, schedule.frames))} | resolution: {cfg.img_size} px | size: {cfg.size}/{cfg.patch}"
        f" | infer batch sizes: {infer} | train: {train}",
        f"repeats: {schedule.repeats} (median; spread = (max - min) / median) | warm-up passes: {schedule.warmup}"
        f" | timed iterations per repeat: {schedule.iters}, each phase after {schedule.settle} untimed"
        f" | models interleaved, one process each{kept}",
        f"torch {env['torch']} | transformers {env['transformers'] or '-'} | python {env['python']}"
        f" | {env['date_utc']} UTC",
        f"GFLOPs: multiply-adds per view | peak memory: {env['memory_method']}",
    ]


def _num(x: float | None) -> str:
    """Three significant digits (at least the units)."""
    if x is None:
        return "n/a"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _spread(ph: dict) -> str:
    return "" if ph["spread"] is None or len(ph["wall_s"]) < 2 else f" ±{ph['spread'] * 50:.0f}%"


def _memory_keys(keys: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The phases whose peak memory is shown: training, and inference at the largest batch."""
    return [(k, b) for k, b in keys if k == "train" or b == max(bb for kk, bb in keys if kk == "infer")]


def format_table(results: list[dict], keys: list[tuple[str, int]]) -> str:
    """Markdown table, one row per (model, frames)."""
    head = ["model", "T", "params (M)", "GFLOPs"]
    for kind, b in keys:
        head += [f"infer b{b} videos/s", f"latency b{b} (ms)"] if kind == "infer" else [f"train b{b} clips/s"]
    head += [f"peak MB {k} b{b}" for k, b in _memory_keys(keys)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        params = _num(r["params"] / 1e6) if "params" in r else "n/a"
        cells = [f"`{r['label']}`", str(r["frames"]), params, _num(r.get("gmacs"))]
        for kind, b in keys:
            ph = r["phases"][f"{kind}_b{b}"]
            cells.append(_num(ph["videos_per_s"]) + _spread(ph) if not ph["error"] else "error")
            if kind == "infer":
                cells.append(_num(ph["latency_ms"]))
        cells += [_num(r["phases"][f"{k}_b{b}"]["peak_mem_mb"]) for k, b in _memory_keys(keys)]
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
            if p is None:
                cells.append("n/a")
            else:
                paired = f"[{p[name + '_paired_min']:.3f}-{p[name + '_paired_max']:.3f}]"
                cells.append(f"{p[name]:.3f} {paired} {p[name + '_of_min']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path, keys: list[tuple[str, int]], title: str) -> None:
    """Videos/s (inference at the largest batch; training if no inference) against GFLOPs."""
    import matplotlib  # slow to import: only when a plot is asked for

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kind, batch = max(keys, key=lambda k: (k[0] == "infer", k[1]))
    fig, ax = plt.subplots(figsize=(7, 5))
    for frames, marker in zip(sorted({r["frames"] for r in results}), "osD^v<>"):
        rows = [r for r in results if r["frames"] == frames]
        pts = [(r.get("gmacs"), r["phases"][f"{kind}_b{batch}"]["videos_per_s"], r["label"]) for r in rows]
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
