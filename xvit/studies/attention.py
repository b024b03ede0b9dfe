"""Where X-ViT's attention looks (an explanation tool for ``xvit reproduce gap``).

With K/V mixing (paper §3.2) a head whose keys come from frame t+1 lets a query of frame t look
into frame t+1. Whether that carries *local* motion depends on where the head attends: a head
that puts its weight on the key at the query's own position hands the query what TSM's shift
hands it (the same place in the next frame); a head with uniform weights hands it the frame's
average, which says nothing about where something moved. Per block and head, on real clips:

- ``source``: where the head's keys come from (``t+1``, ``t-1``, ``t`` or ``mixed`` channels);
- ``entropy``: the mean attention entropy of the patch queries over their 1+N keys, divided by
  ``log(1+N)`` (1: uniform, 0: one key);
- ``same_place``: the mean weight a patch query gives the key at its own grid position
  (uniform: ``1/(1+N)``), and ``near``: the weight within its 3x3 neighbourhood;
- ``cls``: the mean weight a patch query gives the CLS key (the frame's summary token).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from xvit.models.layers import Attention


def head_sources(attn: Attention) -> list[str]:
    """Per head, which frame its keys come from (``mix`` includes K; ``t`` when nothing is mixed)."""
    dim = attn.num_heads * attn.head_dim
    src = ["t"] * dim
    if attn.mix in ("kv", "k") and attn.fold:
        for i, off in enumerate(attn.offsets):
            for c in range(i * attn.fold, min((i + 1) * attn.fold, dim)):
                src[c] = f"t{off:+d}"
    out = []
    for h in range(attn.num_heads):
        group = set(src[h * attn.head_dim : (h + 1) * attn.head_dim])
        out.append(group.pop() if len(group) == 1 else "mixed")
    return out


def _neighbours(grid: int) -> Tensor:
    """(N, N) bool: patch j is within the 3x3 neighbourhood of patch i (row-major grid)."""
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return ((ys[:, None] - ys[None]).abs() <= 1) & ((xs[:, None] - xs[None]).abs() <= 1)


@torch.no_grad()
def attention_stats(model: nn.Module, clips: Tensor) -> list[dict]:
    """Per mixing-layout block of ``model`` (a ``VideoTransformer``): per head its source, entropy,
    same_place and near weights on ``clips`` (B, C, T, H, W), averaged over clips, frames and patch queries."""
    captured: dict[int, Tensor] = {}
    blocks = list(model.blocks)
    hooks = [
        blk.attn.register_forward_pre_hook(lambda mod, args, i=i: captured.__setitem__(i, args[0]))
        for i, blk in enumerate(blocks)
    ]
    try:
        model.eval()(clips)
    finally:
        for h in hooks:
            h.remove()
    grid = model.img_size // model.patch_size
    near = _neighbours(grid)
    out = []
    for i, blk in enumerate(blocks):
        a: Attention = blk.attn
        x = captured[i]  # (B, T, N, D) the block's normed input
        B, T, N, D = x.shape
        q, k, _ = a.mix_kv(a.qkv(x).view(B, T, N, 3, D))  # each (B, T, N, D), K mixed as the block mixes it
        q, k = (t.reshape(B * T, N, a.num_heads, a.head_dim).transpose(1, 2) for t in (q, k))  # (BT, h, N, hd)
        p = ((q * a.scale) @ k.transpose(-2, -1)).softmax(dim=-1)[:, :, 1:]  # (BT, h, N-1, N): patch queries
        entropy = -(p * p.clamp_min(1e-12).log()).sum(-1).mean(dim=(0, 2)) / math.log(N)  # (h,)
        patches = p[..., 1:]  # (BT, h, N-1, N-1): weights on patch keys
        same = patches.diagonal(dim1=-2, dim2=-1).mean(dim=(0, 2))  # (h,)
        local = (patches * near).sum(-1).mean(dim=(0, 2))  # (h,)
        cls = p[..., 0].mean(dim=(0, 2))  # (h,)
        out.append(
            {
                "block": i,
                "heads": [
                    {
                        "source": s,
                        "entropy": round(float(e), 4),
                        "same_place": round(float(m), 4),
                        "near": round(float(n), 4),
                        "cls": round(float(c), 4),
                    }
                    for s, e, m, n, c in zip(head_sources(a), entropy, same, local, cls)
                ],
            }
        )
    return out


def summarise_sources(stats: list[dict]) -> dict[str, dict[str, float]]:
    """Mean entropy / same_place / near / cls over every head of each source, across the blocks."""
    acc: dict[str, list[dict]] = {}
    for blk in stats:
        for h in blk["heads"]:
            acc.setdefault(h["source"], []).append(h)
    return {
        src: {k: round(sum(h[k] for h in hs) / len(hs), 4) for k in ("entropy", "same_place", "near", "cls")}
        for src, hs in sorted(acc.items())
    }


def checkpoint_attention(checkpoint: str | Path, videos: int = 48) -> dict[str, dict[str, float]]:
    """``summarise_sources`` of a trained checkpoint on ``videos`` of its own val split (one view each,
    spread over the split)."""
    from xvit.engine.checkpoint import load_checkpoint
    from xvit.engine.eval.evaluate import build_test_set

    model, meta = load_checkpoint(checkpoint)
    dataset, _ = build_test_set(model, meta, Path(checkpoint), (1, 1))
    step = max(1, len(dataset) // videos)
    items = [dataset[i][0] for i in range(0, len(dataset), step)][:videos]
    clips = torch.stack([v[0] for v in items if v is not None])  # (B, C, T, H, W)
    return summarise_sources(attention_stats(model, clips))
