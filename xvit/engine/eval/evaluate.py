"""Multi-view testing (X-ViT paper §4: 1x3 views on Kinetics-400, 2x3 on Something-Something-v2).

``evaluate(model, loader) -> dict`` is the engine function: a test video arrives as its
``num_clips x num_crops`` views (view ``v = temporal * num_crops + spatial``, as in PySlowFast),
the model's softmax scores are averaged over the views (``xvit.engine.eval.metrics.aggregate_views``).
``evaluate_checkpoint`` builds a checkpoint's test set from its ``ClipSpec`` and evaluates it,
which ``xvit eval --views 1x3,2x3,...`` repeats for the supplement's Fig. 1 study.

Under ``torchrun`` every rank evaluates its shard and the per-video scores are gathered to every
rank, keyed by dataset index, so each video counts exactly once (``ShardSampler``; the repeats
that a ``DistributedSampler`` pads its shards with are dropped).
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from xvit.data.datasets import build_dataset, collate_views
from xvit.data.video import DEFAULT_DECODER
from xvit.engine import distributed as xdist
from xvit.engine.checkpoint import CheckpointMeta
from xvit.engine.distributed import ShardSampler
from xvit.engine.eval.metrics import ScoreAccumulator, aggregate_views, pair_order_accuracy, resolve_pairs
from xvit.engine.runtime import unwrap
from xvit.errors import UserError
from xvit.progress import progress_bar


def check_clip_shape(model: nn.Module, views: Tensor) -> None:
    """Raise ``UserError`` when clips ``(B, V, C, T, H, W)`` do not fit the model's frames/size."""
    t, h, w = views.shape[-3:]
    frames, size = getattr(model, "num_frames", None), getattr(model, "img_size", None)
    if isinstance(size, (tuple, list)):
        size = size[0]
    if frames is not None and t != frames:
        raise UserError(
            f"the test clips have {t} frames but the model was built for num_frames={frames}; "
            f"sample {frames}-frame clips (data.num_frames={frames}, as recorded in the checkpoint's clip spec)"
        )
    if size is not None and (h != size or w != size):
        raise UserError(
            f"the test crops are {h}x{w} px but the model was built for img_size={size}; "
            f"evaluate with crop_size={size} (the checkpoint's clip spec crop_size)"
        )


def forward_views(
    model: nn.Module,
    views: Tensor,
    *,
    device: torch.device | str,
    amp_dtype: torch.dtype | None = None,
    chunk_size: int | None = None,
) -> Tensor:
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
            x = clips[start : start + chunk].to(device, non_blocking=True)  # (c, C, T, H, W)
            out.append(model(x).float())  # (c, K)
    return torch.cat(out).view(B, V, -1)  # (B*V, K) -> (B, V, K)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Any,
    *,
    num_classes: int,
    device: torch.device | str,
    amp_dtype: torch.dtype | None = None,
    distributed: bool = False,
    progress: bool = True,
    chunk_size: int | None = None,
    desc: str = "eval",
) -> dict:
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
    net = unwrap(model)  # DDP's forward may sync buffers, and ranks run unequal batches
    was_training = net.training
    net.eval()
    acc = ScoreAccumulator(num_classes)
    correct = seen = 0
    checked = False
    bar = progress_bar(loader, desc=desc, unit="batch", disable=not progress or xdist.rank() != 0)
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


def _classes_hint(model: nn.Module, names: list[str] | None, ckpt: Path) -> str:
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "") if names else ""
    return (
        f"checkpoint {ckpt} predicts {model.num_classes} classes"
        + (f" ({shown})" if shown else "")
        + "; evaluate on the data it was trained for (--data-root/--annotations/--format) or pass "
        "the matching --class-names"
    )


def test_source(
    meta: CheckpointMeta, ckpt: Path, root: str | None = None, annotations: str | None = None, format: str | None = None
) -> dict:
    """Where the test data is: the given paths first, then the checkpoint's (its val split)."""
    root = root or meta.data.get("root")
    annotations = annotations or meta.data.get("val_annotations")
    if root is None and annotations is None:
        raise UserError(f"checkpoint {ckpt} records no dataset; pass --data-root DIR and --annotations FILE")
    return {"root": root, "annotations": annotations, "format": format or meta.data.get("format") or "list"}


def build_test_set(
    model: nn.Module,
    meta: CheckpointMeta,
    ckpt: Path,
    views: tuple[int, int],
    *,
    root: str | None = None,
    annotations: str | None = None,
    format: str | None = None,
    class_names: str | None = None,
    decoder: str = DEFAULT_DECODER,
) -> tuple[Any, dict]:
    """The ``views`` test dataset, labelled with the checkpoint's classes; ``UserError`` on a mismatch.

    Class names: ``class_names`` (a file) if given, else the checkpoint's (so Kinetics/SSv2/folder
    labels map by name to the model's indices, and list labels must lie below its class count).
    """
    where = test_source(meta, ckpt, root, annotations, format)
    given = {"root": root, "annotations": annotations}
    for key, exists, flag in (("root", os.path.isdir, "--data-root"), ("annotations", os.path.exists, "--annotations")):
        if where[key] is not None and not exists(where[key]):
            origin = "given by " + flag if given[key] else f"recorded in checkpoint {ckpt}"
            raise UserError(
                f"test data {key} {where[key]} ({origin}) does not exist; pass {flag} with an existing path"
            )
    meta_names = list(meta.clip.class_names) or None
    if meta_names is not None and len(meta_names) != model.num_classes:
        meta_names = None
    names = class_names or meta_names
    try:
        dataset = build_dataset(
            "test", **where, clip=meta.clip.replace(views=views), class_names=names, decoder=decoder
        )
    except UserError as err:
        raise UserError(f"{err} ({_classes_hint(model, meta_names, ckpt)})") from None
    except (FileNotFoundError, NotADirectoryError) as err:
        raise UserError(f"test data: {err}; check --data-root/--annotations") from None
    data_names = list(dataset.class_names)
    where_txt = where["annotations"] or where["root"]
    generic = data_names == [str(i) for i in range(len(data_names))]
    if len(data_names) > model.num_classes or (len(data_names) != model.num_classes and not generic):
        raise UserError(
            f"the test data {where_txt} has {len(data_names)} classes but the {_classes_hint(model, meta_names, ckpt)}"
        )
    if meta_names is not None and not generic and data_names != list(meta_names):
        i = next(i for i, (a, b) in enumerate(zip(meta_names, data_names)) if a != b)
        raise UserError(
            f"the test data {where_txt} and checkpoint {ckpt} disagree on class {i}: "
            f"{data_names[i]!r} vs {meta_names[i]!r}; pass the checkpoint's class list "
            f"(drop --class-names) or evaluate a model trained on these classes"
        )
    return dataset, where


def reversed_pairs(meta: CheckpointMeta, names: list[str]) -> list[tuple[int, int]]:
    """Time-reversed label pairs among the model's classes ``names``, for pair order accuracy: the
    training config's ``eval.reversed_pairs``, else the built-in benchmark's pairs whose two classes
    the model has (none for other data)."""
    from xvit.data.synthetic import REVERSED_PAIRS  # imports the scene generator: not on xvit predict's import path

    configured = ((meta.train.get("config") or {}).get("eval") or {}).get("reversed_pairs")
    if configured:
        try:
            return resolve_pairs(configured, names)
        except UserError:  # the configured names are not the classes of this test set
            pass
    return resolve_pairs([p for p in REVERSED_PAIRS if all(c in names for c in p)], names)


def make_loader(dataset: Any, batch_size: int, workers: int, distributed: bool, pin: bool) -> DataLoader:
    """Test loader in dataset order; in DDP each rank takes every W-th video (``ShardSampler``)."""
    sampler = ShardSampler(dataset) if distributed else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_views,
        pin_memory=pin,
        drop_last=False,
    )


def evaluate_checkpoint(
    model: nn.Module,
    meta: CheckpointMeta,
    ckpt: Path,
    views: tuple[int, int],
    *,
    device: torch.device,
    distributed: bool = False,
    batch_size: int = 8,
    workers: int = 0,
    amp_dtype: torch.dtype | None = None,
    chunk_size: int | None = None,
    progress: bool = True,
    **source: Any,
) -> tuple[dict, list[str], dict]:
    """Build the ``views`` test set from the checkpoint (``source``: root, annotations, format,
    class_names overriding it, and the decoder) and evaluate it.

    ``model`` may be an ``OnnxModel`` (an export run by onnxruntime; ``meta`` its ``.meta``).
    Returns ``(evaluate()'s dict + "seconds" (+ "pair_order_acc" where the classes hold
    time-reversed pairs, ``reversed_pairs``), video paths by dataset index, info for the reports)``.
    """
    t, s = views
    dataset, where = build_test_set(model, meta, ckpt, views, **source)
    label = str(where["annotations"] or where["root"])
    loader = make_loader(dataset, batch_size, workers, distributed, device.type == "cuda")
    start = time.perf_counter()
    res = evaluate(
        model,
        loader,
        num_classes=model.num_classes,
        device=device,
        amp_dtype=amp_dtype,
        distributed=distributed,
        progress=progress,
        chunk_size=chunk_size,
        desc=f"eval {t}x{s}",
    )
    res["seconds"] = time.perf_counter() - start
    pairs = reversed_pairs(meta, list(dataset.class_names))
    if pairs:
        res["pair_order_acc"] = pair_order_accuracy(res["confusion"], pairs)["mean"]
    if res["num_videos"] == 0:
        raise UserError(
            f"none of the {len(dataset)} videos of {label} could be read; check the files with `xvit check-data`"
        )
    info = {
        "checkpoint": str(ckpt),
        "model": meta.name,
        "views": f"{t}x{s}",
        "num_clips": t,
        "num_crops": s,
        "format": where["format"],
        "root": None if where["root"] is None else str(where["root"]),
        "annotations": None if where["annotations"] is None else str(where["annotations"]),
        "decoder": source.get("decoder", DEFAULT_DECODER),
    }
    return res, [str(v.path) for v in dataset.samples], info
