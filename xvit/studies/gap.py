"""Why X-ViT trails TSM-ViT from scratch (``xvit reproduce gap``): learning curves over a longer
budget, and ablations of X-ViT's parts (paper §4.1: what is mixed, the mixed fraction ρ, which
blocks mix; the temporal embedding, §3.1), each over seeds, in one regime.

Two kinds of unit, both ``xvit train`` runs on the study's recipe:

- a *curve*: a model trained for ``curve_epochs`` with a validation pass every ``curve_every``
  epochs; its ``metrics.jsonl`` gives val top-1 / pair order and train accuracy per epoch;
- an *ablation*: X-ViT (or TSM-ViT) with one change, at the Table 2 budget and one learning rate.

The result says, per ablation, the mean ± std over seeds and the difference to the study's
reference (X-ViT with the paper's defaults), and for the curves when (if ever) X-ViT's mean
reaches TSM-ViT's.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from xvit.engine.config import Config
from xvit.models.sizes import family_of
from xvit.studies.attention import checkpoint_attention
from xvit.studies.common import (
    PROXY_RECIPE,
    StudyDir,
    Unit,
    compare,
    machine,
    mean_std,
    run_units,
    train_run,
    write_json,
)
from xvit.studies.gap_report import markdown, plot

# as Table 2, with X-ViT's best from-scratch rate there as the ablations' default (--lr)
DEFAULTS = [*PROXY_RECIPE, "train.epochs=6", "optim.lr=3e-4"]


@dataclass(frozen=True)
class Ablation:
    key: str
    label: str
    family: str  # xvit | tsm_vit | vit
    options: dict  # create_model options on top of the family's defaults


ABLATIONS = (
    Ablation("xvit", "X-ViT (paper defaults: KV, rho 50%, all blocks, temporal embedding, TA head)", "xvit", {}),
    Ablation("no_temb", "X-ViT without the temporal embedding", "xvit", {"temporal_embed": False}),
    Ablation("mix_k", "X-ViT, K mixed only", "xvit", {"mix": "k"}),
    Ablation("mix_v", "X-ViT, V mixed only", "xvit", {"mix": "v"}),
    Ablation("no_mix", "X-ViT without mixing (temporal embedding + TA head only)", "xvit", {"mix": None}),
    Ablation("rho25", "X-ViT, rho 25% (shift_div 8)", "xvit", {"shift_div": 8}),
    Ablation("rho100", "X-ViT, rho 100% (shift_div 2)", "xvit", {"shift_div": 2}),
    Ablation("first_half", "X-ViT, mixing in the first half of the blocks", "xvit", {"mix_blocks": "first_half"}),
    Ablation("second_half", "X-ViT, mixing in the second half of the blocks", "xvit", {"mix_blocks": "second_half"}),
    Ablation("tsm", "TSM-ViT + pool", "tsm_vit", {}),
    Ablation("tsm_temb", "TSM-ViT + pool with X-ViT's temporal embedding", "tsm_vit", {"temporal_embed": True}),
)
CURVES = (
    Ablation("xvit", "X-ViT", "xvit", {}),
    Ablation("tsm", "TSM-ViT + pool", "tsm_vit", {}),
    Ablation("vit", "frame ViT", "vit", {}),
)


@dataclass(frozen=True)
class GapPlan:
    ablations: tuple[Ablation, ...]
    seeds: int
    lr: float  # the ablations' learning rate
    curves: tuple[Ablation, ...]
    curve_epochs: int
    curve_every: int
    curve_lrs: dict[str, float]  # per curve key: its rate (default: ``lr``)
    pretrained: str | None  # None: from scratch
    curve_seeds: int  # seeds per curve (a curve costs many ablation runs)

    def settings(self) -> dict:
        return {
            "ablations": [a.key for a in self.ablations],
            "lr": self.lr,
            "curves": [c.key for c in self.curves],
            "curve_epochs": self.curve_epochs,
            "curve_every": self.curve_every,
            "curve_lrs": self.curve_lrs,
            "curve_seeds": self.curve_seeds,
            "pretrained": self.pretrained,
        }


def make_plan(
    ablations: list[str] | None,
    seeds: int,
    lr: float,
    curves: list[str] | None,
    curve_epochs: int,
    curve_every: int,
    curve_lrs: dict[str, float] | None = None,
    pretrained: str | None = None,
    curve_seeds: int | None = None,
) -> GapPlan:
    pick = {a.key: a for a in ABLATIONS}
    chosen = tuple(pick[k] for k in ablations) if ablations is not None else ABLATIONS
    by_curve = {c.key: c for c in CURVES}
    lines = tuple(by_curve[k] for k in curves) if curves is not None else CURVES
    rates = {c.key: float((curve_lrs or {}).get(c.key, lr)) for c in lines}
    curve_seeds = seeds if curve_seeds is None else curve_seeds
    return GapPlan(chosen, seeds, lr, lines, curve_epochs, curve_every, rates, pretrained, curve_seeds)


def _name(cfg: Config, family: str) -> str:
    return family + cfg.model.name[len(family_of(cfg.model.name)) :]


def _unit(cfg: Config, study: StudyDir, key: str, a: Ablation, seed: int, lr: float, pretrained: str | None, **train):
    """One training run of ablation ``a`` (``train``: TrainConfig/EvalConfig overrides for a curve)."""
    model = dataclasses.replace(cfg.model, pretrained=pretrained)
    run_cfg = dataclasses.replace(cfg, model=model, optim=dataclasses.replace(cfg.optim, lr=lr))
    if train:
        run_cfg = dataclasses.replace(
            run_cfg,
            train=dataclasses.replace(cfg.train, epochs=train["epochs"]),
            eval=dataclasses.replace(cfg.eval, every=train["every"]),
        )
    run_dir, name = study.run_dir(key), _name(cfg, a.family)

    def run() -> dict:
        r = train_run(run_cfg, run_dir, name=name, options=a.options, seed=seed)
        out = {
            "key": a.key,
            "seed": seed,
            "lr": lr,
            "model": name,
            "options": a.options,
            "describe": r.get("describe"),
            **{k: r.get(k) for k in ("top1", "pair_order_acc", "train_acc", "train_time_s")},
            "pairs": r.get("pairs"),
        }
        if train:
            out["curve"] = read_curve(run_dir / "metrics.jsonl")
        elif a.family == "xvit" and a.options.get("mix", "kv") is not None:
            out["attention"] = checkpoint_attention(run_dir / "checkpoints" / "last.safetensors")
        return out

    kind = "curve" if train else "train"
    return Unit(key, f"{kind} {a.label}, seed {seed}", run, kind=kind)


def read_curve(path: Path) -> list[dict]:
    """Per epoch with a val pass: epoch, val top-1, pair order, and that epoch's train accuracy."""
    train, val = {}, []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec["kind"] == "train_epoch":
            train[rec["epoch"]] = rec["acc"]
        elif rec["kind"] == "val":
            val.append(rec)
    return [
        {
            "epoch": v["epoch"],
            "top1": v.get("top1"),
            "pair_order_acc": v.get("pair_order_acc"),
            "train_acc": train.get(v["epoch"]),
        }
        for v in val
    ]


def run_gap(cfg: Config, plan: GapPlan, out: Path, command: str, settings: dict) -> dict:
    """Curves first (the longest units, so processes sharing ``out`` start them together), then the
    ablations seed-major; results.json / results.md / gap.png in ``out``."""
    study = StudyDir(out, "gap", {**settings, **plan.settings()})
    units = [
        _unit(
            cfg,
            study,
            f"curve_{c.key}_s{seed}",
            c,
            seed,
            plan.curve_lrs[c.key],
            plan.pretrained,
            epochs=plan.curve_epochs,
            every=plan.curve_every,
        )  # fmt: skip
        for seed in range(plan.curve_seeds)
        for c in plan.curves
    ]
    units += [
        _unit(cfg, study, f"{a.key}_s{seed}", a, seed, plan.lr, plan.pretrained)
        for seed in range(plan.seeds)
        for a in plan.ablations
    ]
    records = run_units("gap", study, units)
    results = summarise(records, plan, command, {**settings, **plan.settings()}, cfg)
    write_json(study.root / "results.json", results)
    (study.root / "results.md").write_text(markdown(results))
    plot(study.root / "gap.png", results)
    return results


def summarise(records: list[dict], plan: GapPlan, command: str, settings: dict, cfg: Config) -> dict:
    abl = [r for r in records if "curve" not in r]
    curves = [r for r in records if "curve" in r]
    metrics = ("top1", "pair_order_acc", "train_acc")
    rows = []
    for a in plan.ablations:
        runs = [r for r in abl if r["key"] == a.key]
        rows.append({"key": a.key, "label": a.label, "model": runs[0]["model"] if runs else None,
                     **{m: mean_std([r[m] for r in runs]) for m in metrics}})  # fmt: skip
    for row in rows:
        att = [r["attention"] for r in abl if r["key"] == row["key"] and r.get("attention")]
        row["attention"] = _mean_attention(att) if att else None
    ref = next((r for r in rows if r["key"] == "xvit"), None)
    for r in rows:
        r["vs_xvit"] = {m: compare(r[m], ref[m]) for m in metrics} if ref and r is not ref else None
    lines = []
    for c in plan.curves:
        runs = [r for r in curves if r["key"] == c.key]
        epochs = [p["epoch"] for p in runs[0]["curve"]] if runs else []
        points = [
            {
                "epoch": e,
                **{m: mean_std([next(p[m] for p in r["curve"] if p["epoch"] == e) for r in runs]) for m in metrics},
            }
            for e in epochs
        ]
        lines.append({"key": c.key, "label": c.label, "lr": plan.curve_lrs[c.key], "points": points})
    return {
        "study": "gap",
        "command": command,
        "settings": settings,
        "seeds": plan.seeds,
        "curve_seeds": plan.curve_seeds,
        "machine": machine(),
        "regime": "pretrained" if plan.pretrained else "scratch",
        "seconds": round(sum(r.get("seconds", 0.0) for r in records), 1),
        "ablations": rows,
        "xvit_seeds": [
            {k: r.get(k) for k in ("seed", "top1", "pair_order_acc", "train_acc", "pairs", "attention")}
            for r in abl
            if r["key"] == "xvit"
        ],
        "curves": lines,
        "catch_up": catch_up(lines),
        "runs": records,
    }


def _mean_attention(stats: list[dict]) -> dict:
    """Per key source, the mean of each attention statistic over seeds."""
    return {src: {k: round(sum(s[src][k] for s in stats) / len(stats), 4) for k in stats[0][src]} for src in stats[0]}


def catch_up(lines: list[dict]) -> dict | None:
    """The first epoch at which X-ViT's mean val top-1 reaches TSM-ViT's (None: never in the budget)."""
    by = {ln["key"]: ln for ln in lines}
    if "xvit" not in by or "tsm" not in by:
        return None
    tsm = {p["epoch"]: p["top1"]["mean"] for p in by["tsm"]["points"]}
    for p in by["xvit"]["points"]:
        if p["top1"]["mean"] is not None and tsm.get(p["epoch"]) is not None and p["top1"]["mean"] >= tsm[p["epoch"]]:
            return {"epoch": p["epoch"], "xvit": p["top1"]["mean"], "tsm": tsm[p["epoch"]]}
    return {"epoch": None}
