"""X-ViT (paper §3) and the two baselines that keep its per-frame token layout: the frame ViT
(TSN, "space-only") and TSM-ViT (supplement Eqs. 1-3).

All three are one ``VideoTransformer``: an image ViT applied to every frame, whose tokens are
``(B, T, 1+N, D)`` throughout. They differ only in how frames exchange information:

- X-ViT: the attention of chosen blocks mixes K/V channels of frames t-1, t+1 (``mix``),
  optionally with per-frame summary tokens; temporal embedding; temporal attention head.
- frame ViT: no exchange; temporal average pooling.
- TSM-ViT: the token tensor is temporally shifted before every block (``tsm_shift_div``).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

import torch
from torch import Tensor, nn

from xvit.models.base import VideoModel, register_family
from xvit.models.layers import (
    Attention,
    Block,
    build_head,
    mix_offsets,
    resize_temporal_embed,
    shift_cat,
    temporal_shift,
)

MIX_BLOCK_CHOICES = ("all", "none", "first_half", "second_half", "odd", "even")


def resolve_mix_blocks(spec: str | Iterable[int] | None, depth: int) -> frozenset[int]:
    """Which blocks mix: ``"all"``, ``"none"``, ``"first_half"``, ``"second_half"``, ``"odd"``,
    ``"even"`` (0-based block index parity) or explicit indices (negative counts from the end)."""
    if spec is None or spec == "all":
        return frozenset(range(depth))
    if isinstance(spec, str):
        named = {
            "none": (),
            "first_half": range(depth // 2),
            "second_half": range(depth // 2, depth),
            "odd": range(1, depth, 2),
            "even": range(0, depth, 2),
        }
        if spec not in named:
            raise ValueError(f"mix_blocks must be one of {MIX_BLOCK_CHOICES} or a list of block indices, got {spec!r}")
        return frozenset(named[spec])
    idx = [int(i) % depth if -depth <= int(i) < depth else None for i in spec]
    if None in idx:
        raise ValueError(f"mix_blocks {list(spec)} has indices outside a {depth}-block model")
    return frozenset(idx)


class VideoTransformer(VideoModel):
    """Per-frame ViT with optional space-time mixing (X-ViT) or token shift (TSM-ViT)."""

    def __init__(
        self,
        *,
        mix: str | None = "kv",
        shift_div: int = 4,
        t_w: int = 1,
        mix_blocks: str | Iterable[int] | None = "all",
        summary_token: bool = False,
        tsm_shift_div: int = 0,
        temporal_embed: bool = True,
        head: str = "attn",
        head_depth: int = 1,
        fused_attn: bool = True,
        **vit_args,
    ) -> None:
        """``shift_div``: 1/ρ per mixed direction (4: ρ = 50%, the SSv2 default; 8: 25%, Kinetics).
        ``mix``: ``"kv"`` (paper), ``"k"``, ``"v"`` or None. ``tsm_shift_div``: > 0 makes TSM-ViT
        (1/div of channels from t-1 and from t+1 before every block; 8 in TSM). ``vit_args``: the
        shared ViT arguments of ``VideoModel`` (sizes, dropouts, drop path)."""
        super().__init__(**vit_args)
        dim, depth = self.embed_dim, self.depth
        self.mixing_blocks = resolve_mix_blocks(mix_blocks, depth) if mix else frozenset()
        self.tsm_fold = dim // tsm_shift_div if tsm_shift_div else 0
        self.temp_embed = nn.Parameter(torch.zeros(1, self.num_frames, 1, dim)) if temporal_embed else None
        self.blocks = nn.ModuleList(
            Block(
                dim,
                self.num_heads,
                self.mlp_ratio,
                self.qkv_bias,
                drop=self.drop_rate,
                attn_drop=self.attn_drop_rate,
                drop_path=self.drop_path_rates[i],
                attn_layer=partial(
                    Attention,
                    mix=mix if i in self.mixing_blocks else None,
                    shift_div=shift_div,
                    t_w=t_w,
                    summary_token=summary_token,
                    fused_attn=fused_attn,
                ),
            )
            for i in range(depth)
        )
        self.head = build_head(head, dim, self.num_heads, self.num_classes, head_depth, self.drop_rate, fused_attn)
        self._options = dict(
            mix=mix,
            shift_div=shift_div,
            t_w=t_w,
            summary_token=summary_token,
            head=head,
            head_depth=head_depth,
            tsm_shift_div=tsm_shift_div,
        )
        self.init_weights()

    def describe(self) -> dict[str, str]:
        """What exchanges information across frames, and the head, in words (for result tables)."""
        o, depth = self._options, self.depth
        if self.mixing_blocks:
            blocks = "all blocks" if len(self.mixing_blocks) == depth else f"blocks {sorted(self.mixing_blocks)}"
            rho = round(100 * 2 * o["t_w"] / o["shift_div"])
            temporal = f"{o['mix'].upper()} mixing, rho {rho}%, t_w {o['t_w']}, {blocks}"
            temporal += ", summary token" if o["summary_token"] else ""
        elif self.tsm_fold:
            temporal = f"TSM shift 1/{o['tsm_shift_div']} + 1/{o['tsm_shift_div']} before every block"
        else:
            temporal = "none (frames independent)"
        head = f"temporal attention ({o['head_depth']} block)" if o["head"] == "attn" else "temporal average pooling"
        return {"temporal": temporal, "temporal_embed": "yes" if self.temp_embed is not None else "no", "head": head}

    def zero_init_params(self) -> set[str]:
        return {"temp_embed", "head.cls_token"}

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> per-frame tokens (B, T, 1+N, D) after the final norm."""
        B, C, T, H, W = x.shape
        patches = self.embed_patches(x)  # (B, T, N, D)
        cls = self.cls_with_pos().expand(B, T, 1, -1)  # (B, T, 1, D)
        x = torch.cat([cls, patches], dim=2)  # (B, T, 1+N, D)
        x = self.pos_drop(x)  # the reference code drops before adding the temporal embedding
        if self.temp_embed is not None:
            x = x + resize_temporal_embed(self.temp_embed, T)  # (1, T, 1, D) broadcast
        for blk in self.blocks:
            if self.tsm_fold:
                shift = shift_cat if self.export_form else temporal_shift
                x = shift(x, mix_offsets(1), self.tsm_fold)  # TSM: shift, then a plain block
            x = blk(x)
        return self.norm(x)

    def forward_head(self, features: Tensor) -> Tensor:
        """(B, T, 1+N, D) -> (B, num_classes) from the per-frame CLS tokens."""
        return self.head(features[:, :, 0])  # (B, T, D) -> (B, K)


register_family(
    "xvit",
    VideoTransformer,
    "X-ViT: space-time mixing of K/V, temporal embedding, temporal attention head",
    mix="kv",
    head="attn",
)
register_family(
    "vit",
    VideoTransformer,
    "Frame ViT (TSN, space-only): no temporal exchange, temporal average pooling",
    mix=None,
    temporal_embed=False,
    head="avg",
)
register_family(
    "tsm_vit",
    VideoTransformer,
    "TSM-ViT: temporal shift of 1/8 + 1/8 channels before each block, temporal average pooling",
    mix=None,
    tsm_shift_div=8,
    temporal_embed=False,
    head="avg",
)
