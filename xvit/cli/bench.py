"""``xvit bench``: inference and training speed, peak memory, parameters and GFLOPs of several
models side by side (supplement Table 1); how they are measured is ``xvit.bench``'s docstring.

Peers (``--peers``, needs ``pip install 'xvit[bench]'``): HF transformers' TimeSformer (divided)
and ViViT (model 1) built from a config at the same size, randomly initialised.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from xvit.bench.peers import peers_available
from xvit.bench.report import environment, format_ratios, format_table, plot, settings_lines
from xvit.bench.runner import measure
from xvit.bench.spec import (
    ALIASES,
    DEFAULT_MODELS,
    DTYPE_NAMES,
    PEER_INSTALL,
    PEERS,
    BenchConfig,
    ModelSpec,
    Schedule,
)
from xvit.bench.stats import RATIO_PAIRS, compute_ratios, control_label, control_warnings, trim_warnings
from xvit.engine.runtime import resolve_device
from xvit.errors import UserError
from xvit.models import list_models
from xvit.models.sizes import SIZES, VARIANTS

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    _model_arguments(p)
    _runtime_arguments(p)
    _timing_arguments(p)
    p.add_argument("--no-train", action="store_true", help="skip the training step")
    p.add_argument("--no-infer", action="store_true", help="skip inference")
    p.add_argument(
        "--peers", action="store_true", help=f"add HF transformers' TimeSformer and ViViT (needs {PEER_INSTALL})"
    )
    p.add_argument(
        "--vivit-tubelet",
        type=int,
        default=1,
        help="HF ViViT temporal tubelet: 1 (default: same tokens and FLOPs as `joint`) or 2 (ViViT's 16x2)",
    )
    p.add_argument(
        "--aa-control",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the first model twice, as two independent entries (A/A control, printed as a ratio; "
        "a warning when outside 1.00 +- 0.02) (default on)",
    )
    p.add_argument(
        "--mixing",
        action="store_true",
        help="instead: X-ViT's mixing cost over the frame ViT in one process (saved-for-backward memory at "
        "tiny size, batch 2; the mixing step per block; inference/training step ratios) at --size, the first "
        "--frames and --batch-sizes, --threads (default 1 here), --repeats, --warmup",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write every measurement as JSON")
    p.add_argument(
        "--plot", type=Path, default=None, metavar="PATH", help="videos/s against GFLOPs (log axes), PNG/PDF/SVG"
    )


def _model_arguments(p: argparse.ArgumentParser) -> None:
    """What is measured: models, sizes, frames, batches."""
    aliases, defaults = " ".join([*ALIASES, *PEERS]), " ".join(DEFAULT_MODELS)
    p.add_argument(
        "--models",
        nargs="+",
        default=DEFAULT_MODELS,
        metavar="M",
        help=f"aliases ({aliases}) or model names (default: {defaults})",
    )
    p.add_argument(
        "--size",
        default="base",
        help="ViT size of the aliases and peers (default base; nano, micro, tiny, small, large)",
    )
    p.add_argument("--patch", type=int, default=16, help="patch size of the aliases and peers (default 16)")
    p.add_argument("--img-size", type=int, default=None, help="input resolution (default: the model's, 224)")
    p.add_argument("--frames", type=int, nargs="+", default=[8, 16], help="frame counts (default 8 16)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4], help="inference batch sizes (default 1 4)")
    p.add_argument(
        "--train-batch-size", type=int, default=None, help="training-step batch (default: the largest inference batch)"
    )
    p.add_argument("--classes", type=int, default=400, help="classifier size (default 400, Kinetics)")


def _runtime_arguments(p: argparse.ArgumentParser) -> None:
    """How the models run: device, dtype, compile, attention path, threads."""
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    p.add_argument(
        "--dtype", choices=list(DTYPE_NAMES), default="fp32", help="fp32, or bf16/fp16 autocast (default fp32)"
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="torch.compile every model (default off)",
    )
    p.add_argument(
        "--sdpa",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fused scaled_dot_product_attention (default on); --no-sdpa: eager",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads per model (default on CPU: 1, the setting that resolves 2%%; "
        "on CUDA: torch's, one per core)",
    )


def _timing_arguments(p: argparse.ArgumentParser) -> None:
    """How they are timed: repeats, warm-up, iterations, the heap."""
    p.add_argument("--repeats", type=int, default=3, help="timed passes over every model (default 3)")
    p.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed passes over every model first; the first pass measures peak memory (default 1; with 0 "
        "the first timed repeat does, and its times include re-faulting the freed heap)",
    )
    p.add_argument("--iters", type=int, default=1, help="iterations timed per repeat (default 1)")
    p.add_argument(
        "--settle",
        type=int,
        default=1,
        help="untimed iterations right before the timed ones of each phase (default 1)",
    )
    p.add_argument(
        "--keep-heap",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="CPU: each model's process keeps freed memory resident (glibc: no mmap for large blocks, no "
        "automatic trim), so repeated steps do not page-fault it back in (default on)",
    )


def resolve_models(args: argparse.Namespace) -> list[ModelSpec]:
    """Aliases -> registry names at ``--size``/``--patch``; peers dropped with a message if HF
    transformers is missing."""
    wanted = list(dict.fromkeys(args.models + (list(PEERS) if args.peers else [])))
    if any(m in PEERS for m in wanted) and not peers_available():
        print(
            f"xvit bench: the peers (HF TimeSformer, ViViT) need transformers: {PEER_INSTALL}; running without them",
            file=sys.stderr,
        )
        wanted = [m for m in wanted if m not in PEERS]
    specs = []
    for m in wanted:
        if m in PEERS:
            specs.append(ModelSpec(m, "hf", m))
        elif m in ALIASES:
            family, options = ALIASES[m]
            names = list_models(f"{family}_{args.size}_patch{args.patch}_*")
            if len(names) != 1:
                raise UserError(
                    f"no {family} model of size {args.size!r} with patch {args.patch}; see `xvit models` for the sizes"
                )
            specs.append(ModelSpec(m, "xvit", names[0], dict(options)))
        elif m in list_models():
            specs.append(ModelSpec(m, "xvit", m))
        else:
            raise UserError(
                f"unknown model {m!r} in --models: use an alias ({', '.join([*ALIASES, *PEERS])}) "
                "or a name from `xvit models`"
            )
    if not specs:
        raise UserError("no model left to benchmark; give --models")
    return specs


def make_config(args: argparse.Namespace) -> tuple[BenchConfig, Schedule]:
    """Validate the options and fill the defaults that depend on the machine."""
    if args.no_train and args.no_infer:
        raise UserError("--no-train and --no-infer leave nothing to measure")
    for opt in ("frames", "batch_sizes"):
        if min(getattr(args, opt)) < 1:
            raise UserError(f"--{opt.replace('_', '-')} must be >= 1, got {getattr(args, opt)}")
    for opt in ("classes", "threads", "train_batch_size", "vivit_tubelet"):
        if getattr(args, opt) is not None and getattr(args, opt) < 1:
            raise UserError(f"--{opt.replace('_', '-')} must be >= 1, got {getattr(args, opt)}")
    warmup = args.warmup
    if min(args.repeats, args.iters) < 1 or min(warmup, args.settle) < 0:
        raise UserError(
            "--repeats and --iters must be >= 1, --warmup and --settle >= 0, got "
            f"{args.repeats}, {args.iters}, {warmup}, {args.settle}"
        )
    if args.size not in SIZES:
        raise UserError(f"unknown --size {args.size!r}; choose from {', '.join(SIZES)}")
    device = resolve_device(args.device).type
    args.train_batch_size = args.train_batch_size or max(args.batch_sizes)
    img = args.img_size or next((i for s, p, i in VARIANTS if s == args.size and p == args.patch), 224)
    if args.compile and warmup == 0 and args.settle == 0:
        log.warning("--compile with --warmup 0 and --settle 0: the first repeat includes compilation")
    threads = args.threads or (torch.get_num_threads() if device == "cuda" else 1)
    cfg = BenchConfig(
        device,
        args.dtype,
        args.compile,
        args.sdpa,
        threads,
        img,
        args.size,
        args.patch,
        args.classes,
        args.vivit_tubelet,
        args.seed,
        args.keep_heap,
    )
    schedule = Schedule(
        args.frames,
        args.batch_sizes,
        args.train_batch_size,
        args.repeats,
        warmup,
        args.iters,
        args.settle,
        infer=not args.no_infer,
        train=not args.no_train,
    )
    return cfg, schedule


def run_mixing_mode(args: argparse.Namespace) -> int:
    """``--mixing``: the figures of ``xvit.bench.mixing``, printed with their settings."""
    from xvit.bench.mixing import MixingConfig, format_mixing, run_mixing

    if args.size not in ("tiny", "small", "base", "large") or min(args.repeats, args.frames[0]) < 1:
        raise UserError(f"--mixing needs --size tiny/small/base/large and --repeats >= 1, got {args.size!r}")
    cfg = MixingConfig(
        size=args.size,
        patch=args.patch,
        frames=args.frames[0],
        batch=args.batch_sizes[0],
        threads=args.threads or 1,
        classes=args.classes,
        sdpa=args.sdpa,
        repeats=args.repeats,
        warmup=args.warmup,
        seed=args.seed,
    )
    env = environment(make_config(args)[0])
    doc = {"environment": env, **run_mixing(cfg)}
    print(
        f"# xvit bench --mixing: {env['cpu']} (ISA: {' '.join(env['cpu_isa']) or 'unknown'}), "
        f"{cfg.threads} thread(s), fp32, torch {env['torch']}, "
        f"sdpa {'on' if cfg.sdpa else 'off'}, {env['date_utc']} UTC"
    )
    print(format_mixing(doc))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1))
        print(f"\nwrote {args.json}")
    return 0


def print_control(ratios: list[dict], first: str) -> None:
    """The A/A control's ratios, and a warning for each outside 1.00 +- 0.02."""
    for r in ratios:
        if r["a"] == control_label(first):
            shown = ", ".join(f"{k} {p['wall']:.3f}" for k, p in r["phases"].items())
            print(f"\nA/A control ({first} measured twice, as {first} and {r['a']}), T={r['frames']}: {shown}")
    for line in control_warnings(ratios, first):
        print(f"WARNING: {line}")
        log.warning(line)


def run(args: argparse.Namespace) -> int:
    if args.mixing:
        return run_mixing_mode(args)
    cfg, schedule = make_config(args)
    specs = resolve_models(args)
    pairs = RATIO_PAIRS
    if args.aa_control:  # last in the list, so the two entries of the first model sit far apart in a pass
        first = specs[0]
        specs.append(ModelSpec(control_label(first.label), first.family, first.name, dict(first.options)))
        pairs = [(specs[-1].label, first.label), *RATIO_PAIRS]
    env = environment(cfg)
    keys = schedule.keys()
    log.info("benchmarking %s at %s frames on %s", ", ".join(s.label for s in specs), schedule.frames, cfg.device)
    results = measure(specs, cfg, schedule)
    ratios = compute_ratios(results, pairs)
    print("\n".join("# " + line for line in settings_lines(cfg, env, schedule)))
    print()
    print(format_table(results, keys))
    if ratios:
        print(
            "\nwall-clock time ratios A / B (> 1: A is slower): "
            "ratio of medians [per-repeat ratios min-max] ratio of minima:\n"
        )
        print(format_ratios(ratios, keys, "wall"))
        if cfg.device == "cpu":
            print("\nCPU-time ratios (the process's CPU time, less sensitive to other load on the machine):\n")
            print(format_ratios(ratios, keys, "cpu"))
    if args.aa_control:
        print_control(ratios, specs[0].label)
    for line in trim_warnings(results):
        print(f"WARNING: {line}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {"settings": {**asdict(cfg), **schedule.settings()}}
        doc.update(environment=env, models=[asdict(s) for s in specs], results=results, ratios=ratios)
        args.json.write_text(json.dumps(doc, indent=1))
        print(f"\nwrote {args.json}")
    if args.plot:
        where = env["gpu"] if cfg.device == "cuda" else f"{env['cpu']}, {cfg.threads} thread{'s' * (cfg.threads != 1)}"
        plot(results, args.plot, keys, f"xvit bench: {where}, {cfg.dtype}, {cfg.img_size} px, torch {env['torch']}")
        print(f"wrote {args.plot}")
    measured = any(ph["median_s"] is not None for r in results for ph in r["phases"].values())
    return 0 if measured else 1  # errors of some models are reported in the table
