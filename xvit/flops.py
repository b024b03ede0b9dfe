"""Cost of a model: parameters and multiply-adds per view.

Counted with ``torch.utils.flop_counter`` on the meta device (no memory, no compute) through the
eager attention path, so the attention matmuls are counted like every other matmul. The counter
reports FLOPs as 2 x multiply-adds; we report **multiply-adds** ("GFLOPs" in the paper's sense,
as fvcore and most video papers count), i.e. counter FLOPs / 2. Norms, softmax, GELU and adds
are not counted, as in those papers.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from xvit.models import create_model


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_cost(name: str, num_frames: int = 8, img_size: int | None = None, num_classes: int = 400, **options) -> dict:
    """``{"params": int, "gmacs": float}`` of one view (batch 1) of ``name`` at this size."""
    with torch.device("meta"):
        model = create_model(name, num_frames=num_frames, num_classes=num_classes, img_size=img_size, **options)
        model.set_fused_attn(False)
        x = torch.empty(1, 3, num_frames, model.img_size, model.img_size)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(x)
    return {"params": count_params(model), "gmacs": counter.get_total_flops() / 2 / 1e9}
