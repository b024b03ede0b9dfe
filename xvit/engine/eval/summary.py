"""The side-by-side summary of a job that trains several models (``compare``): ``summary.md``,
``summary.json`` and ``summary.png`` (per-class accuracy of every model, and their confusion
matrices). On a dataset with time-reversed class pairs the table leads with pair order accuracy:
what space-time mixing (X-ViT paper §3) adds over a frame model, which sits at ~50% there.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xvit.engine.eval.results import format_duration


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def summary_table(results: list[dict]) -> str:
    """Markdown: one row per model with what it is, its accuracies, size, time and throughput."""
    rows = [
        "| model | temporal exchange | head | top-1 | pair order acc | train acc | params (M) | train time | clips/s |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        d = r.get("describe") or {}
        rows.append(
            f"| {r['model']} | {d.get('temporal', '-')} | {d.get('head', '-')} | {_pct(r.get('top1'))} "
            f"| {_pct(r.get('pair_order_acc'))} | {_pct(r.get('train_acc'))} | {r['params_m']:.2f} "
            f"| {format_duration(r['train_time_s'])} | {_pct(r.get('train_clips_per_s'))} |"
        )
    return "\n".join(rows)


def pairs_table(results: list[dict]) -> str:
    """Markdown: pair order accuracy of every model on every reversed pair (and the videos counted)."""
    with_pairs = [r for r in results if r.get("pairs")]
    if not with_pairs:
        return ""
    head = "| reversed pair | " + " | ".join(r["model"] for r in with_pairs) + " |"
    rows = [head, "| --- |" + " ---: |" * len(with_pairs)]
    for i, p in enumerate(with_pairs[0]["pairs"]):
        cells = [f"{_pct(r['pairs'][i]['order_acc'])} ({r['pairs'][i]['videos']})" for r in with_pairs]
        rows.append(f"| {p['pair']} | " + " | ".join(cells) + " |")
    rows.append("| **mean** | " + " | ".join(f"**{_pct(r.get('pair_order_acc'))}**" for r in with_pairs) + " |")
    return "\n".join(rows)


def summary_markdown(results: list[dict]) -> str:
    """The whole ``summary.md``: the model table, then the per-pair table with a note on what it means."""
    parts = [summary_table(results)]
    pairs = pairs_table(results)
    if pairs:
        parts += [
            "Pair order accuracy per time-reversed pair, % (videos of the pair predicted inside the pair): "
            "the fraction put in the right one of the two; a model blind to frame order is at ~50%.",
            pairs,
        ]
    return "\n\n".join(parts) + "\n"


def plot_summary(path: Path, results: list[dict]) -> None:
    """Per-class accuracy of every model side by side (top) and each model's confusion matrix (bottom)."""
    shown = [r for r in results if r.get("confusion")]
    if not shown:
        return
    names = shown[0]["class_names"]
    k, m = len(names), len(shown)
    fig = Figure(figsize=(max(8.0, 0.55 * k + 2), 4.0 + 4.2 * ((m + 1) // 2)))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1 + (m + 1) // 2, 2, height_ratios=[1.0] + [1.3] * ((m + 1) // 2))
    ax = fig.add_subplot(grid[0, :])
    width = 0.8 / m
    for j, r in enumerate(shown):
        accs = [r["per_class_acc"].get(n) or 0.0 for n in names]
        ax.bar(np.arange(k) + (j - (m - 1) / 2) * width, accs, width, label=f"{r['model']} ({_pct(r['top1'])}%)")
    ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("per-class accuracy")
    for j, r in enumerate(shown):
        cm = np.asarray(r["confusion"], dtype=float)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        axc = fig.add_subplot(grid[1 + j // 2, j % 2])
        axc.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        axc.set_xticks(range(k), names, rotation=90, fontsize=6)
        axc.set_yticks(range(k), names, fontsize=6)
        axc.set_xlabel("predicted", fontsize=8)
        axc.set_ylabel("true", fontsize=8)
        order = f", pair order {_pct(r.get('pair_order_acc'))}%" if r.get("pair_order_acc") is not None else ""
        axc.set_title(f"{r['model']}: top-1 {_pct(r['top1'])}%{order}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def write_summary(out_dir: Path, results: list[dict]) -> str:
    """Write ``summary.md``, ``summary.json`` and ``summary.png`` into ``out_dir``; return the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = summary_markdown(results)
    (out_dir / "summary.md").write_text(text)
    (out_dir / "summary.json").write_text(json.dumps(results, indent=2) + "\n")
    plot_summary(out_dir / "summary.png", results)
    return text
