"""Cost of a model: parameters and multiply-adds per view.

Counted with ``torch.utils.flop_counter`` on the meta device (no memory, no compute) through the
eager attention path, so the attention matmuls are counted like every other matmul. The counter
reports FLOPs as 2 x multiply-adds; we report **multiply-adds** ("GFLOPs" in the paper's sense,
as fvcore and most video papers count; X-ViT-B/16 8x: 425 GFLOPs for 3 views, Table 6), i.e.
counter FLOPs / 2. Norms, softmax, GELU and adds are not counted, as in those papers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from xvit.models.factory import create_model


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def count_gmacs(model: nn.Module, x: Tensor) -> float:
    """Multiply-adds (G) of one forward of ``model`` on ``x``; on meta tensors this costs nothing."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 2 / 1e9


def model_cost(
    name: str, num_frames: int | None = None, img_size: int | None = None, num_classes: int = 400, **options
) -> dict:
    """``{"params": int, "gmacs": float, "num_frames": int, "img_size": int}`` of one view (batch 1)
    of ``name`` at this size (default: the model's own frames and input size)."""
    with torch.device("meta"):
        model = create_model(name, num_frames=num_frames, num_classes=num_classes, img_size=img_size, **options)
        model.set_fused_attn(False)
        model.eval()  # BatchNorm on a batch of one; the count is the same in both modes
        gmacs = count_gmacs(model, torch.empty(1, 3, model.num_frames, model.img_size, model.img_size))
    return {"params": count_params(model), "gmacs": gmacs, "num_frames": model.num_frames, "img_size": model.img_size}
