"""Supplement Table 2: TSM-ViT against X-ViT, each with temporal average pooling and with temporal
attention aggregation, on one backbone, data, recipe, budget and set of seeds; the frame ViT
(no temporal exchange) as the floor.

Paper (Something-Something-v2, ViT-B/16, 8 frames): TSM-ViT + pooling 60.8% top-1 (supplement
Table 2); X-ViT 61.6% with temporal averaging and 63.4% with temporal attention (main paper §4.1
ablations). The claim tested on the proxy is the ordering X-ViT + TA > X-ViT + pool > TSM-ViT +
pool; on the built-in benchmark pair order accuracy (SPEC §8: 50% for a model blind to frame
order) says how much of it is temporal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xvit.engine.config import Config
from xvit.engine.results import format_duration
from xvit.models.sizes import family_of
from xvit.studies.common import (
    StudyDir,
    Unit,
    compare,
    machine,
    machine_line,
    mean_std,
    pm,
    run_units,
    train_run,
    write_json,
)

# The CPU budget on the built-in benchmark: the main job's recipe at 6 epochs (15 runs in ~25 min).
DEFAULTS = ["train.epochs=6"]
# options every family takes (the shared ViT arguments); the rest of model.options is X-ViT's
SHARED_OPTIONS = {"drop_rate", "drop_path_rate", "attn_drop_rate", "head_depth"}


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    family: str
    head: str | None  # None: the family's default
    paper: float | None  # SSv2 top-1 (%)
    source: str = ""


VARIANTS = (
    Variant("xvit_ta", "X-ViT + temporal attention", "xvit", "attn", 63.4, "main paper §4.1 ablation"),
    Variant("xvit_pool", "X-ViT + temporal pooling", "xvit", "avg", 61.6, "main paper §4.1 ablation"),
    Variant("tsm_ta", "TSM-ViT + temporal attention", "tsm_vit", "attn", None),
    Variant("tsm_pool", "TSM-ViT + temporal pooling", "tsm_vit", "avg", 60.8, "supplement Table 2"),
    Variant("vit", "frame ViT (floor)", "vit", None, None),
)
# the paper's ordering, as (higher, lower) pairs of variant keys
ORDERING = (("xvit_ta", "xvit_pool"), ("xvit_pool", "tsm_pool"))


def model_for(cfg: Config, v: Variant) -> tuple[str, dict]:
    """The registry name and options of variant ``v`` at the size of ``cfg.model.name``."""
    family = family_of(cfg.model.name)
    name = v.family + cfg.model.name[len(family) :]
    options = {k: val for k, val in cfg.model.options.items() if v.family == family or k in SHARED_OPTIONS}
    if v.head is not None:
        options["head"] = v.head
    if v.head != "attn":
        options.pop("head_depth", None)
    return name, options


def run_table2(cfg: Config, seeds: int, out: Path, command: str, settings: dict) -> dict:
    """Train and evaluate every variant with every seed (seed-major, so a partial study stays
    balanced), then write results.json / results.md / table2.png in ``out``; returns results.json."""
    study = StudyDir(out, "table2", settings)
    units = []
    for seed in range(seeds):
        for v in VARIANTS:
            name, options = model_for(cfg, v)
            key = f"{v.key}_s{seed}"
            run = _trainer(cfg, study.run_dir(key), v, name, options, seed)
            units.append(Unit(key, f"{v.label}, seed {seed} ({name})", run))
    records = run_units("table2", study, units)
    results = summarise(records, command, settings, cfg, seeds)
    write_json(study.root / "results.json", results)
    (study.root / "results.md").write_text(markdown(results))
    plot(study.root / "table2.png", results)
    return results


def _trainer(cfg: Config, run_dir: Path, v: Variant, name: str, options: dict, seed: int):
    def run() -> dict:
        r = train_run(cfg, run_dir, name=name, options=options, seed=seed)
        keys = ("top1", "top5", "pair_order_acc", "train_acc", "train_time_s", "eval_time_s", "train_clips_per_s")
        return {
            "variant": v.key,
            "seed": seed,
            "model": name,
            "options": options,
            "describe": r.get("describe"),
            **{k: r.get(k) for k in keys},
            "pairs": r.get("pairs"),
            "run_dir": str(run_dir),
        }

    return run


def summarise(records: list[dict], command: str, settings: dict, cfg: Config, seeds: int) -> dict:
    """Mean ± std per variant, the ordering verdicts, and every run."""
    rows = []
    for v in VARIANTS:
        runs = [r for r in records if r["variant"] == v.key]
        rows.append(
            {
                "variant": v.key,
                "label": v.label,
                "model": runs[0]["model"] if runs else None,
                "describe": runs[0]["describe"] if runs else None,
                "seeds": [r["seed"] for r in runs],
                "top1": mean_std([r["top1"] for r in runs]),
                "pair_order_acc": mean_std([r["pair_order_acc"] for r in runs]),
                "train_time_s": mean_std([r["train_time_s"] for r in runs]),
                "paper_top1": v.paper,
                "paper_source": v.source,
            }
        )
    by_key = {r["variant"]: r for r in rows}
    verdicts = []
    for hi, lo in ORDERING:
        for metric in ("top1", "pair_order_acc"):
            verdicts.append(
                {"higher": hi, "lower": lo, "metric": metric, **compare(by_key[hi][metric], by_key[lo][metric])}
            )
    return {
        "study": "table2",
        "command": command,
        "settings": settings,
        "seeds": seeds,
        "machine": machine(),
        "dataset": cfg.data.format,
        "seconds": round(sum(r.get("seconds", 0.0) for r in records), 1),
        "rows": rows,
        "ordering": verdicts,
        "runs": records,
    }


def _ordering_text(results: dict) -> list[str]:
    labels = {v.key: v.label for v in VARIANTS}
    lines = []
    for c in results["ordering"]:
        what = "top-1" if c["metric"] == "top1" else "pair order"
        if c["diff"] is None:
            lines.append(f"- {labels[c['higher']]} > {labels[c['lower']]} ({what}): not measured")
            continue
        se = f" ± {c['se']:.1f} (standard error)" if c["se"] is not None else ""
        word = {
            "yes": "holds",
            "no": "reversed",
            "unresolved": "not resolved (within 2 standard errors)",
            "one seed": "one seed: no spread to judge it by",
        }[c["verdict"]]
        lines.append(
            f"- {labels[c['higher']]} > {labels[c['lower']]} ({what}): {word}; difference {c['diff']:+.1f}{se}"
        )
    return lines


def markdown(results: dict) -> str:
    s = results["settings"]
    head = [
        "# Supplement Table 2: TSM-ViT vs X-ViT, temporal pooling vs temporal attention",
        "",
        f"`{results['command']}`",
        "",
        f"- machine: {machine_line(results['machine'])}",
        f"- data: {s['data']}; recipe: {s['recipe']}",
        f"- seeds: {', '.join(map(str, range(results['seeds'])))} (every model: the same data, recipe, budget, seeds)",
        f"- time: {format_duration(results['seconds'])} for {len(results['runs'])} runs",
        "",
        "| model | temporal exchange | head | top-1 (%) | pair order (%) | train time | paper top-1 (SSv2) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    body = []
    for r in results["rows"]:
        d = r["describe"] or {}
        paper = f"{r['paper_top1']:.1f} ({r['paper_source']})" if r["paper_top1"] is not None else "—"
        t = r["train_time_s"]["mean"]
        body.append(
            f"| {r['label']} | {d.get('temporal', '')} | {d.get('head', '')} | {pm(r['top1'])} | "
            f"{pm(r['pair_order_acc'])} | {format_duration(t) if t else '—'} | {paper} |"
        )
    tail = [
        "",
        "Mean ± sample standard deviation over the seeds. The paper's ordering, X-ViT + TA > X-ViT + pool > "
        "TSM-ViT + pool, on this proxy (a comparison holds when the difference of means exceeds 2 standard errors):",
        "",
        *_ordering_text(results),
        "",
        "![Table 2 on the proxy](table2.png)",
        "",
    ]
    return "\n".join(head + body + tail)


def plot(path: Path, results: dict) -> None:
    """Top-1 and pair order accuracy per model: mean ± std bars with every seed as a dot."""
    rows = results["rows"]
    fig = Figure(figsize=(9.0, 4.2))
    FigureCanvasAgg(fig)
    for j, (metric, title) in enumerate((("top1", "top-1 (%)"), ("pair_order_acc", "pair order accuracy (%)"))):
        ax = fig.add_subplot(1, 2, j + 1)
        x = np.arange(len(rows))
        means = [r[metric]["mean"] or 0.0 for r in rows]
        stds = [r[metric]["std"] or 0.0 for r in rows]
        ax.bar(x, means, yerr=stds, capsize=4, color=["C0", "C0", "C1", "C1", "C7"][: len(rows)], alpha=0.75)
        for i, r in enumerate(rows):
            seeds = [
                run[metric] for run in results["runs"] if run["variant"] == r["variant"] and run[metric] is not None
            ]
            ax.scatter([i] * len(seeds), seeds, color="k", s=10, zorder=3)
        if metric == "pair_order_acc":
            ax.axhline(50, color="gray", ls="--", lw=1, label="chance (order-blind)")
            ax.legend(fontsize=8, loc="lower right")
        short = {"temporal attention": "TA", "temporal pooling": "pool", "frame ViT (floor)": "frame ViT"}
        names = [r["label"] for r in rows]
        for long, abbr in short.items():
            names = [n.replace(long, abbr) for n in names]
        ax.set_xticks(x, [n.replace(" + ", "\n+ ") for n in names], fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Table 2 on {results['dataset']} data ({results['seeds']} seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
