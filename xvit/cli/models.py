"""``xvit models [PATTERN]``: the registered model names (torch-free: ``xvit.models.sizes``)."""

from __future__ import annotations

import argparse

from xvit.models.sizes import model_names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'xvit_*' (default: all)")


def run(args: argparse.Namespace) -> int:
    print("\n".join(model_names(args.pattern)))
    return 0
