"""Optimizer, weight-decay parameter groups and the per-step warm-up + cosine schedule
(X-ViT paper §4: SGD, 5 warm-up epochs, cosine).

The recipes of the paper use SGD (momentum 0.9, nesterov, lr 0.03 at batch 64, linearly scaled to
the global batch) with 5 warm-up epochs and a cosine decay; AdamW is offered for small CPU runs.
Norms, biases (every 1-D parameter) and the names in ``model.no_weight_decay()`` (tokens,
position/temporal embeddings) get no weight decay.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: ``decay`` (matrices, conv kernels) and ``no_decay`` (1-D params + no_weight_decay names).

    A name in ``no_weight_decay()`` matches a parameter exactly or as a module prefix (``"pos_embed"``,
    ``"head.cls_token"``, ``"temporal_embed"``).
    """
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name in skip or any(name.startswith(s + ".") for s in skip):
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]


def scaled_lr(lr: float, global_batch: int, base_batch: int | None) -> float:
    """Linear scaling rule: ``lr`` is given for ``base_batch`` clips per optimizer step."""
    return lr if not base_batch else lr * global_batch / base_batch


def build_optimizer(
    model: nn.Module,
    *,
    name: str,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    nesterov: bool = True,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov) or AdamW over ``param_groups(model, weight_decay)`` at peak ``lr``."""
    groups = param_groups(model, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
    raise ValueError(f"unknown optimizer {name!r} (sgd | adamw)")


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, min_factor: float = 0.0) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup_steps`` over the first ``warmup_steps`` steps (reaching 1 at the
    last warm-up step), then a half cosine from 1 down to ``min_factor`` at ``total_steps``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Per-step warm-up + cosine schedule; ``step()`` after every optimizer step.

    Its state is one integer (``{"step": n}``), so it checkpoints with ``weights_only=True``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int, min_lr: float = 0.0):
        self.optimizer = optimizer
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        peak = max(g["initial_lr"] for g in optimizer.param_groups)
        self.min_factor = min_lr / peak if peak > 0 else 0.0
        self.last_step = 0
        self._apply()

    def factor(self, step: int) -> float:
        return lr_factor(step, total_steps=self.total_steps, warmup_steps=self.warmup_steps, min_factor=self.min_factor)

    def _apply(self) -> None:
        f = self.factor(self.last_step)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * f

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        self.last_step = int(state["step"])
        self._apply()
