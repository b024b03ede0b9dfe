"""Supplement Table 1: inference speed (videos/s) of X-ViT against the models it is compared with,
each at its published test setting (frames, resolution, views).

The supplement measures on 8 V100 GPUs; what transfers to another machine is the ratio to X-ViT,
so the table prints measured videos/s, the paper's, and both ratios. Every model runs in its own
process (``xvit.bench.runner``), rows interleaved per repeat. One video costs ``views`` forward
passes of one clip: each row times one view at batch 1 at the exact clip shape and multiplies by
its view count (the heavy settings get fewer repeats, said in the table).

Published settings: X-ViT-B/16 8x224 and 16x224, 1x3 views (paper §4); TimeSformer 8x224 1x3 and
TimeSformer-L 96x224 1x3 (Bertasius et al. 2021: TimeSformer-L is a ViT-B/16 on 96 frames at 224
px; 16x448 is TimeSformer-HR); ViViT-L/16x2 32x224, 4x3 (Arnab et al. 2021; ours is model 1, joint
attention, with 2x16x16 tubelets).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xvit.bench.runner import Pool
from xvit.bench.spec import BenchConfig, ModelSpec
from xvit.data.clip import views_text
from xvit.engine.results import format_duration
from xvit.errors import UserError
from xvit.models.sizes import VARIANTS, family_of, variant_name
from xvit.studies.common import StudyDir, machine, machine_line, write_json

HEAVY_GMACS = 1000.0  # per view: above this a row gets ``heavy_repeats`` timed passes


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    name: str  # registry name
    frames: int
    img_size: int
    views: tuple[int, int]
    paper: float | None  # videos/s on 8 V100s (supplement Table 1)
    options: dict = field(default_factory=dict)
    note: str = ""


ROWS = (
    Row(
        "xvit_8",
        "X-ViT-B/16 8x",
        "xvit_base_patch16_224",
        8,
        224,
        (1, 3),
        12.0,
        note="the supplement's 'X-ViT' (its frames are not stated; 12 videos/s fits the 8x model's GFLOPs)",
    ),
    Row("xvit_16", "X-ViT-B/16 16x", "xvit_base_patch16_224", 16, 224, (1, 3), None),
    Row("timesformer", "TimeSformer 8x", "timesformer_base_patch16_224", 8, 224, (1, 3), None),
    Row(
        "timesformer_l",
        "TimeSformer-L 96x",
        "timesformer_base_patch16_224",
        96,
        224,
        (1, 3),
        0.69,
        note="the supplement's 'TimeSformer' (variant not stated; 0.69 videos/s fits TimeSformer-L's GFLOPs)",
    ),
    Row(
        "vivit_l",
        "ViViT-L/16x2 32x",
        "joint_large_patch16_224",
        32,
        224,
        (4, 3),
        0.66,
        {"tubelet": 2},
        note="ViViT model 1 (joint space-time attention); the supplement does not say which ViViT-L variant",
    ),
)
REFERENCE = "xvit_8"
# the supplement's other rows: models xvit does not implement (videos/s on 8 V100s)
NOT_MEASURED = {"bLVNet": 7.5, "TEA": 2.4, "SlowFast 8f": 0.69, "I3D-NL R101": 0.37}


def rows_at_size(size: str | None) -> list[Row]:
    """``ROWS``, or every row's model at ViT ``size`` (its registered patch and input size)."""
    if size is None:
        return list(ROWS)
    variant = next((v for v in VARIANTS if v[0] == size), None)
    if variant is None:
        raise UserError(f"unknown size {size!r}: one of {', '.join(dict.fromkeys(v[0] for v in VARIANTS))}")
    out = []
    for r in ROWS:
        family = family_of(r.name)
        name = variant_name(family, *variant)
        out.append(replace(r, name=name, img_size=variant[2], label=f"{r.label} ({size})"))
    return out


def run_table1(
    out: Path,
    command: str,
    settings: dict,
    *,
    rows: list[str] | None = None,
    repeats: int = 5,
    heavy_repeats: int = 2,
    threads: int | None = None,
    device: str = "cpu",
    size: str | None = None,
) -> dict:
    """Measure every row (``rows``: their keys, default all; ``size``: every model at that ViT size
    instead of the published one, for tests and quick looks) and write results.json / results.md /
    table1.png in ``out``; each row's timings are a unit (a killed study re-measures only the
    rows it had not finished)."""
    chosen = [r for r in rows_at_size(size) if rows is None or r.key in rows]
    study = StudyDir(out, "table1", settings)
    img = chosen[0].img_size
    cfg = BenchConfig(device=device, threads=threads or os.cpu_count() or 1, img_size=img, classes=400)
    pending = [r for r in chosen if study.load(r.key) is None]
    if len(pending) < len(chosen):
        print(
            f"[table1] {len(chosen) - len(pending)} of {len(chosen)} rows already measured in {study.root}",
            file=sys.stderr,
        )
    if pending:
        measure_rows(pending, cfg, repeats, heavy_repeats, done=study.save)
    records = [study.load(r.key) for r in chosen]
    results = summarise(records, command, settings, cfg)
    write_json(study.root / "results.json", results)
    (study.root / "results.md").write_text(markdown(results))
    plot(study.root / "table1.png", results)
    return results


def measure_rows(rows: list[Row], cfg: BenchConfig, repeats: int, heavy_repeats: int, done: Callable) -> None:
    """Time one view of every row: each built once in its own process, one warm-up pass, then timed
    passes interleaved across the rows (a heavy row stops after ``heavy_repeats``). ``done(key,
    record)`` gets each row as soon as its passes are complete (with the ``seconds`` it took)."""
    specs = [ModelSpec(r.key, "xvit", r.name, r.options) for r in rows]
    pool = Pool(specs, cfg)
    out: dict[str, dict] = {}
    try:
        for r in rows:
            print(f"[table1] building {r.label} ({r.frames} frames, {r.img_size} px)", file=sys.stderr, flush=True)
            start = time.perf_counter()
            info = pool.call(r.key, "load", r.frames)
            heavy = "gmacs" in info and info["gmacs"] > HEAVY_GMACS
            out[r.key] = {**_describe(r), **info, "repeats": heavy_repeats if heavy else repeats, "times": []}
            out[r.key]["seconds"] = time.perf_counter() - start
        for p in range(1 + max(o["repeats"] for o in out.values())):
            for r in rows[p % len(rows) :] + rows[: p % len(rows)]:  # rotate who goes first
                o = out[r.key]
                if o.get("finished"):
                    continue
                what = "warm-up" if p == 0 else f"repeat {p}/{o['repeats']}"
                print(f"[table1] {r.label}: one view, {what}", file=sys.stderr, flush=True)
                start = time.perf_counter()
                # settle 0: the warm-up pass precedes; the heap trim costs inference no measurable time
                res = pool.call(r.key, "phase", "infer", 1, 1, 0) if "error" not in o else {}
                o["seconds"] += time.perf_counter() - start
                if "error" in res:
                    o["error"] = res["error"]
                elif p > 0:
                    o["times"].append(res["wall"])
                if "error" in o or len(o["times"]) >= o["repeats"]:
                    o["finished"] = True
                    done(r.key, {**{k: v for k, v in o.items() if k != "finished"}, "seconds": round(o["seconds"], 1)})
    finally:
        pool.close()


def _describe(r: Row) -> dict:
    return {
        "key": r.key,
        "label": r.label,
        "name": r.name,
        "options": r.options,
        "frames": r.frames,
        "img_size": r.img_size,
        "views": views_text(r.views),
        "num_views": r.views[0] * r.views[1],
        "paper_videos_per_s": r.paper,
        "note": r.note,
    }


def summarise(records: list[dict], command: str, settings: dict, cfg: BenchConfig) -> dict:
    rows = []
    for rec in records:
        row = {k: v for k, v in rec.items() if k != "times"}
        row["times_s"] = [round(t, 4) for t in rec.get("times", [])]
        if row["times_s"]:
            per_view = statistics.median(row["times_s"])
            row["s_per_view"] = round(per_view, 4)
            row["videos_per_s"] = round(1.0 / (per_view * rec["num_views"]), 5)
            row["gmacs_per_video"] = round(rec["gmacs"] * rec["num_views"], 1)
        rows.append(row)
    ref = next((r for r in rows if r["key"] == REFERENCE and r.get("videos_per_s")), None)
    for row in rows:
        if ref and row.get("videos_per_s"):
            row["ratio"] = round(row["videos_per_s"] / ref["videos_per_s"], 4)
        if ref and row["paper_videos_per_s"]:
            row["paper_ratio"] = round(row["paper_videos_per_s"] / ref["paper_videos_per_s"], 4)
    return {
        "study": "table1",
        "command": command,
        "settings": settings,
        "machine": machine(),
        "device": cfg.device,
        "threads": cfg.threads,
        "seconds": round(sum(r.get("seconds", 0.0) for r in records), 1),
        "rows": rows,
        "not_measured": NOT_MEASURED,
    }


def _num(x: float | None, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def markdown(results: dict) -> str:
    lines = [
        "# Supplement Table 1: inference speed at each model's published test setting",
        "",
        f"`{results['command']}`",
        "",
        f"- machine: {machine_line(results['machine'])}; device {results['device']}, {results['threads']} threads, "
        "fp32, SDPA attention, batch 1",
        f"- time: {format_duration(results['seconds'])}",
        "- videos/s = 1 / (median seconds per view x views per video); the paper's: 8 V100 GPUs",
        "",
        "| model | clip | views | GMACs / video | s / view (timed passes) | videos/s | paper videos/s | "
        "ratio to X-ViT 8x | paper ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["rows"]:
        if "error" in r:
            lines.append(f"| {r['label']} | {r['frames']}x{r['img_size']} | {r['views']} | — | {r['error']} | | | | |")
            continue
        times = r["times_s"]
        spread = f"{r.get('s_per_view', 0):.3f} [{min(times):.3f}-{max(times):.3f}] ({len(times)})" if times else "—"
        lines.append(
            f"| {r['label']} | {r['frames']}x{r['img_size']} | {r['views']} | "
            f"{_num(r.get('gmacs_per_video'), '.0f')} | "
            f"{spread} | {_num(r.get('videos_per_s'), '.3g')} | {_num(r['paper_videos_per_s'], '.2f')} | "
            f"{_num(r.get('ratio'), '.3f')} | {_num(r.get('paper_ratio'), '.3f')} |"
        )
    lines += ["", "Notes:"]
    lines += [f"- {r['label']}: {r['note']}" for r in results["rows"] if r.get("note")]
    others = ", ".join(f"{k} {v}" for k, v in results["not_measured"].items())
    lines += [
        f"- not implemented in xvit, so not measured (paper videos/s): {others}",
        "",
        "![Table 1](table1.png)",
        "",
    ]
    return "\n".join(lines)


def plot(path: Path, results: dict) -> None:
    """Speed relative to X-ViT 8x, measured beside the paper's (log scale)."""
    rows = [r for r in results["rows"] if r.get("ratio")]
    if not rows:
        return
    fig = Figure(figsize=(8.0, 3.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x, w = np.arange(len(rows)), 0.38
    ax.bar(x - w / 2, [r["ratio"] for r in rows], w, label="measured (this machine)")
    paper = [r.get("paper_ratio") or 0.0 for r in rows]
    ax.bar(x + w / 2, paper, w, label="paper (8 V100s)")
    ax.set_yscale("log")
    ax.set_xticks(x, [f"{r['label']}\n{r['views']} views" for r in rows], fontsize=8)
    ax.set_ylabel("videos/s relative to X-ViT-B/16 8x")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
