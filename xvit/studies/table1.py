"""Supplement Table 1: inference speed (videos/s) of X-ViT against the seven systems it is compared
with (bLVNet, TEA, SlowFast 8f, TimeSformer, ViViT-L, I3D-NL R101), each at its published test
setting (frames, resolution, views).

The supplement measures on 8 V100 GPUs; what transfers to another machine is the ratio to X-ViT,
so the table prints measured videos/s, the paper's, both ratios, the ratio that the multiply-adds
alone predict, and a verdict per row. Every model runs in its own process (``xvit.bench.runner``),
rows interleaved per pass. One video costs ``views`` forward passes of one clip: each row times one
view at batch 1 at the exact clip shape and multiplies by its view count. The harness is
``xvit.bench``'s: the warm-up pass is the only one that trims the heap (and measures memory), the
timed passes keep it, and each light row runs one settle iteration before its timed one; a row
over ``HEAVY_GMACS`` per view gets ``heavy_repeats`` timed passes and no settle iteration (its one
long view settles itself; said in the table, with the page faults of every timed view in the JSON).

Where the supplement names a system without its variant, the rows give each candidate (the
SlowFast and ViViT-L rows); a row sharing another's model and clip (ViViT-L FE 128x at 1x1 and
1x3 views) reuses its timing. The settings and their sources are in ``ROWS`` (and
docs/reproduction.md).
"""

from __future__ import annotations

import math
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
from xvit.engine.eval.results import format_duration
from xvit.errors import UserError
from xvit.models.sizes import VARIANTS, family_of, is_cnn, variant_name
from xvit.studies.common import StudyDir, machine, machine_line, write_json

HEAVY_GMACS = 300.0  # per view: above this a row gets ``heavy_repeats`` timed passes and no settle iteration
AGREE = (0.8, 1.25)  # measured ratio / paper ratio inside this band: "agrees"


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    name: str  # registry name
    frames: int  # input frames of one view (SlowFast: the Fast pathway's)
    img_size: int
    views: tuple[int, int]  # temporal clips x spatial crops
    paper: float | None  # videos/s on 8 V100s (supplement Table 1)
    paper_gmacs: float | None  # the published GFLOPs (multiply-adds) of one view
    source: str  # where the setting and the figure come from
    options: dict = field(default_factory=dict)
    timed_by: str | None = None  # the row whose per-view time this one shares (same model and clip)
    group: str = "vit"  # rows measured together, beside their own X-ViT 8x reference (see GROUPS)


def _row(key, label, name, frames, img, views, paper, gmacs, source, **kw) -> Row:
    return Row(key, label, name, frames, img, views, paper, gmacs, source, **kw)


ROWS = (
    _row("xvit_8", "X-ViT-B/16 8x", "xvit_base_patch16_224", 8, 224, (1, 3), 12.0, 425 / 3,
         "X-ViT §4 / Table 5: 1x3 views, 425 GFLOPs per video; the supplement's 'X-ViT' (12 videos/s fits the "
         "8x model)"),
    _row("xvit_16", "X-ViT-B/16 16x", "xvit_base_patch16_224", 16, 224, (1, 3), None, 850 / 3,
         "X-ViT Table 5: 1x3 views, 850 GFLOPs per video"),
    _row("blvnet", "bLVNet-TAM-101 24x2", "blvnet_tam_r101", 48, 224, (3, 3), 7.5, 840 / 9,
         "bLVNet-TAM-101 on 24 frame pairs (its Kinetics model, 73.5%); 3x3 views and 840 GFLOPs per video as "
         "X-ViT Table 5 cites it", group="cnn"),
    _row("tea", "TEA R50 16f", "tea_r50", 16, 256, (10, 3), 2.4, 70,
         "TEA (Li et al. 2020) Kinetics: 16 frames, 10 clips x 3 crops ('accuracy protocol', 256 px crops: the "
         "official test script's --full_res), 70 GFLOPs x 30 at 224 px", group="cnn"),
    _row("slowfast_r50", "SlowFast 8x8 R50", "slowfast_r50_8x8", 32, 256, (10, 3), 0.69, 65.7,
         "SlowFast Table 2: 8 Slow / 32 Fast frames, 10 clips x 3 crops of 256 px, 65.7 GFLOPs x 30", group="cnn"),
    _row("slowfast_r101_nl", "SlowFast 8x8 R101+NL", "slowfast_r101_nl_8x8", 32, 256, (10, 3), 0.69, 116,
         "the 'SlowFast 8x8 R101+NL' of X-ViT Table 5 (3,480 GFLOPs = 116 x 30; SlowFast's Table 2, ICCV "
         "version)", group="cnn"),
    _row("slowfast_r101_nl_16", "SlowFast 16x8 R101+NL", "slowfast_r101_nl_16x8", 64, 256, (10, 3), None, 234,
         "SlowFast Table 2 / X-ViT Table 5: 16 Slow / 64 Fast frames, 234 GFLOPs x 30 (7,020)", group="cnn"),
    _row("timesformer", "TimeSformer 8x", "timesformer_base_patch16_224", 8, 224, (1, 3), None, 196,
         "TimeSformer (Bertasius et al. 2021): 8x224, 1x3 views, 0.59 TFLOPs per video"),
    _row("timesformer_l", "TimeSformer-L 96x", "timesformer_base_patch16_224", 96, 224, (1, 3), 0.69, 7140 / 3,
         "TimeSformer-L: ViT-B/16 on 96 frames at 224 px, 1x3 views, 7.14 TFLOPs per video (X-ViT Table 5); the "
         "supplement's 'TimeSformer'"),
    _row("vivit_l", "ViViT-L/16x2 32x (model 1)", "joint_large_patch16_224", 32, 224, (4, 3), 0.66, 1446,
         "ViViT Table 4: model 1 (joint attention) at 224 px, 1446 GFLOPs per view; 4x3 views and 17,352 GFLOPs "
         "per video as X-ViT Table 5 cites it", options={"tubelet": 2}, group="vivit"),
    _row("vivit_fe_32", "ViViT-L/16x2 FE 32x", "vivit_fe_large_patch16_224", 32, 224, (4, 3), 0.66, 995.3,
         "ViViT §4.2: the factorised encoder (model 2) on 32 frames, 995.3 GFLOPs per view, 4 temporal views (x 3 "
         "crops, §4.3)", group="vivit"),
    _row("vivit_fe_128", "ViViT-L/16x2 FE 128x", "vivit_fe_large_patch16_224", 128, 224, (1, 3), 0.66, 3980.4,
         "ViViT Table 5a: FE on 128 frames, 1x3 views, 11.94 TFLOPs per video (81.7%)", group="vivit"),
    _row("vivit_fe_128_1x1", "ViViT-L/16x2 FE 128x", "vivit_fe_large_patch16_224", 128, 224, (1, 1), 0.66, 3980.4,
         "ViViT Table 5a: FE on 128 frames, one view, 3.98 TFLOPs (80.6%)", timed_by="vivit_fe_128", group="vivit"),
    _row("i3d_nl", "I3D-NL R101 128f", "i3d_nl_r101", 128, 256, (10, 3), 0.37, 359,
         "Non-local nets Table 2g/3 (128 frames, 77.7%), 10 clips x 3 crops of 256 px (the official code's "
         "approximation of fully-convolutional testing); 359 GFLOPs x 30 as SlowFast Table 2 and X-ViT Table 5 "
         "cite it", group="cnn"),
)  # fmt: skip
REFERENCE = "xvit_8"  # paper: 12 videos/s
# Rows are measured group by group: a group's models (and its own X-ViT 8x reference) live in their
# processes together and are interleaved pass by pass, and its ratios are to that reference. One
# group at a time keeps the memory of the processes alive at once to a few GB (all 13 models
# together took ~10 GB) and lets each group be one short run.
GROUPS = {"vit": "X-ViT and TimeSformer", "vivit": "ViViT-L", "cnn": "the CNNs"}


def rows_at_size(size: str | None) -> list[Row]:
    """``ROWS``, or every transformer row's model at ViT ``size`` (its registered patch and input
    size) and every CNN row's at its ``_nano`` test size (32 px), for tests and quick looks."""
    if size is None:
        return list(ROWS)
    variant = next((v for v in VARIANTS if v[0] == size), None)
    if variant is None:
        raise UserError(f"unknown size {size!r}: one of {', '.join(dict.fromkeys(v[0] for v in VARIANTS))}")
    out = []
    for r in ROWS:
        family = family_of(r.name)
        name, img = (f"{family}_nano", 32) if is_cnn(r.name) else (variant_name(family, *variant), variant[2])
        out.append(replace(r, name=name, img_size=img, label=f"{r.label} ({size})"))
    return out


def run_table1(
    out: Path,
    command: str,
    settings: dict,
    *,
    rows: list[str] | None = None,
    repeats: int = 5,
    heavy_repeats: int = 3,
    threads: int | None = None,
    device: str = "cpu",
    size: str | None = None,
) -> dict:
    """Measure every row (``rows``: their keys, default all; a row timed by another brings that one
    in; ``size``: see ``rows_at_size``) group by group (``GROUPS``) and write results.json /
    results.md / table1.png in ``out``. A group's timings are one unit: a killed study re-measures
    only the groups it had not finished."""
    every = {r.key: r for r in rows_at_size(size)}
    unknown = sorted(set(rows or ()) - set(every))
    if unknown:
        raise UserError(f"unknown table1 rows {unknown}: choose from {' '.join(every)}")
    wanted = set(every) if rows is None else set(rows) | {every[k].timed_by for k in rows if every[k].timed_by}
    chosen = [r for r in every.values() if r.key in wanted]
    study = StudyDir(out, "table1", settings)
    cfg = BenchConfig(device=device, threads=threads or os.cpu_count() or 1, classes=400)
    timings: dict[tuple[str, str], dict] = {}  # (group, row key) -> the measured record
    for group in GROUPS:
        members = [r for r in chosen if r.group == group and r.timed_by is None and r.key != REFERENCE]
        if not members and not (group == every[REFERENCE].group and REFERENCE in wanted):
            continue
        timed = [replace(every[REFERENCE], group=group), *members]  # the group's own X-ViT 8x first
        if any(study.load(f"{group}__{r.key}") is None for r in timed):
            print(f"[table1] group {group!r} ({GROUPS[group]}): {len(timed)} models", file=sys.stderr, flush=True)
            measure_rows(timed, cfg, repeats, heavy_repeats, done=lambda k, rec, g=group: study.save(f"{g}__{k}", rec))
        else:
            print(f"[table1] group {group!r} already measured in {study.root}", file=sys.stderr)
        timings.update({(group, r.key): study.load(f"{group}__{r.key}") for r in timed})
    records = [
        {
            **describe_row(r),
            **_timing(timings[(r.group, r.timed_by or r.key)]),
            "reference": _timing(timings[(r.group, REFERENCE)]),
        }
        for r in chosen
    ]
    results = summarise(records, command, settings, cfg)
    write_json(study.root / "results.json", results)
    (study.root / "results.md").write_text(markdown(results))
    plot(study.root / "table1.png", results)
    return results


def _timing(record: dict) -> dict:
    """A measured row's timing and cost, to be shown for every row that shares it."""
    keys = ("times", "faults", "repeats", "settle", "heavy", "gmacs", "params", "seconds", "error", "attn")
    return {k: record[k] for k in keys if k in record}


def measure_rows(rows: list[Row], cfg: BenchConfig, repeats: int, heavy_repeats: int, done: Callable) -> None:
    """Time one view of every row: each built once in its own process, one warm-up pass (the heap
    trimmed before it), then timed passes interleaved across the rows, start rotated each pass.
    ``done(key, record)`` gets each row as soon as its passes are complete."""
    pool = Pool([ModelSpec(r.key, "xvit", r.name, r.options, r.img_size) for r in rows], cfg)
    out: dict[str, dict] = {}
    try:
        for r in rows:
            print(f"[table1] building {r.label} ({r.frames} frames, {r.img_size} px)", file=sys.stderr, flush=True)
            start = time.perf_counter()
            info = pool.call(r.key, "load", r.frames)
            heavy = info.get("gmacs", 0.0) > HEAVY_GMACS
            out[r.key] = {**info, "times": [], "faults": [], "heavy": heavy, "settle": 0 if heavy else 1}
            out[r.key].update(repeats=heavy_repeats if heavy else repeats, seconds=time.perf_counter() - start)
        for p in range(1 + max(heavy_repeats, repeats)):
            for r in rows[p % len(rows) :] + rows[: p % len(rows)]:
                _pass(pool, r, out[r.key], p, done)
    finally:
        pool.close()


def _pass(pool: Pool, r: Row, o: dict, p: int, done: Callable) -> None:
    """Pass ``p`` of row ``r`` (0: the warm-up, the one memory pass)."""
    if o.get("finished"):
        return
    settle = 0 if p == 0 else o["settle"]
    what = "warm-up" if p == 0 else f"repeat {p}/{o['repeats']}"
    print(f"[table1] {r.label}: one view, {what}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    res = pool.call(r.key, "phase", "infer", 1, 1, settle, p == 0) if "error" not in o else {}
    o["seconds"] += time.perf_counter() - start
    if "error" in res:
        o["error"] = res["error"]
    elif p > 0:
        o["times"].append(res["wall"])
        o["faults"].append(round(res["faults"]))
    if "error" in o or len(o["times"]) >= o["repeats"]:
        o["finished"] = True
        done(r.key, {**{k: v for k, v in o.items() if k != "finished"}, "seconds": round(o["seconds"], 1)})


def describe_row(r: Row) -> dict:
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
        "paper_gmacs": round(r.paper_gmacs, 1) if r.paper_gmacs else None,
        "source": r.source,
        "timed_by": r.timed_by,
        "group": r.group,
    }


def verdict(measured: float | None, paper: float | None) -> str:
    """Whether the measured ratio to X-ViT reproduces the paper's (inside ``AGREE``)."""
    if not measured or not paper:
        return ""
    q = measured / paper
    if AGREE[0] <= q <= AGREE[1]:
        return f"agrees ({q:.2f}x the paper's ratio)"
    return f"disagrees: {q:.2f}x the paper's ratio" + (" (faster here)" if q > 1 else " (slower here)")


def _videos_per_s(record: dict, num_views: int) -> float | None:
    times = record.get("times") or []
    return 1.0 / (statistics.median(times) * num_views) if times else None


def summarise(records: list[dict], command: str, settings: dict, cfg: BenchConfig) -> dict:
    rows, groups = [], {}
    for rec in records:
        row = {k: v for k, v in rec.items() if k not in ("times", "faults", "reference")}
        row["times_s"] = [round(t, 6) for t in rec.get("times", [])]
        row["faults_per_view"] = rec.get("faults", [])
        ref = rec["reference"]
        if row["times_s"]:
            row["s_per_view"] = round(statistics.median(row["times_s"]), 4)
            row["videos_per_s"] = round(_videos_per_s(rec, rec["num_views"]), 5)
            row["gmacs_per_video"] = round(rec["gmacs"] * rec["num_views"], 1)
        ref_speed = _videos_per_s(ref, 3)  # X-ViT 8x: 1x3 views
        if ref_speed and row.get("videos_per_s"):
            row["ratio"] = round(row["videos_per_s"] / ref_speed, 4)
            row["gmacs_ratio"] = round(ref["gmacs"] * 3 / (rec["gmacs"] * rec["num_views"]), 4)
        row["paper_ratio"] = round(rec["paper_videos_per_s"] / 12.0, 4) if rec["paper_videos_per_s"] else None
        row["verdict"] = "reference" if row["key"] == REFERENCE else verdict(row.get("ratio"), row.get("paper_ratio"))
        if ref.get("times"):
            groups[row["group"]] = {
                "label": GROUPS[row["group"]],
                "reference_s_per_view": round(statistics.median(ref["times"]), 4),
                "reference_times_s": [round(t, 6) for t in ref["times"]],
            }
        rows.append(row)
    timed = [r for r in records if not r.get("timed_by")]
    return {
        "study": "table1",
        "command": command,
        "settings": settings,
        "machine": machine(),
        "device": cfg.device,
        "threads": cfg.threads,
        "heavy_gmacs": HEAVY_GMACS,
        "seconds": round(sum(r.get("seconds", 0.0) for r in timed), 1),
        "groups": groups,
        "rows": rows,
    }


def _num(x: float | None, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def _line(r: dict) -> str:
    clip = f"{r['frames']}x{r['img_size']}"
    if "error" in r:
        return f"| {r['label']} | {clip} | {r['views']} | | | {r['error']} | | | | | | |"
    times = r["times_s"]
    spread = f"{r.get('s_per_view', 0):.3f} [{min(times):.3f}-{max(times):.3f}] ({len(times)})" if times else "—"
    if r.get("timed_by"):
        spread = f"as {r['timed_by']}"
    gmacs = f"{_num(r.get('gmacs'), '.1f')} / {_num(r['paper_gmacs'], '.1f')}"
    return (
        f"| {r['label']} | {clip} | {r['views']} | {gmacs} | {_num(r.get('gmacs_per_video'), '.0f')} | {spread} | "
        f"{_num(r.get('videos_per_s'), '.3g')} | {_num(r['paper_videos_per_s'], '.2f')} | "
        f"{_num(r.get('ratio'), '.3f')} | {_num(r.get('paper_ratio'), '.3f')} | {_num(r.get('gmacs_ratio'), '.3f')} | "
        f"{r['verdict']} |"
    )


def markdown(results: dict) -> str:
    heavy = [r["label"] for r in results["rows"] if r.get("heavy") and not r.get("timed_by")]
    lines = [
        "# Supplement Table 1: inference speed at each system's published test setting",
        "",
        f"`{results['command']}`",
        "",
        f"- machine: {machine_line(results['machine'])}; device {results['device']}, {results['threads']} threads, "
        "fp32, SDPA attention, batch 1",
        f"- time: {format_duration(results['seconds'])}",
        "- videos/s = 1 / (median seconds per view x views per video); the paper's: 8 V100 GPUs",
        "- GMACs ratio: X-ViT 8x's multiply-adds per video / the row's (the speed ratio that the counts alone predict)",
        f"- verdict: the measured ratio to X-ViT within {AGREE[0]}-{AGREE[1]}x of the paper's ratio 'agrees'",
        "- one warm-up pass (the only one that trims the heap), then one settle iteration before each timed "
        f"view; rows over {results['heavy_gmacs']:.0f} GMACs per view (no settle, fewer passes): "
        f"{', '.join(heavy) or 'none'}",
        "",
        "| system | clip | views | GMACs / view (ours / paper) | GMACs / video | s / view (median [min-max] "
        "(passes)) | videos/s | paper videos/s | ratio to X-ViT 8x | paper ratio | GMACs ratio | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [_line(r) for r in results["rows"]]
    lines += ["", "X-ViT 8x, the reference, measured in each group beside the group's models (seconds per view):"]
    for g, v in results["groups"].items():
        passes = ", ".join(f"{t:.3f}" for t in v["reference_times_s"])
        lines.append(f"- {g} ({v['label']}): {v['reference_s_per_view']:.3f} ({passes})")
    lines += ["", "Settings and sources:"]
    lines += [f"- {r['label']} ({r['views']}): {r['source']}" for r in results["rows"]]
    lines += ["", "![Table 1](table1.png)", ""]
    return "\n".join(lines)


def plot(path: Path, results: dict) -> None:
    """Speed relative to X-ViT 8x, measured beside the paper's and the GMACs' prediction (log scale)."""
    rows = [r for r in results["rows"] if r.get("ratio")]
    if not rows:
        return
    fig = Figure(figsize=(11.0, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x, w = np.arange(len(rows)), 0.27
    ax.bar(x - w, [r["ratio"] for r in rows], w, label="measured (this machine)")
    ax.bar(x, [r.get("paper_ratio") or math.nan for r in rows], w, label="paper (8 V100s)")
    ax.bar(x + w, [r["gmacs_ratio"] for r in rows], w, label="predicted by GMACs", alpha=0.6)
    ax.set_yscale("log")
    ax.set_xticks(x, [f"{r['label']}\n{r['views']}" for r in rows], fontsize=6.5, rotation=30, ha="right")
    ax.set_ylabel("videos/s relative to X-ViT-B/16 8x")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
