"""The ``xvit`` command: one subcommand per module of ``xvit.cli``, imported only when it runs.

Each command module defines ``add_arguments(parser)`` and ``run(args) -> int``: it parses, calls
the library (``xvit.engine``, ``xvit.data``, ``xvit.models``, ``xvit.bench``) and prints. This
file only wires them and imports neither torch nor timm, so ``xvit --help`` and ``xvit models``
answer at once and a broken optional import cannot break other commands.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from xvit.engine.timing import mark_command_start
from xvit.errors import EXIT_STOPPED, Stopped, UserError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("xvit.cli.models", "list the registered model names"),
    "info": ("xvit.cli.info", "parameters, GFLOPs (multiply-adds) and a forward pass of a model"),
    "train": ("xvit.cli.train", "train a model from a YAML config with key=value overrides"),
    "eval": ("xvit.cli.eval", "multi-view evaluation of a checkpoint (top-1/top-5, per-class)"),
    "predict": ("xvit.cli.predict", "class predictions for video files, or a timeline over a long video"),
    "export": ("xvit.cli.export", "export a checkpoint to ONNX or torch.export (pt2), checked against PyTorch"),
    "bench": ("xvit.cli.bench", "inference / training speed, memory and FLOPs of several models"),
    "make-synthetic": ("xvit.cli.make_synthetic", "write the built-in synthetic temporal benchmark"),
    "check-data": ("xvit.cli.check_data", "scan a dataset for missing, unreadable or bad entries"),
    "bench-data": ("xvit.cli.bench_data", "measure data-loader clips/s (seek vs full decode, pyav vs torchcodec)"),
    "bench-train": ("xvit.cli.bench_train", "training clips/s: model alone vs data loader vs the real loop"),
    "bench-predict": ("xvit.cli.bench_predict", "where xvit predict's time goes: imports, load, decoding, model"),
    "bench-deploy": (
        "xvit.cli.bench_deploy",
        "deployment figures: eager vs onnxruntime fp32 / int8 vs pt2 (clips/s, export, size, memory; int8 accuracy)",
    ),
    "reproduce": (
        "xvit.cli.reproduce",
        "the studies: table1 (speed), table2 (TSM vs X-ViT, two regimes), fig1 (test views), "
        "main (the main job over seeds), gap (the from-scratch gap)",
    ),
}


def _load(name: str):
    return importlib.import_module(COMMANDS[name][0])


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xvit", description="Efficient video transformers (X-ViT and baselines).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen command's module is imported; the others get a bare help line.
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _load(name).add_arguments(p)
    return parser


# Commands that end their process at once when run as a program (``argv`` None): with torch,
# torchvision and timm loaded the interpreter's teardown takes ~0.8 s on a 2-core machine, more
# than loading a ViT-B checkpoint, and these commands leave nothing for it to do (their output is
# flushed, their files closed, and they register no atexit work of their own).
FAST_EXIT = frozenset({"predict"})


def main(argv: list[str] | None = None) -> int:
    as_program = argv is None
    mark_command_start(whole_process=as_program)  # a command's time counts from its process start
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    if extra:
        # argparse takes positionals only before the first flag: KEY=VALUE overrides after flags join the rest
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.command is None:
        parser.print_help()
        return 0
    try:
        rc = int(_load(args.command).run(args) or 0)
    except UserError as err:
        print(f"xvit {args.command}: error: {err}", file=sys.stderr)
        rc = 2
    except Stopped as err:  # a stop signal: the run wrote a snapshot of its step (xvit.engine.train.preempt)
        if str(err):
            print(err, file=sys.stderr, flush=True)
        rc = EXIT_STOPPED
    except KeyboardInterrupt:
        print(f"xvit {args.command}: interrupted", file=sys.stderr)
        return 130
    if as_program and (args.command in FAST_EXIT or rc == EXIT_STOPPED):
        exit_now(rc)  # a stopped run: within its grace period, and before torchrun ends it for a rank that left
    return rc


def exit_now(rc: int) -> None:
    """End the process with ``rc`` after flushing stdout, stderr and logging, skipping the
    interpreter's teardown (``os._exit``)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing left to deliver
            pass
    os._exit(rc)


if __name__ == "__main__":
    sys.exit(main())
