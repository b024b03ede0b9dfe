"""``xvit train [--config NAME|PATH] [key.sub=value ...]``: train ``model.name`` (and then every
model of ``compare``) with the recipe of the config and evaluate it with multi-view testing.

Everything a user can get wrong (config keys, data paths, labels, model options, pretrained or
resume checkpoints) is checked before the run directory is created (``xvit.engine.train.prepare``).
"""

from __future__ import annotations

import argparse
import os
import sys

import yaml

from xvit.engine.config import load_config, shipped_configs
from xvit.engine.train.job import check_model_names, train
from xvit.errors import EXIT_STOPPED, PeerFailure


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``xvit train``."""
    parser.add_argument(
        "--config",
        "-c",
        default=None,
        metavar="CONFIG",
        help=f"YAML path or shipped config name (default: synthetic); shipped: {', '.join(shipped_configs())}",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue run_dir's checkpoint if there is one (train.resume=auto, the default); "
        "train.resume=PATH continues another run, train.resume=never refuses to",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides with dotted keys and YAML values, e.g. optim.lr=0.01 train.epochs=5",
    )
    parser.epilog = (
        "DDP: torchrun --nproc_per_node=N -m xvit train ... (train.batch_size is per process). "
        f"SIGTERM, SIGINT and SIGUSR1 (train.stop_signals) stop a run after a snapshot, exit status {EXIT_STOPPED}. "
        "See docs/training.md."
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of the ``train`` command."""
    overrides = list(args.overrides) + (["train.resume=auto"] if args.resume else [])
    cfg = load_config(args.config, overrides)
    if args.print_config:
        check_model_names(cfg)
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None), end="")
        return 0
    try:
        train(cfg)
    except PeerFailure as err:  # the process group is broken: exiting normally could block in its teardown
        print(f"xvit train: error: {err}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(2)
    return 0
