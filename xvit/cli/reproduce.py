"""``xvit reproduce table1|table2|fig1``: the supplementary material's studies, each one command.

Without ``--config`` a study runs on the built-in synthetic benchmark at a 2-core CPU budget;
with one (e.g. ``--config ssv2_xvit_b16_8x``) its training runs use that recipe and data. Each
writes ``results.json``, ``results.md`` and a PNG in ``--out`` and, rerun with the same settings,
continues from its finished runs. docs/reproduction.md has the shipped results.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from xvit.engine.config import Config, load_config
from xvit.errors import UserError
from xvit.studies import fig1, gap, mainjob, table1, table2

STUDIES = {
    "table1": "inference videos/s at each model's published test setting, and the ratios to X-ViT",
    "table2": "TSM-ViT vs X-ViT, temporal pooling vs temporal attention, mean ± std over seeds",
    "fig1": "top-1 against 1..5 temporal clips x 3 crops for a trained X-ViT, with time per video",
    "main": "the main job (xvit train) over seeds: mean ± std per model and pair, the targets checked per seed",
    "gap": "why X-ViT trails TSM-ViT from scratch: ablations of X-ViT's parts and learning curves, over seeds",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", choices=list(STUDIES), help="; ".join(f"{k}: {v}" for k, v in STUDIES.items()))
    p.add_argument(
        "--config",
        "-c",
        default=None,
        help="table2/fig1: recipe and data of the training runs (shipped name or YAML path); "
        "default: the built-in benchmark at the study's CPU budget",
    )
    p.add_argument("--seeds", type=int, default=3, help="table2/fig1/main/gap: seeds 0..N-1 per model (default 3)")
    p.add_argument("--out", type=Path, default=None, help="study directory (default runs/reproduce/STUDY)")
    p.add_argument(
        "--checkpoint",
        nargs="+",
        default=None,
        metavar="CKPT",
        help="fig1: evaluate these trained checkpoints (one per seed) instead of training",
    )
    _table2_arguments(p.add_argument_group("table2"))
    _gap_arguments(p.add_argument_group("gap"))
    p.add_argument("--max-clips", type=int, default=5, help="fig1: temporal clips 1..N (default 5)")
    rows = " ".join(r.key for r in table1.ROWS)
    p.add_argument("--rows", nargs="+", default=None, metavar="ROW", help=f"table1: rows to measure ({rows})")
    p.add_argument("--repeats", type=int, default=5, help="table1: timed passes per row (default 5)")
    p.add_argument(
        "--heavy-repeats",
        type=int,
        default=3,
        help=f"table1: timed passes of rows over {table1.HEAVY_GMACS:.0f} GMACs per view (default 3)",
    )
    p.add_argument("--threads", type=int, default=None, help="table1: CPU threads (default: one per core)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="table1: device (default cpu)")
    p.add_argument(
        "--size",
        default=None,
        help="table1: every transformer at this ViT size, every CNN at its nano size, instead of the published ones",
    )
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="table2/fig1/main/gap: config overrides, e.g. train.epochs=10"
    )


def _table2_arguments(p: argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--regimes",
        nargs="+",
        choices=list(table2.REGIMES),
        default=None,
        help="table2: from scratch and/or fine-tuned from an image ViT (default: both)",
    )
    p.add_argument(
        "--lrs",
        nargs="+",
        type=float,
        default=None,
        metavar="LR",
        help="table2: learning rates swept per model with seed 0, in every regime (default: "
        + " ".join(f"{x:g}" for x in table2.DEFAULT_LRS)
        + ")",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        choices=[v.key for v in table2.VARIANTS],
        default=None,
        help="table2: models to run (default: all five)",
    )
    p.add_argument(
        "--pretrained",
        default=None,
        metavar="CKPT",
        help="table2: the image ViT of the pretrained regime (default: model.pretrained of the config, else the "
        f"shipped {table2.SHIPPED_IMAGE_VIT} for the built-in benchmark at micro size); gap: run the ablations "
        "fine-tuned from this image ViT (default: from scratch)",
    )


def _gap_arguments(p: argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--ablations",
        nargs="*",
        choices=[a.key for a in gap.ABLATIONS],
        default=None,
        help="gap: ablations to run (default: all; none with an empty list)",
    )
    p.add_argument("--lr", type=float, default=None, help="gap: the ablations' learning rate (default: optim.lr)")
    p.add_argument(
        "--curves",
        nargs="*",
        choices=[c.key for c in gap.CURVES],
        default=None,
        help="gap: models trained over the longer budget with a val pass every --curve-every epochs (default: all)",
    )
    p.add_argument("--curve-epochs", type=int, default=24, help="gap: epochs of a curve (default 24)")
    p.add_argument("--curve-every", type=int, default=2, help="gap: epochs between a curve's val passes (default 2)")
    p.add_argument("--curve-seeds", type=int, default=None, help="gap: seeds per curve (default: --seeds)")
    p.add_argument(
        "--curve-lr",
        nargs="*",
        default=[],
        metavar="KEY=LR",
        help="gap: a curve's own learning rate, e.g. xvit=3e-4 tsm=1e-3 (default: --lr)",
    )


def _command(args: argparse.Namespace) -> str:
    argv = (
        sys.argv[sys.argv.index("reproduce") :]
        if "reproduce" in sys.argv
        else ["reproduce", args.study, *args.overrides]
    )
    return "xvit " + shlex.join(argv)


def _describe_data(cfg: Config) -> str:
    d = cfg.data
    if d.format == "synthetic":
        s = d.synthetic
        return (
            f"built-in synthetic benchmark ({s.get('videos_per_class')} videos per class, "
            f"{s.get('num_frames')} frames, {s.get('size')} px), {d.num_frames} frames per clip, {d.sampling} sampling"
        )
    return f"{d.format} ({d.root or ''} {d.train_annotations or ''}), {d.num_frames} frames, {d.sampling} sampling"


def _train_settings(args: argparse.Namespace, defaults: list[str]) -> tuple[Config, dict]:
    # without --config: the built-in benchmark (synthetic.yaml) with the study's CPU budget first
    overrides = ([] if args.config else defaults) + list(args.overrides)
    cfg = load_config(args.config, overrides)
    recipe = (args.config or "synthetic") + (" + " + " ".join(overrides) if overrides else "")
    return cfg, {"recipe": recipe, "data": _describe_data(cfg), "config": cfg.to_dict()}


def _curve_lrs(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in {c.key for c in gap.CURVES} or not value:
            raise UserError(f"--curve-lr {item!r}: give KEY=LR with KEY one of {[c.key for c in gap.CURVES]}")
        try:
            out[key] = float(value)
        except ValueError:
            raise UserError(f"--curve-lr {item!r}: {value!r} is not a number") from None
    return out


def run(args: argparse.Namespace) -> int:
    if args.overrides and args.study == "table1":
        raise UserError(f"table1 takes no config overrides (got {' '.join(args.overrides)}); see --help for its flags")
    out = args.out or Path("runs") / "reproduce" / args.study
    command = _command(args)
    if args.study == "table1":
        settings = {"size": args.size, "device": args.device, "threads": args.threads}
        res = table1.run_table1(
            out,
            command,
            settings,
            rows=args.rows,
            repeats=args.repeats,
            heavy_repeats=args.heavy_repeats,
            threads=args.threads,
            device=args.device,
            size=args.size,
        )
    elif args.study == "table2":
        cfg, settings = _train_settings(args, table2.DEFAULTS)
        regimes = args.regimes or list(table2.REGIMES)
        pretrained = table2.pretrained_for(cfg, args.pretrained) if "pretrained" in regimes else None
        plan = table2.make_plan(regimes, args.lrs, args.seeds, args.variants, pretrained)
        res = table2.run_table2(cfg, plan, out, command, settings)
    elif args.study == "main":
        cfg, settings = _train_settings(args, [])
        res = mainjob.run_mainjob(cfg, args.seeds, out, command, settings)
    elif args.study == "gap":
        cfg, settings = _train_settings(args, gap.DEFAULTS)
        plan = gap.make_plan(
            args.ablations,
            args.seeds,
            args.lr or cfg.optim.lr,
            args.curves,
            args.curve_epochs,
            args.curve_every,
            _curve_lrs(args.curve_lr),
            args.pretrained,
            args.curve_seeds,
        )
        res = gap.run_gap(cfg, plan, out, command, settings)
    else:
        cfg, settings = _train_settings(args, fig1.DEFAULTS)
        settings.update(fig1.checkpoint_settings(args.checkpoint), max_clips=args.max_clips)
        res = fig1.run_fig1(
            cfg, args.seeds, out, command, settings, checkpoints=args.checkpoint, max_clips=args.max_clips
        )
    print("\n" + (out / "results.md").read_text())
    print(f"{args.study}: {out / 'results.json'}, {out / 'results.md'} ({res['seconds']:.0f} s of work)")
    return 0
