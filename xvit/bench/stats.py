"""The numbers of supplement Table 1 from the raw timings: per phase the median over repeats and
the spread ``(max - min) / median``, videos/s, latency and peak memory; between models the time
ratios, of the medians and paired per repeat (which cancels drift common to a repeat)."""

from __future__ import annotations

import logging
import statistics

log = logging.getLogger(__name__)

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


AA_TOLERANCE = 0.02  # the A/A control's goal: the same model measured twice within 1.00 +- 2%


def control_label(label: str) -> str:
    """The A/A control's label: the first model again, as an independent entry (own process)."""
    return f"{label}#2"


def aa_warning(what: str, ratio: float, tol: float = AA_TOLERANCE) -> str | None:
    """The warning line for an A/A control ``what`` at ``ratio``, or None inside 1 +- ``tol``."""
    if abs(ratio - 1) <= tol:
        return None
    return (
        f"A/A control {what}: {ratio:.3f}, outside 1.00 +- {tol:.2f}; differences between models below "
        f"{100 * abs(ratio - 1):.1f}% are not resolved by this run"
    )


def control_warnings(ratios: list[dict], first: str, tol: float = AA_TOLERANCE) -> list[str]:
    """One line per phase whose A/A ratio (wall clock, ratio of medians) is outside 1 +- ``tol``."""
    lines = (
        aa_warning(f"{r['a']} / {first} at T={r['frames']} {key}", p["wall"], tol)
        for r in ratios
        if (r["a"], r["b"]) == (control_label(first), first)
        for key, p in r["phases"].items()
    )
    return [line for line in lines if line]


def trim_warnings(results: list[dict]) -> list[str]:
    """One line per (model, frames) whose process had to give its heap back after a phase because
    RAM ran low (all the models' kept heaps did not fit): its next phases re-fault their memory."""
    out = []
    for r in results:
        hit = [key for key, ph in r["phases"].items() if ph["trimmed"]]
        if hit:
            out.append(
                f"{r['label']} T={r['frames']}: RAM ran low, so its process gave freed memory back after "
                f"{', '.join(hit)}; its later timed phases include page faults "
                "(benchmark fewer models or frame counts per run)"
            )
    return out


def empty_phase(kind: str, batch: int, iters: int) -> dict:
    """The record of one phase of one (model, frames) row, before any repeat."""
    return {
        "kind": kind, "batch": batch, "iters": iters, "wall_s": [], "cpu_s": [], "mem_bytes": [], "faults": [],
        "trimmed": 0, "error": None,
    }  # fmt: skip


def record(ph: dict, out: dict, timed: bool, label: str) -> None:
    """Add a worker's answer to a phase: its times if ``timed``, its peak memory if it was the
    memory pass, or its error."""
    if "error" in out:
        ph["error"] = out["error"]
        log.warning("%s %s b%d failed: %s", label, ph["kind"], ph["batch"], out["error"])
        return
    if out.get("mem") is not None:  # the memory pass (the first), timed or not
        ph["mem_bytes"].append(out["mem"])
    if timed:
        ph["wall_s"].append(out["wall"])
        ph["cpu_s"].append(out["cpu"])
        ph["faults"].append(out["faults"])
    ph["trimmed"] += out["trimmed"]  # passes after which the heap was given back


def summarise(row: dict) -> dict:
    """Medians, spread, videos/s, latency and peak memory of every phase of one row."""
    for ph in row["phases"].values():
        walls = ph["wall_s"]
        ok = bool(walls) and not ph["error"]
        med = statistics.median(walls) if ok else None
        mems = [m for m in ph["mem_bytes"] if m is not None]
        faults = ph["faults"]
        ph.update(
            median_s=med,
            min_s=min(walls) if ok else None,
            max_s=max(walls) if ok else None,
            spread=(max(walls) - min(walls)) / med if ok else None,
            cpu_median_s=statistics.median(ph["cpu_s"]) if ok else None,
            videos_per_s=ph["batch"] / med if ok else None,
            latency_ms=med * 1e3 if ok else None,
            peak_mem_mb=max(mems) / 2**20 if ok and mems else None,
            faults_median=statistics.median(faults) if ok and faults else None,  # per timed iteration
        )
    return row


def compute_ratios(results: list[dict], pairs: list[tuple[str, str]] = RATIO_PAIRS) -> list[dict]:
    """time(a) / time(b) per phase and frame count: of the medians, and paired per repeat."""
    by_key = {(r["label"], r["frames"]): r for r in results}
    out = []
    for a, b in pairs:
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
