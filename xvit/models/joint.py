"""Joint space-time attention (ViViT model 1 / TimeSformer "joint"): full attention over all
T·N patch tokens and one video CLS token; cost O(T²N²).

``tubelet`` > 1 embeds ``tubelet x patch x patch`` tubes instead of per-frame patches (ViViT's
"tubelet embedding", Arnab et al. 2021 §3.1; ViViT-L/16x2 has ``tubelet=2``): ``T / tubelet``
token frames, so a 32-frame clip costs what 16 per-frame patches would.

Features layout: ``(B, 1 + T'*N, D)``: the video CLS token, then the patches frame by frame
(``T' = T / tubelet``).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from xvit.models.base import VideoModel, register_family
from xvit.models.layers import Attention, Block, LinearHead, resize_temporal_embed


class JointSpaceTime(VideoModel):
    """One sequence of 1 + T·N tokens through standard ViT blocks."""

    temporal_exchange = "joint space-time attention over all tokens"  # in words, for result tables (describe)

    def __init__(self, *, tubelet: int = 1, fused_attn: bool = True, **vit_args) -> None:
        """``tubelet``: frames per token (1: per-frame patches; 2: ViViT's 16x2 tubelets)."""
        super().__init__(**vit_args)
        self.use_tubelets(tubelet)
        self.time_embed = nn.Parameter(torch.zeros(1, self.num_frames // tubelet, 1, self.embed_dim))
        attn_layer = partial(Attention, fused_attn=fused_attn)
        self.blocks = nn.ModuleList(
            Block(
                self.embed_dim,
                self.num_heads,
                self.mlp_ratio,
                self.qkv_bias,
                self.drop_rate,
                self.attn_drop_rate,
                self.drop_path_rates[i],
                attn_layer=attn_layer,
            )
            for i in range(self.depth)
        )
        self.head = LinearHead(self.embed_dim, self.num_classes, self.drop_rate)
        self.init_weights()

    def zero_init_params(self) -> set[str]:
        return {"time_embed"}

    def describe(self) -> dict[str, str]:
        out = super().describe()
        if self.tubelet > 1:
            size = f"{self.tubelet}x{self.patch_size}x{self.patch_size}"
            out["temporal"] = f"{self.temporal_exchange}, {size} tubelet tokens"
        return out

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, 1 + T*N, D) after the final norm (CLS, then frame-major patches)."""
        B = x.shape[0]
        x = self.embed_patches(self.stack_tubelets(x))  # (B, T', N, D)
        x = x + resize_temporal_embed(self.time_embed, x.shape[1])  # (B, T', N, D)
        cls = self.cls_with_pos().expand(B, -1, -1)  # (B, 1, D)
        x = torch.cat([cls, x.flatten(1, 2)], dim=1)  # (B, 1+T*N, D)
        x = self.pos_drop(x).unsqueeze(1)  # (B, 1, 1+T*N, D): one "frame" holding every token
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x.squeeze(1))  # (B, 1+T*N, D)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features[:, 0])


register_family("joint", JointSpaceTime, "Joint space-time attention (ViViT model 1)")
