"""The written half of ``xvit reproduce table2``: ``results.md`` (per regime: the table at each
variant's best learning rate, the ordering verdicts, the sweep; then what pretraining changed) and
``table2.png`` (both regimes side by side, every seed as a dot)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xvit.engine.eval.results import format_duration
from xvit.studies.common import machine_line, pm

TITLES = {
    "scratch": "From scratch",
    "pretrained": "Fine-tuned from an image ViT",
}
VERDICT_WORDS = {
    "yes": "holds",
    "no": "reversed",
    "unresolved": "not resolved (within 2 standard errors)",
    "one seed": "one seed: no spread to judge it by",
    "missing": "not measured",
}


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def _compare_line(c: dict, labels: dict[str, str], left: str, right: str) -> str:
    what = "top-1" if c["metric"] == "top1" else "pair order"
    if c["diff"] is None:
        return f"- {left} > {right} ({what}): not measured"
    se = f" ± {c['se']:.1f} (standard error)" if c["se"] is not None else ""
    return f"- {left} > {right} ({what}): {VERDICT_WORDS[c['verdict']]}; difference {c['diff']:+.1f}{se}"


def _regime_section(res: dict, labels: dict[str, str]) -> list[str]:
    title = TITLES[res["regime"]]
    if res["model_pretrained"]:
        title += f" (`model.pretrained={res['model_pretrained']}`)"
    lines = [
        f"## {title}",
        "",
        "| model | temporal exchange | head | lr (best of sweep) | top-1 (%) | pair order (%) | train acc (%) "
        "| train time | paper top-1 (SSv2) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in res["rows"]:
        d = r["describe"] or {}
        paper = f"{r['paper_top1']:.1f} ({r['paper_source']})" if r["paper_top1"] is not None else "—"
        t = r["train_time_s"]["mean"]
        lines.append(
            f"| {r['label']} | {d.get('temporal', '')} | {d.get('head', '')} | {r['lr']:g} | {pm(r['top1'])} | "
            f"{pm(r['pair_order_acc'])} | {pm(r['train_acc'])} | {format_duration(t) if t else '—'} | {paper} |"
        )
    lines += ["", "The paper's ordering, X-ViT + TA > X-ViT + pool > TSM-ViT + pool:", ""]
    lines += [_compare_line(c, labels, labels[c["higher"]], labels[c["lower"]]) for c in res["ordering"]]
    lrs = sorted({s["lr"] for r in res["rows"] for s in r["sweep"]})
    lines += [
        "",
        "Learning-rate sweep, seed 0: top-1 / pair order / train accuracy (%):",
        "",
        "| model | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |",
        "| --- |" + " --- |" * len(lrs),
    ]
    for r in res["rows"]:
        cells = {s["lr"]: s for s in r["sweep"]}
        row = [
            " / ".join(_num(cells[lr][m]) for m in ("top1", "pair_order_acc", "train_acc")) if lr in cells else "—"
            for lr in lrs
        ]
        lines.append(f"| {r['label']} | " + " | ".join(row) + " |")
    return lines + [""]


def markdown(results: dict, variants) -> str:
    """``results.md``: the settings, then each regime's section, then what pretraining changed."""
    s = results["settings"]
    labels = {v.key: v.label for v in variants}
    runs = results["runs"]
    grid = "; ".join(f"{r}: " + ", ".join(f"{x:g}" for x in v) for r, v in s["lrs"].items())
    head = [
        "# Supplement Table 2: TSM-ViT vs X-ViT, temporal pooling vs temporal attention",
        "",
        f"`{results['command']}`",
        "",
        f"- machine: {machine_line(results['machine'])}",
        f"- data: {s['data']}; recipe: {s['recipe']}",
        f"- regimes: {', '.join(results['regimes'])}; every model in a regime: the same data, recipe, budget, seeds",
        f"- learning rate: each model its own, the best of a sweep ({grid}) "
        "by seed 0's val top-1 (then pair order); seeds 1.. at that rate, seed 0's sweep run counted as seed 0",
        f"- seeds: {', '.join(map(str, range(results['seeds'])))}; mean ± sample standard deviation over them; "
        "a comparison holds when the difference of means exceeds 2 standard errors",
        f"- time: {format_duration(results['seconds'])} for {len(runs)} runs",
        "",
    ]
    body = [line for res in results["regimes"].values() for line in _regime_section(res, labels)]
    if results["pretrained_gain"]:
        body += ["## What the image pretraining changed (pretrained minus scratch, each at its best rate)", ""]
        body += [
            _compare_line(c, labels, f"{labels[c['variant']]} pretrained", "scratch")
            for c in results["pretrained_gain"]
        ]
        body.append("")
    return "\n".join(head + body + ["![Table 2 on the proxy](table2.png)", ""])


def plot(path: Path, results: dict) -> None:
    """Top-1 and pair order accuracy per model, one bar per regime (mean ± std), seeds as dots."""
    regimes = list(results["regimes"].values())
    rows0 = regimes[0]["rows"]
    fig = Figure(figsize=(10.0, 4.4))
    FigureCanvasAgg(fig)
    width = 0.8 / len(regimes)
    short = {"temporal attention": "TA", "temporal pooling": "pool", "frame ViT (floor)": "frame ViT"}
    names = [r["label"] for r in rows0]
    for long, abbr in short.items():
        names = [n.replace(long, abbr) for n in names]
    for j, (metric, title) in enumerate((("top1", "top-1 (%)"), ("pair_order_acc", "pair order accuracy (%)"))):
        ax = fig.add_subplot(1, 2, j + 1)
        x = np.arange(len(rows0))
        for k, res in enumerate(regimes):
            pos = x - 0.4 + width * (k + 0.5)
            means = [r[metric]["mean"] or 0.0 for r in res["rows"]]
            stds = [r[metric]["std"] or 0.0 for r in res["rows"]]
            ax.bar(pos, means, width, yerr=stds, capsize=3, color=f"C{k}", alpha=0.75, label=TITLES[res["regime"]])
            for i, r in enumerate(res["rows"]):
                seeds = [
                    run[metric]
                    for run in results["runs"]
                    if run["regime"] == res["regime"] and run["variant"] == r["variant"] and run["lr"] == r["lr"]
                ]
                ax.scatter([pos[i]] * len(seeds), seeds, color="k", s=8, zorder=3)
        if metric == "pair_order_acc":
            ax.axhline(50, color="gray", ls="--", lw=1)
        ax.set_xticks(x, [n.replace(" + ", "\n+ ") for n in names], fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(
        f"Table 2 on {results['dataset']} data ({results['seeds']} seeds, each model at its best lr)", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
