"""Classification metrics for multi-view video testing (pure functions on tensors).

Multi-view testing as in PySlowFast and the X-ViT paper (§4, test views 1x3 / 2x3; supplement
Fig. 1): a video is cut into ``V = num_clips * num_crops`` views, view ``v = temporal * num_crops
+ spatial``; the model's logits of every view are turned into softmax scores and averaged, and
the averaged scores are the video's prediction. Accuracies are percentages over *videos*.

``ScoreAccumulator`` keeps one score vector per dataset index, so a video seen twice (the padding
a ``DistributedSampler`` adds to even out the shards) counts once, and it can gather the scores
of all DDP ranks; it also remembers the videos that could not be read.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from xvit.engine.distributed import all_gather_tensor, is_dist
from xvit.errors import UserError

log = logging.getLogger(__name__)
_WARNED: set[tuple[int, int]] = set()  # (k, num_classes) pairs already warned about (once per process)


def aggregate_views(view_logits: Tensor) -> Tensor:
    """Average the per-view softmax scores of each video: ``(B, V, K)`` logits -> ``(B, K)``.

    The result is float32 whatever the logits' dtype (bf16/fp16 autocast), and each row sums to 1.
    """
    if view_logits.dim() != 3:
        raise ValueError(f"view_logits must be (B, V, K), got shape {tuple(view_logits.shape)}")
    return view_logits.float().softmax(dim=-1).mean(dim=1)  # (B, V, K) -> (B, K)


def topk_accuracy(scores: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracies in percent, keyed ``"top1"``, ``"top5"``, ...

    A video counts as correct for ``k`` when its label is among its ``k`` highest scores. With
    fewer classes than ``k`` (K < 5 for top-5) ``k`` is clamped to K, which makes the metric
    trivially 100%; a warning says so. With no videos every accuracy is NaN.
    """
    num, num_classes = scores.shape
    labels = labels.to(scores.device).long()
    out: dict[str, float] = {}
    if num == 0:
        return {f"top{k}": math.nan for k in ks}
    max_k = min(max(ks), num_classes)
    top = scores.topk(max_k, dim=1).indices  # (N, max_k)
    hits = top == labels[:, None]  # (N, max_k)
    for k in ks:
        kk = min(k, num_classes)
        if kk < k and (k, num_classes) not in _WARNED:
            _WARNED.add((k, num_classes))
            log.warning("top-%d accuracy with only %d classes: k clamped to %d (always 100%%)", k, num_classes, kk)
        out[f"top{k}"] = 100.0 * hits[:, :kk].any(dim=1).float().mean().item()
    return out


def confusion_matrix(preds: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``(K, K)`` int64 counts: row = true label, column = predicted class."""
    preds, labels = preds.reshape(-1).long().cpu(), labels.reshape(-1).long().cpu()
    bad = (labels < 0) | (labels >= num_classes) | (preds < 0) | (preds >= num_classes)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"label {int(labels[i])} / prediction {int(preds[i])} outside [0, {num_classes})")
    flat = labels * num_classes + preds  # (N,)
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_accuracy(confusion: Tensor) -> Tensor:
    """Accuracy of each class in percent, ``(K,)`` float; NaN for a class absent from the labels."""
    support = confusion.sum(dim=1).double()  # (K,) videos per true class
    correct = confusion.diagonal().double()  # (K,)
    acc = 100.0 * correct / support.clamp(min=1)
    return torch.where(support > 0, acc, torch.full_like(acc, math.nan)).float()


def mean_class_accuracy(confusion: Tensor) -> float:
    """Mean of the per-class accuracies (percent) over the classes present in the labels.

    Classes with no video are excluded from the mean (not counted as 0%); a log line says how
    many. NaN when no class is present.
    """
    acc = per_class_accuracy(confusion)
    present = ~acc.isnan()
    absent = int((~present).sum())
    if absent:
        log.info(
            "mean per-class accuracy over %d of %d classes (%d absent from the labels)",
            int(present.sum()),
            acc.numel(),
            absent,
        )
    if not present.any():
        return math.nan
    return acc[present].double().mean().item()


def resolve_pairs(pairs: list, class_names: list[str]) -> list[tuple[int, int]]:
    """``eval.reversed_pairs`` (class names or label indices) -> label pairs; ``UserError`` if unknown."""
    out = []
    for pair in pairs:
        if len(pair) != 2:
            raise UserError(f"eval.reversed_pairs: {pair!r} is not a pair; give [class, class] entries")
        labels = []
        for c in pair:
            if isinstance(c, int) and 0 <= c < len(class_names):
                labels.append(c)
            elif c in class_names:
                labels.append(class_names.index(c))
            else:
                raise UserError(
                    f"eval.reversed_pairs: class {c!r} is not one of the {len(class_names)} classes "
                    f"({', '.join(class_names[:6])}{', ...' if len(class_names) > 6 else ''})"
                )
        out.append((labels[0], labels[1]))
    return out


def pair_order_accuracy(confusion: Tensor, pairs: Sequence[tuple[int, int]]) -> dict:
    """How well time-reversed class pairs are told apart (percent), from a ``(K, K)`` confusion matrix.

    For a pair ``(a, b)`` (class ``b`` is class ``a`` played backwards) only the videos of ``a`` or
    ``b`` whose prediction falls in the pair count, and the accuracy is the fraction assigned to the
    right one of the two: ``(C[a,a] + C[b,b]) / (C[a,a] + C[a,b] + C[b,a] + C[b,b])``. A model
    blind to frame order is at ~50% by construction, whatever its appearance accuracy. Returns
    ``{"mean": mean over the pairs, "pairs": [per-pair %], "counts": [videos counted per pair]}``;
    NaN for a pair with no video predicted inside it.
    """
    accs, counts = [], []
    for a, b in pairs:
        inside = int(confusion[a, a] + confusion[a, b] + confusion[b, a] + confusion[b, b])
        right = int(confusion[a, a] + confusion[b, b])
        accs.append(100.0 * right / inside if inside else math.nan)
        counts.append(inside)
    valid = [x for x in accs if not math.isnan(x)]
    return {"mean": sum(valid) / len(valid) if valid else math.nan, "pairs": accs, "counts": counts}


def classification_metrics(scores: Tensor, labels: Tensor, num_classes: int, ks: Sequence[int] = (1, 5)) -> dict:
    """All the metrics of one set of per-video scores ``(N, K)`` and labels ``(N,)``.

    Returns ``top1``/``top5`` (percent), ``mean_class_acc`` (percent, over the classes present),
    ``num_classes_present``, ``per_class_acc`` ``(K,)`` (NaN for absent classes) and ``confusion``.
    """
    preds = scores.argmax(dim=1) if len(scores) else torch.zeros(0, dtype=torch.long)
    confusion = confusion_matrix(preds, labels, num_classes)
    per_class = per_class_accuracy(confusion)
    return {
        **topk_accuracy(scores, labels, ks),
        "mean_class_acc": mean_class_accuracy(confusion),
        "num_classes_present": int((~per_class.isnan()).sum()),
        "per_class_acc": per_class,
        "confusion": confusion,
    }


class ScoreAccumulator:
    """Per-video scores keyed by dataset index: duplicates count once, missing videos are kept.

    ``update`` adds a batch of averaged scores; the first score seen for an index is kept (the
    test pipeline is deterministic, so a repeat is the same video with the same views).
    ``add_missing`` records unreadable videos. ``gather`` merges every DDP rank's entries into
    every rank. ``compute`` returns the metrics over the distinct readable videos.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self._scores: dict[int, Tensor] = {}
        self._labels: dict[int, int] = {}
        self._missing: set[int] = set()

    def __len__(self) -> int:
        return len(self._scores)

    def update(self, scores: Tensor, labels: Tensor, indices: Tensor) -> None:
        """Add ``(B, K)`` scores with their ``(B,)`` labels and dataset indices."""
        if scores.shape[-1] != self.num_classes:
            raise ValueError(f"scores have {scores.shape[-1]} classes, expected {self.num_classes}")
        scores = scores.detach().float().cpu()
        for s, y, i in zip(scores, labels.tolist(), indices.tolist()):
            if int(i) not in self._scores:
                self._scores[int(i)] = s
                self._labels[int(i)] = int(y)

    def add_missing(self, indices: Iterable[int]) -> None:
        """Record dataset indices of videos that could not be read."""
        self._missing.update(int(i) for i in indices)

    @property
    def missing(self) -> list[int]:
        """Sorted indices of unreadable videos (an index that was also scored is not missing)."""
        return sorted(self._missing - self._scores.keys())

    def result(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(scores (N, K) float32, labels (N,) int64, indices (N,) int64)`` sorted by index."""
        idx = sorted(self._scores)
        if not idx:
            return (
                torch.zeros(0, self.num_classes),
                torch.zeros(0, dtype=torch.long),
                torch.zeros(0, dtype=torch.long),
            )
        scores = torch.stack([self._scores[i] for i in idx])  # (N, K)
        labels = torch.tensor([self._labels[i] for i in idx], dtype=torch.long)
        return scores, labels, torch.tensor(idx, dtype=torch.long)

    def gather(self) -> None:
        """Merge the entries of all DDP ranks into every rank (no-op single-process).

        Tensors travel through ``xvit.engine.distributed.all_gather_tensor`` (padded ``all_gather``, no
        pickle); repeated indices (sampler padding) are kept once.
        """
        if not is_dist():
            return
        scores, labels, indices = self.result()
        missing = torch.tensor(sorted(self._missing), dtype=torch.long)
        scores, labels, indices = (all_gather_tensor(t).cpu() for t in (scores, labels, indices))
        missing = all_gather_tensor(missing).tolist()
        # rebuilt from the gathered entries in rank order, so every rank keeps the same copy of a repeat
        self._scores, self._labels, self._missing = {}, {}, set()
        self.update(scores, labels, indices)
        self.add_missing(missing)

    def compute(self, ks: Sequence[int] = (1, 5)) -> dict:
        """Metrics over the distinct readable labelled videos, plus ``scores``/``labels``/``indices``
        of every readable video, ``num_videos``, ``num_labelled`` (label >= 0; -1 = unlabelled),
        ``num_missing`` and ``missing`` (sorted dataset indices)."""
        scores, labels, indices = self.result()
        missing = self.missing
        labelled = labels >= 0  # -1: unlabelled (test splits): predicted, not scored
        if not labelled.all():
            log.info("%d unlabelled videos are predicted but not counted in the accuracies", int((~labelled).sum()))
        return {
            **classification_metrics(scores[labelled], labels[labelled], self.num_classes, ks),
            "num_labelled": int(labelled.sum()),
            "num_videos": len(indices),
            "num_missing": len(missing),
            "missing": missing,
            "scores": scores,
            "labels": labels,
            "indices": indices,
        }
