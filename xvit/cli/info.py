"""``xvit info``: parameters, multiply-adds per view and a timed forward pass of a model;
``xvit info --table`` prints the model zoo's cost table (the README's)."""

from __future__ import annotations

import argparse
import time

import torch

from xvit.models import create_model, list_models
from xvit.models.flops import model_cost
from xvit.models.sizes import zoo_order

DEFAULT_MODEL = "xvit_base_patch16_224"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model", nargs="?", default=DEFAULT_MODEL, help=f"model name (default {DEFAULT_MODEL}; see `xvit models`)"
    )
    p.add_argument(
        "--frames", type=int, nargs="+", default=None, help="frame counts (default: the model's, 8 for the ViTs)"
    )
    p.add_argument("--img-size", type=int, default=None, help="input size (default: the model's)")
    p.add_argument("--classes", type=int, default=400, help="number of classes (default 400)")
    p.add_argument("--no-forward", action="store_true", help="skip the forward pass on a random clip")
    p.add_argument(
        "--table",
        nargs="?",
        const="*_patch*_224",
        metavar="PATTERN",
        help="markdown table of models matching PATTERN (default: the 224 px ones)",
    )


def cost_table(names: list[str], frames: list[int] | None, img_size: int | None, classes: int) -> str:
    """Markdown table: name, parameters, GMACs per view at each frame count (``frames`` None: one
    column, each model at its own clip length and input size, which the table states)."""
    if frames is None:
        rows = ["| model | params (M) | input (frames x px) | GFLOPs/view |", "|---|---|---|---|"]
        for name in names:
            cost = model_cost(name, None, img_size, classes)
            size = f"{cost['num_frames']} x {cost['img_size']}"
            rows.append(f"| `{name}` | {cost['params'] / 1e6:.1f} | {size} | {cost['gmacs']:.1f} |")
        return "\n".join(rows)
    head = "| model | params (M) | " + " | ".join(f"GFLOPs/view @{t}f" for t in frames) + " |"
    rows = [head, "|" + "---|" * (2 + len(frames))]
    for name in names:
        costs = [model_cost(name, t, img_size, classes) for t in frames]
        cells = " | ".join(f"{c['gmacs']:.1f}" for c in costs)
        rows.append(f"| `{name}` | {costs[0]['params'] / 1e6:.1f} | {cells} |")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    if args.table:
        names = sorted(list_models(args.table), key=zoo_order)
        print(cost_table(names, args.frames, args.img_size, args.classes))
        print("\nGFLOPs are multiply-adds (the paper's convention), counted with torch.utils.flop_counter.")
        return 0
    if args.model not in list_models():
        create_model(args.model)  # raises with suggestions
    for t in args.frames or [None]:
        cost = model_cost(args.model, t, args.img_size, args.classes)
        t = cost["num_frames"]
        print(
            f"{args.model}  frames={t}  params={cost['params'] / 1e6:.2f}M  "
            f"GFLOPs/view={cost['gmacs']:.2f} (multiply-adds)"
        )
        if args.no_forward:
            continue
        model = create_model(args.model, num_frames=t, num_classes=args.classes, img_size=args.img_size).eval()
        x = torch.randn(1, 3, t, model.img_size, model.img_size)
        with torch.inference_mode():
            start = time.perf_counter()
            y = model(x)
            elapsed = time.perf_counter() - start
        print(
            f"  forward on a random clip {tuple(x.shape)} -> logits {tuple(y.shape)} in {elapsed * 1e3:.0f} ms "
            f"(CPU, {torch.get_num_threads()} threads, fp32, first call, no warm-up)"
        )
    return 0
