"""The written half of ``xvit reproduce gap``: ``results.md`` (the ablations against X-ViT with the
paper's defaults, the learning curves, when X-ViT catches up) and ``gap.png`` (the curves)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xvit.engine.eval.results import format_duration
from xvit.studies.common import machine_line, pm


def _diff(c: dict | None) -> str:
    if not c or c["diff"] is None:
        return "—"
    se = f" ± {c['se']:.1f}" if c["se"] is not None else ""
    mark = {"yes": " (higher)", "no": " (lower)"}.get(c["verdict"], "")
    return f"{c['diff']:+.1f}{se}{mark}"


def _n(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def markdown(results: dict) -> str:
    s = results["settings"]
    regime = "The from-scratch gap" if results["regime"] == "scratch" else f"Fine-tuned from {s['pretrained']}"
    lines = [
        f"# {regime}: ablations and learning curves",
        "",
        f"`{results['command']}`",
        "",
        f"- machine: {machine_line(results['machine'])}",
        f"- data: {s['data']}; recipe: {s['recipe']}; regime: {results['regime']}",
        f"- seeds: {', '.join(map(str, range(results['seeds'])))}; mean ± sample standard deviation; a difference is "
        "marked higher/lower when it exceeds 2 standard errors"
        + (f"; curves: seeds 0..{results['curve_seeds'] - 1}" if results["curve_seeds"] != results["seeds"] else ""),
        f"- time: {format_duration(results['seconds'])} for {len(results['runs'])} runs",
        "",
    ]
    if results["ablations"]:
        lines += [
            f"## Ablations (learning rate {s['lr']:g})",
            "",
            "| variant | top-1 (%) | pair order (%) | train acc (%) | top-1 vs X-ViT | pair order vs X-ViT |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in results["ablations"]:
            vs = r["vs_xvit"] or {}
            lines.append(
                f"| {r['label']} | {pm(r['top1'])} | {pm(r['pair_order_acc'])} | {pm(r['train_acc'])} | "
                f"{_diff(vs.get('top1'))} | {_diff(vs.get('pair_order_acc'))} |"
            )
        lines.append("")
    if results.get("xvit_seeds"):
        lines += [
            "## X-ViT seed by seed",
            "",
            "Pair order per reversed pair, and where the heads whose keys come from frames t+1 / t-1 attend "
            "(entropy over the 1+N keys / 1 = uniform; weight on the key at the query's own place, uniform = 1/(1+N)):",
            "",
            "| seed | top-1 | pair order | per pair | t+1 heads: entropy / same place "
            "| t-1 heads: entropy / same place |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in results["xvit_seeds"]:
            per = ", ".join("—" if p["order_acc"] is None else f"{p['order_acc']:.0f}" for p in r.get("pairs") or [])
            att = r.get("attention") or {}
            cells = [
                f"{att[src]['entropy']:.2f} / {att[src]['same_place']:.3f}" if src in att else "—"
                for src in ("t+1", "t-1")
            ]
            lines.append(
                f"| {r['seed']} | {_n(r['top1'])} | {_n(r['pair_order_acc'])} | {per} | {cells[0]} | {cells[1]} |"
            )
        lines.append("")
    for c in results["curves"]:
        lines += [
            f"## Learning curve: {c['label']} (lr {c['lr']:g}, {s['curve_epochs']} epochs)",
            "",
            "| epoch | val top-1 (%) | pair order (%) | train acc (%) |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {p['epoch']} | {pm(p['top1'])} | {pm(p['pair_order_acc'])} | {pm(p['train_acc'])} |"
            for p in c["points"]
        ]
        lines.append("")
    up = results["catch_up"]
    if up is not None:
        if up["epoch"] is None:
            lines.append(f"X-ViT's mean val top-1 does not reach TSM-ViT's within {s['curve_epochs']} epochs.")
        else:
            lines.append(
                f"X-ViT's mean val top-1 reaches TSM-ViT's at epoch {up['epoch']} "
                f"({up['xvit']:.1f} vs {up['tsm']:.1f})."
            )
        lines.append("")
    if results["curves"]:
        lines += ["![learning curves](gap.png)", ""]
    return "\n".join(lines)


def plot(path: Path, results: dict) -> None:
    """Val top-1, pair order and train accuracy against epochs, mean ± std band per model."""
    if not results["curves"]:
        return
    fig = Figure(figsize=(12.0, 3.8))
    FigureCanvasAgg(fig)
    for j, (metric, title) in enumerate(
        (("top1", "val top-1 (%)"), ("pair_order_acc", "val pair order (%)"), ("train_acc", "train accuracy (%)"))
    ):
        ax = fig.add_subplot(1, 3, j + 1)
        for k, c in enumerate(results["curves"]):
            xs = [p["epoch"] for p in c["points"] if p[metric]["mean"] is not None]
            mean = [p[metric]["mean"] for p in c["points"] if p[metric]["mean"] is not None]
            std = [p[metric]["std"] or 0.0 for p in c["points"] if p[metric]["mean"] is not None]
            ax.plot(xs, mean, color=f"C{k}", marker="o", ms=3, label=f"{c['label']} (lr {c['lr']:g})")
            ax.fill_between(
                xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], color=f"C{k}", alpha=0.2
            )
        if metric == "pair_order_acc":
            ax.axhline(50, color="gray", ls="--", lw=1)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 100)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Learning curves ({results['regime']}, {results['curve_seeds']} seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
