"""``xvit bench-train [--config NAME|PATH] [key=value ...]``: training clips/s of a config, model
alone (batch in memory) vs data loader alone vs the real loop (``xvit.bench.train``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from xvit.bench.train import bench_training
from xvit.engine.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", default=None, help="YAML path or shipped config name (default: synthetic)")
    parser.add_argument("--steps", type=int, default=40, help="timed optimizer steps per measurement (default 40)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3; 0: no speed figures)")
    parser.add_argument(
        "--snapshots",
        type=int,
        default=0,
        metavar="N",
        help="also time N snapshots of the run's state (what a stop signal or train.ckpt_every_minutes writes) "
        "and the step-boundary check of xvit train",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, as for xvit train")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, list(args.overrides) + ["train.progress=false", "train.tensorboard=false"])
    out = bench_training(cfg, steps=args.steps, warmup=args.warmup, repeats=args.repeats, snapshots=args.snapshots)
    s = out["settings"]
    print(
        f"# {s['model']} {s['options'] or ''} batch {s['batch_size']}, {s['num_frames']} frames at "
        f"{s['crop_size']} px, {s['torch_threads']} torch threads, {s['num_workers']} data workers, "
        f"cache {s['cache']}, {s['device']}, amp {s['amp']}; {s['steps']} timed steps after {s['warmup']}, "
        f"{s['repeats']} interleaved repeats"
    )
    if out["clips_per_s"]:
        print("| measurement | clips/s (median) | repeats |\n| --- | ---: | --- |")
        for kind, rates in out["clips_per_s"].items():
            print(f"| {kind} | {out['median'][kind]:.1f} | {', '.join(f'{r:.1f}' for r in rates)} |")
        print(f"\ntrain / compute = {out['train_over_compute']:.3f} (1.0: the data pipeline costs nothing)")
    if out["snapshot"]:
        snap = out["snapshot"]
        print(
            f"\nstep-boundary check (stop signal, snapshot clock): {snap['check_us']:.2f} us per step; "
            f"snapshot ({snap['snapshot_mb']:.1f} MiB): {snap['snapshot_median_s']:.3f} s median of "
            f"{', '.join(f'{x:.3f}' for x in snap['snapshot_s'])}"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0
