"""Multi-view testing: ``evaluate()`` (the engine function) and the ``xvit eval`` command.

A test video is cut into ``num_clips x num_crops`` views (X-ViT paper §4: 1x3 on Kinetics-400,
2x3 on Something-Something-v2; view ``v = temporal * num_crops + spatial`` as in PySlowFast); the
model's softmax scores are averaged over the views (``xvit.metrics.aggregate_views``). ``xvit eval
--views 1x3,2x3,3x3,4x3,5x3`` reproduces the supplement's Fig. 1 study (top-1 against the number
of temporal clips) as one command.

Under ``torchrun`` every rank evaluates its shard and the per-video scores are gathered to every
rank, keyed by dataset index, so each video counts exactly once (the ``xvit eval`` command shards
with ``ShardSampler``; the repeats that a ``DistributedSampler`` pads its shards with are dropped).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from xvit.errors import UserError
from xvit.metrics import ScoreAccumulator, aggregate_views

log = logging.getLogger(__name__)

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_WARNED_ABSENT: set[tuple[str, ...]] = set()


# --------------------------------------------------------------------------------------------
# engine
# --------------------------------------------------------------------------------------------


def _dist_rank() -> int:
    from xvit.distributed import rank

    return rank()


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP (whose forward may sync buffers, and ranks run unequal batches)."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.module
    return model


def check_clip_shape(model: nn.Module, views: Tensor) -> None:
    """Raise ``UserError`` when clips ``(B, V, C, T, H, W)`` do not fit the model's frames/size."""
    t, h, w = views.shape[-3:]
    frames, size = getattr(model, "num_frames", None), getattr(model, "img_size", None)
    if isinstance(size, (tuple, list)):
        size = size[0]
    if frames is not None and t != frames:
        raise UserError(
            f"the test clips have {t} frames but the model was built for num_frames={frames}; "
            f"sample {frames}-frame clips (data.num_frames={frames}, as recorded in the checkpoint's meta)"
        )
    if size is not None and (h != size or w != size):
        raise UserError(
            f"the test crops are {h}x{w} px but the model was built for img_size={size}; "
            f"evaluate with crop_size={size} (the checkpoint's meta['data']['crop_size'])"
        )


def forward_views(model: nn.Module, views: Tensor, *, device: torch.device | str,
                  amp_dtype: torch.dtype | None = None, chunk_size: int | None = None) -> Tensor:
    """Logits of every view: ``(B, V, C, T, H, W)`` -> ``(B, V, K)`` float32.

    The ``B*V`` clips go through the model ``chunk_size`` at a time (default ``B``: the memory
    of one batch of single-view clips, whatever the number of views).
    """
    B, V = views.shape[:2]
    clips = views.flatten(0, 1)  # (B, V, C, T, H, W) -> (B*V, C, T, H, W)
    chunk = max(1, chunk_size or B)
    device = torch.device(device)
    amp = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    out = []
    with amp:
        for start in range(0, B * V, chunk):
            x = clips[start:start + chunk].to(device, non_blocking=True)  # (c, C, T, H, W)
            out.append(model(x).float())  # (c, K)
    return torch.cat(out).view(B, V, -1)  # (B*V, K) -> (B, V, K)


@torch.inference_mode()
def evaluate(model: nn.Module, loader: Any, *, num_classes: int, device: torch.device | str,
             amp_dtype: torch.dtype | None = None, distributed: bool = False, progress: bool = True,
             chunk_size: int | None = None, desc: str = "eval") -> dict:
    """Multi-view evaluation of ``model`` over ``loader`` (batches of ``collate_views`` dicts).

    Returns ``top1``, ``top5``, ``mean_class_acc`` (percent, over the distinct readable videos;
    the mean is over the classes present in the labels), ``num_videos``, ``num_missing``,
    ``missing`` (dataset indices of unreadable videos), ``per_class_acc`` ``(K,)`` (NaN for absent
    classes), ``confusion`` ``(K, K)`` (row = label), ``scores`` ``(N, K)`` view-averaged softmax,
    ``labels`` and ``indices`` (sorted by dataset index), ``num_classes_present`` and
    ``num_labelled`` (videos with label -1, "unlabelled", are scored and predicted, not counted).
    With ``distributed`` every rank gets the metrics of the whole dataset. The model's train/eval
    mode is restored afterwards.
    """
    net = _unwrap(model)
    was_training = net.training
    net.eval()
    acc = ScoreAccumulator(num_classes)
    correct = seen = 0
    checked = False
    bar = tqdm(loader, desc=desc, unit="batch", dynamic_ncols=True,
               disable=not progress or _dist_rank() != 0)
    try:
        for batch in bar:
            acc.add_missing(batch.get("missing", ()))
            views = batch["views"]
            if views is None or views.shape[0] == 0:  # every video of the batch was unreadable
                continue
            if not checked:
                check_clip_shape(net, views)
                checked = True
            logits = forward_views(net, views, device=device, amp_dtype=amp_dtype, chunk_size=chunk_size)
            if logits.shape[-1] != num_classes:
                raise UserError(f"the model outputs {logits.shape[-1]} classes but num_classes={num_classes}")
            scores = aggregate_views(logits)  # (B, V, K) -> (B, K)
            labels = batch["labels"].cpu()
            acc.update(scores, labels, batch["indices"].cpu())
            labelled = labels >= 0  # -1: unlabelled test videos
            correct += int((scores.argmax(1).cpu() == labels)[labelled].sum())
            seen += int(labelled.sum())
            if seen:
                bar.set_postfix(top1=f"{100.0 * correct / seen:.1f}")
    finally:
        bar.close()
        net.train(was_training)
    if distributed:
        acc.gather()
    return acc.compute()


# --------------------------------------------------------------------------------------------
# the `xvit eval` command
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``xvit eval``."""
    parser.add_argument("--checkpoint", required=True, help="model checkpoint (.safetensors written by xvit)")
    parser.add_argument("--data-root", help="dataset root (default: the one recorded in the checkpoint)")
    parser.add_argument("--annotations",
                        help="annotation file of the test/val split (default: the checkpoint's val split)")
    parser.add_argument("--format", choices=["list", "kinetics", "ssv2", "folder"],
                        help="annotation format (default: the checkpoint's)")
    parser.add_argument("--class-names", help="class-names file of the test data (default: the checkpoint's classes)")
    parser.add_argument("--views", help="TxS (temporal clips x spatial crops), or a comma list for a sweep, "
                        "e.g. 1x3,2x3,3x3,4x3,5x3 (default: the checkpoint's test views, else 2x3 for "
                        "ssv2 and 1x3 otherwise)")
    parser.add_argument("--batch-size", type=int, default=8, help="videos per batch (default 8)")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="clips per forward pass (default: --batch-size)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="data-loader workers")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--amp", choices=sorted(AMP_DTYPES), default="none", help="autocast dtype (default none)")
    parser.add_argument("--out", help="output directory (default: eval_<views>/ next to the checkpoint)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_view_list(text: str) -> list[tuple[int, int]]:
    """``"1x3"`` -> ``[(1, 3)]``; ``"1x3,2x3"`` -> ``[(1, 3), (2, 3)]`` (duplicates removed)."""
    from xvit.data.transforms import parse_views

    settings: list[tuple[int, int]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            t, s = parse_views(part)
        except (ValueError, TypeError) as err:
            raise UserError(f"--views {text!r}: {part!r} is not TxS (e.g. 1x3, or 1x3,2x3): {err}") from None
        if t < 1 or s < 1:
            raise UserError(f"--views {text!r}: clips and crops must be >= 1, got {part!r}")
        if (t, s) not in settings:
            settings.append((int(t), int(s)))
    if not settings:
        raise UserError(f"--views {text!r}: give TxS, e.g. 1x3")
    return settings


def default_views(meta: dict) -> str:
    """The checkpoint's recorded test views, else the paper's: 2x3 for SSv2, 1x3 otherwise (§6)."""
    data = meta.get("data", {}) or {}
    if data.get("test_views"):
        views = data["test_views"]
        return views if isinstance(views, str) else f"{views[0]}x{views[1]}"
    if data.get("num_clips") and data.get("num_crops"):
        return f"{data['num_clips']}x{data['num_crops']}"
    return "2x3" if data.get("format") == "ssv2" else "1x3"


def pipeline_from_meta(meta: dict, model: nn.Module) -> dict:
    """``build_dataset`` / ``build_test_transform`` settings recorded in the checkpoint's meta.

    Missing keys fall back to the model (frames, size) and the paper's defaults (mean/std 0.5,
    segment sampling, short side = crop size), with a warning naming them.
    """
    data = meta.get("data", {}) or {}
    img = getattr(model, "img_size", 224)
    img = img[0] if isinstance(img, (tuple, list)) else img
    defaults = {"num_frames": getattr(model, "num_frames", 8), "sampling": "segment", "frame_stride": 4,
                "crop_size": img, "test_short_side": None, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    absent = [k for k in defaults if k not in data]
    if absent and tuple(absent) not in _WARNED_ABSENT:  # once per process, not once per video
        _WARNED_ABSENT.add(tuple(absent))
        log.warning("checkpoint meta['data'] lacks %s; using %s", ", ".join(absent),
                    ", ".join(f"{k}={defaults[k]}" for k in absent))
    out = {k: data.get(k, v) for k, v in defaults.items()}
    out["mean"], out["std"] = tuple(out["mean"]), tuple(out["std"])
    return out


def class_names_of(meta: dict, num_classes: int) -> list[str]:
    """Class names recorded in the checkpoint, else ``"0" .. "K-1"``."""
    names = (meta.get("data", {}) or {}).get("class_names")
    return list(names) if names and len(names) == num_classes else [str(i) for i in range(num_classes)]


def resolve_device(name: str | None) -> torch.device:
    """``--device`` -> ``torch.device`` (default: cuda if available, else cpu)."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def _init_distributed(device: torch.device) -> tuple[bool, torch.device]:
    """Join the ``torchrun`` process group (NCCL on CUDA, gloo on CPU) when ``WORLD_SIZE > 1``."""
    from xvit.distributed import init_distributed, is_dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False, device
    info = init_distributed("cuda" if device.type == "cuda" else "cpu")
    return is_dist(), info.device


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """``xvit.checkpoint.load_model`` with a ``UserError`` for a missing file."""
    from xvit.checkpoint import load_model

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found; pass the .safetensors file written by xvit train")
    return load_model(path, map_location="cpu")


def dataset_settings(args: argparse.Namespace, meta: dict, ckpt: Path) -> dict:
    """Where the test data is: flags first, then the checkpoint's ``meta["data"]`` (its val split)."""
    data = meta.get("data", {}) or {}
    root = args.data_root or data.get("root") or data.get("data_root")
    annotations = args.annotations or data.get("val_annotations") or data.get("annotations")
    fmt = args.format or data.get("format") or "list"
    if root is None and annotations is None:
        raise UserError(f"checkpoint {ckpt} records no dataset; pass --data-root DIR and --annotations FILE")
    return {"root": root, "annotations": annotations, "format": fmt}


def check_pipeline(pipeline: dict, model: nn.Module, ckpt: Path) -> None:
    """``UserError`` when the recorded clip length / crop size do not fit the model."""
    img = getattr(model, "img_size", None)
    img = img[0] if isinstance(img, (tuple, list)) else img
    if pipeline["num_frames"] != getattr(model, "num_frames", pipeline["num_frames"]):
        raise UserError(
            f"checkpoint {ckpt}: meta['data']['num_frames']={pipeline['num_frames']} but the model was built for "
            f"num_frames={model.num_frames}; fix the checkpoint's metadata (save it again with "
            f"xvit.checkpoint.save_model and data.num_frames={model.num_frames})")
    if img is not None and pipeline["crop_size"] != img:
        raise UserError(
            f"checkpoint {ckpt}: meta['data']['crop_size']={pipeline['crop_size']} but the model was built for "
            f"img_size={img}; fix the checkpoint's metadata (data.crop_size={img})")


def _classes_hint(model: nn.Module, names: list[str] | None, ckpt: Path) -> str:
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "") if names else ""
    return (f"checkpoint {ckpt} predicts {model.num_classes} classes" + (f" ({shown})" if shown else "")
            + "; evaluate on the data it was trained for (--data-root/--annotations/--format) or pass "
              "the matching --class-names")


def build_test_set(args: argparse.Namespace, meta: dict, model: nn.Module, ckpt: Path, views: tuple[int, int]
                   ) -> tuple[Any, dict]:
    """The ``views`` test dataset, labelled with the checkpoint's classes; ``UserError`` on a mismatch.

    Class names: ``--class-names`` if given, else the checkpoint's (so Kinetics/SSv2/folder labels
    map by name to the model's indices, and list labels must lie below its class count).
    """
    from xvit.data.datasets import build_dataset

    where = dataset_settings(args, meta, ckpt)
    pipeline = pipeline_from_meta(meta, model)
    check_pipeline(pipeline, model, ckpt)
    given = {"root": args.data_root, "annotations": args.annotations}
    for key, exists, flag in (("root", os.path.isdir, "--data-root"),
                              ("annotations", os.path.exists, "--annotations")):
        if where[key] is not None and not exists(where[key]):
            origin = "given by " + flag if given[key] else f"recorded in checkpoint {ckpt}"
            raise UserError(f"test data {key} {where[key]} ({origin}) does not exist; "
                            f"pass {flag} with an existing path")
    meta_names = (meta.get("data", {}) or {}).get("class_names") or None
    if meta_names is not None and len(meta_names) != model.num_classes:
        meta_names = None
    names = getattr(args, "class_names", None) or meta_names
    try:
        dataset = build_dataset("test", **where, **pipeline, class_names=names, num_clips=views[0], num_crops=views[1])
    except UserError as err:
        raise UserError(f"{err} ({_classes_hint(model, meta_names, ckpt)})") from None
    except (FileNotFoundError, NotADirectoryError) as err:
        raise UserError(f"test data: {err}; check --data-root/--annotations") from None
    data_names = list(dataset.class_names)
    where_txt = where["annotations"] or where["root"]
    generic = data_names == [str(i) for i in range(len(data_names))]
    if len(data_names) > model.num_classes or (len(data_names) != model.num_classes and not generic):
        raise UserError(f"the test data {where_txt} has {len(data_names)} classes but the "
                        f"{_classes_hint(model, meta_names, ckpt)}")
    if meta_names is not None and not generic and data_names != list(meta_names):
        i = next(i for i, (a, b) in enumerate(zip(meta_names, data_names)) if a != b)
        raise UserError(f"the test data {where_txt} and checkpoint {ckpt} disagree on class {i}: "
                        f"{data_names[i]!r} vs {meta_names[i]!r}; pass the checkpoint's class list "
                        f"(drop --class-names) or evaluate a model trained on these classes")
    return dataset, where


def make_loader(dataset: Any, batch_size: int, workers: int, distributed: bool, pin: bool) -> Any:
    """Test loader in dataset order; in DDP each rank takes every W-th video (``ShardSampler``)."""
    from torch.utils.data import DataLoader

    from xvit.data.datasets import collate_views
    from xvit.distributed import ShardSampler

    sampler = ShardSampler(dataset) if distributed else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, sampler=sampler, num_workers=workers,
                      collate_fn=collate_views, pin_memory=pin, drop_last=False)


def eval_setting(model: nn.Module, meta: dict, ckpt: Path, args: argparse.Namespace, views: tuple[int, int],
                 device: torch.device, distributed: bool) -> tuple[dict, list[str], dict]:
    """Build the ``views`` test set from the checkpoint + flags and evaluate it.

    Returns ``(evaluate()'s dict + "seconds", video paths by dataset index, info for the reports)``.
    """
    t, s = views
    dataset, where = build_test_set(args, meta, model, ckpt, views)
    label = str(where["annotations"] or where["root"])
    loader = make_loader(dataset, args.batch_size, args.workers, distributed, device.type == "cuda")
    start = time.perf_counter()
    res = evaluate(model, loader, num_classes=model.num_classes, device=device, amp_dtype=AMP_DTYPES[args.amp],
                   distributed=distributed, progress=not args.no_progress, chunk_size=args.chunk_size,
                   desc=f"eval {t}x{s}")
    res["seconds"] = time.perf_counter() - start
    if res["num_videos"] == 0:
        raise UserError(f"none of the {len(dataset)} videos of {label} could be read; "
                        f"check the files with `xvit check-data`")
    info = {"checkpoint": str(ckpt), "model": (meta.get("model") or {}).get("name"), "views": f"{t}x{s}",
            "num_clips": t, "num_crops": s, "format": where["format"],
            "root": None if where["root"] is None else str(where["root"]),
            "annotations": None if where["annotations"] is None else str(where["annotations"])}
    return res, [str(v.path) for v in dataset.samples], info


def run(args: argparse.Namespace) -> int:
    """``xvit eval``: evaluate a checkpoint at one or several view settings and write the reports."""
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be >= 1")
    ckpt = Path(args.checkpoint)
    distributed, device = _init_distributed(resolve_device(args.device))
    main = _dist_rank() == 0
    try:
        model, meta = load_checkpoint(ckpt)
        model.to(device).eval()
        settings = parse_view_list(args.views or default_views(meta))
        names = class_names_of(meta, model.num_classes)
        out_dir = Path(args.out) if args.out else ckpt.parent / ("eval_" + "_".join(f"{t}x{s}" for t, s in settings))
        rows = []
        for t, s in settings:
            res, paths, info = eval_setting(model, meta, ckpt, args, (t, s), device, distributed)
            if main:
                sub = out_dir if len(settings) == 1 else out_dir / f"{t}x{s}"
                write_reports(sub, res, class_names=names, paths=paths, info=info)
                print_summary(res, info, sub, paths)
            rows.append({"views": f"{t}x{s}", "num_clips": t, "num_crops": s, "num_views": t * s,
                         **{k: res[k] for k in ("top1", "top5", "mean_class_acc", "num_videos", "num_missing")},
                         "seconds": round(res["seconds"], 2)})
        if main and len(settings) > 1:
            title = f"{info['model'] or ckpt.name} on {info['annotations'] or info['root']}"
            write_views_table(out_dir, rows, title=title)
            print(f"\nviews study ({out_dir}/views.csv, views.png):\n")
            print((out_dir / "views.md").read_text())
    finally:
        if distributed:
            from xvit.distributed import cleanup

            cleanup()
    return 0


# --------------------------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------------------------


def _num(x: float) -> float | None:
    """A float for JSON: NaN -> None (JSON has no NaN), rounded to 4 decimals."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def predictions(res: dict, class_names: list[str], paths: list[str], topk: int = 5) -> list[dict]:
    """One dict per evaluated video: index, path, label, predicted, correct and the top-k."""
    k = min(topk, res["scores"].shape[1]) if len(res["scores"]) else 0
    out = []
    if k == 0:
        return out
    probs, classes = res["scores"].topk(k, dim=1)  # (N, k), (N, k)
    for i, y, p, c in zip(res["indices"].tolist(), res["labels"].tolist(), probs.tolist(), classes.tolist()):
        out.append({
            "index": i, "path": paths[i], "label": y, "label_name": class_names[y] if y >= 0 else None,
            "predicted": c[0], "predicted_name": class_names[c[0]], "correct": c[0] == y if y >= 0 else None,
            "topk": [{"class": class_names[cj], "index": cj, "prob": round(pj, 6)} for cj, pj in zip(c, p)],
        })
    return out


def write_reports(out_dir: Path, res: dict, *, class_names: list[str], paths: list[str], info: dict) -> None:
    """``metrics.json``, ``confusion.csv``/``.png`` and ``predictions.csv``/``.json`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    per_class = res["per_class_acc"].tolist()
    metrics = {
        **info,
        "top1": _num(res["top1"]), "top5": _num(res["top5"]), "mean_class_acc": _num(res["mean_class_acc"]),
        "num_videos": res["num_videos"], "num_missing": res["num_missing"],
        "missing": [{"index": i, "path": paths[i]} for i in res["missing"]],
        "num_classes": len(class_names), "num_classes_present": res["num_classes_present"],
        "per_class_acc": {name: _num(a) for name, a in zip(class_names, per_class)},
        "seconds": _num(res.get("seconds")),
        "notes": "accuracies in percent over the readable videos (unreadable ones are listed in 'missing', "
                 "not counted); mean_class_acc averages the classes present in the labels; "
                 "scores are softmax averaged over the views",
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    with open(out_dir / "confusion.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label \\ predicted", *class_names])
        for name, row in zip(class_names, res["confusion"].tolist()):
            w.writerow([name, *row])
    plot_confusion(out_dir / "confusion.png", res["confusion"], class_names,
                   title=f"{info.get('model') or ''} {info.get('views', '')}: top-1 {res['top1']:.2f}%")
    preds = predictions(res, class_names, paths)
    (out_dir / "predictions.json").write_text(json.dumps(preds, indent=1) + "\n")
    k = len(preds[0]["topk"]) if preds else 0
    with open(out_dir / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "path", "label", "label_name", "predicted", "predicted_name", "correct",
                    *[c for j in range(1, k + 1) for c in (f"top{j}_class", f"top{j}_prob")]])
        for p in preds:
            topk = [v for t in p["topk"] for v in (t["class"], f"{t['prob']:.6f}")]
            correct = "" if p["correct"] is None else int(p["correct"])
            w.writerow([p["index"], p["path"], p["label"], p["label_name"], p["predicted"], p["predicted_name"],
                        correct, *topk])


def plot_confusion(path: Path, confusion: Tensor, class_names: list[str], title: str = "") -> None:
    """Row-normalised confusion matrix as a PNG (class names on the axes up to 50 classes)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = confusion.shape[0]
    rows = confusion.double().sum(1, keepdim=True).clamp(min=1)
    norm = (confusion.double() / rows).numpy()  # (K, K) fraction of each true class
    side = min(4 + 0.22 * k, 24) if k <= 50 else 10
    fig = Figure(figsize=(side + 1.5, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if k <= 20:  # counts in the cells
        for (i, j), n in np.ndenumerate(confusion.numpy()):
            if n:
                ax.text(j, i, str(n), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    if k <= 50:
        ax.set_xticks(range(k), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(k), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title.strip())
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_views_table(out_dir: Path, rows: list[dict], title: str = "") -> None:
    """The views study: ``views.csv``, ``views.md`` and ``views.png`` (top-1 vs temporal clips)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    cols = ["views", "num_clips", "num_crops", "num_views", "top1", "top5", "mean_class_acc",
            "num_videos", "num_missing", "seconds"]
    with open(out_dir / "views.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: (f"{r[c]:.2f}" if isinstance(r[c], float) else r[c]) for c in cols})
    lines = ["| clips x crops | views | top-1 (%) | top-5 (%) | mean class acc (%) | videos | unreadable |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['views']} | {r['num_views']} | {r['top1']:.2f} | {r['top5']:.2f} | "
                     f"{r['mean_class_acc']:.2f} | {r['num_videos']} | {r['num_missing']} |")
    (out_dir / "views.md").write_text((f"{title}\n\n" if title else "") + "\n".join(lines) + "\n")
    fig = Figure(figsize=(5.5, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for s in sorted({r["num_crops"] for r in rows}):
        pts = sorted((r["num_clips"], r["top1"]) for r in rows if r["num_crops"] == s)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{s} spatial crop(s)")
    ax.set_xlabel("temporal clips")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_xticks(sorted({r["num_clips"] for r in rows}))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "views.png", dpi=100)


def print_summary(res: dict, info: dict, out_dir: Path, paths: list[str], max_listed: int = 20) -> None:
    """The headline numbers of one evaluation on stdout."""
    k = len(res["per_class_acc"])
    print(f"{info.get('model') or 'model'} | views {info['views']} ({info['num_clips']} temporal clip(s) x "
          f"{info['num_crops']} spatial crop(s)) | {info.get('annotations') or info.get('root')}")
    print(f"  top-1            {res['top1']:6.2f} %")
    print(f"  top-5            {res['top5']:6.2f} %" + ("  (k clamped: fewer than 5 classes)" if k < 5 else ""))
    print(f"  mean class acc   {res['mean_class_acc']:6.2f} %  (over the {res['num_classes_present']} of {k} "
          f"classes present)")
    secs = res.get("seconds") or 0.0
    rate = f", {res['num_videos'] / secs:.1f} videos/s" if secs > 0 else ""
    print(f"  videos           {res['num_videos']} evaluated in {secs:.1f} s{rate}, "
          f"{res['num_missing']} unreadable (not counted)")
    for i in res["missing"][:max_listed]:
        print(f"    missing [{i}] {paths[i]}")
    if res["num_missing"] > max_listed:
        print(f"    ... and {res['num_missing'] - max_listed} more (see metrics.json)")
    print(f"  reports          {out_dir}/")
