"""Mixup / CutMix for video clips and label-smoothed soft targets (paper §4 recipe:
label smoothing 0.3, mixup 0.4 on Kinetics-400).

Clips are ``(B, C, T, H, W)``. Mixup blends each clip with the clip at the mirrored batch position
(``x.flip(0)``); CutMix pastes one box, the **same box on every frame and channel**, over axes H, W
(timm's image Mixup indexes a 4-D ``(B, C, H, W)`` and would cut along T and H here). The mixing
weight ``lam`` is drawn from Beta(alpha, alpha) with numpy's global RNG (seeded and checkpointed by
the trainer); for CutMix it is corrected to the area actually pasted after clipping the box.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """``(B,)`` int labels -> ``(B, K)`` targets: ``1 - s + s/K`` on the label, ``s/K`` elsewhere (rows sum to 1)."""
    off = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return targets.scatter_(1, labels.long().unsqueeze(1), 1.0 - smoothing + off)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_k targets_k * log_softmax(logits)_k``; logits/targets ``(B, K)``."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def cutmix_box(
    height: int, width: int, lam: float, rng: np.random.Generator | None = None
) -> tuple[int, int, int, int]:
    """A box covering ~``1 - lam`` of the frame, centred uniformly at random and clipped: (y0, y1, x0, x1)."""
    rand = rng.integers if rng is not None else np.random.randint
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rand(0, height)), int(rand(0, width))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return y0, y1, x0, x1


class VideoMixup:
    """Batch-level mixup / cutmix for ``(B, C, T, H, W)`` clips returning soft targets ``(B, K)``.

    With both alphas 0 (or when the ``prob`` draw says no) it only returns the smoothed one-hot
    targets, so the training loss is always ``soft_cross_entropy(logits, targets)``.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.0,
    ):
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.switch_prob = switch_prob
        self.label_smoothing = label_smoothing

    @property
    def active(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def _draw(self) -> tuple[float, bool]:
        """(lam, use_cutmix); lam = 1 means no mixing for this batch."""
        if not self.active or np.random.rand() >= self.prob:
            return 1.0, False
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or np.random.rand() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(np.random.beta(alpha, alpha)), use_cutmix

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix ``x`` (B, C, T, H, W) in place of a copy; return (mixed clips, targets (B, K))."""
        targets = smooth_one_hot(labels, self.num_classes, self.label_smoothing)  # (B, K)
        lam, use_cutmix = self._draw()
        if lam >= 1.0:
            return x, targets
        partner = x.flip(0)  # (B, C, T, H, W), clip b mixed with clip B-1-b
        if use_cutmix:
            H, W = x.shape[-2:]
            y0, y1, x0, x1 = cutmix_box(H, W, lam)
            x = x.clone()
            x[..., y0:y1, x0:x1] = partner[..., y0:y1, x0:x1]  # same box over C and all T frames
            lam = 1.0 - (y1 - y0) * (x1 - x0) / float(H * W)
        else:
            x = x * lam + partner * (1.0 - lam)
        targets = targets * lam + targets.flip(0) * (1.0 - lam)
        return x, targets
