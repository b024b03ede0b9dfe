"""Joint space-time attention (ViViT model 1 / TimeSformer "joint"): full attention over all
T·N patch tokens and one video CLS token; cost O(T²N²).

Features layout: ``(B, 1 + T*N, D)``: the video CLS token, then the patches frame by frame.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from xvit.layers import Attention, Block, LinearHead
from xvit.models.base import VideoModel, register_family, resize_temporal_embed


class JointSpaceTime(VideoModel):
    """One sequence of 1 + T·N tokens through standard ViT blocks."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_frames: int = 8,
        num_classes: int = 400,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        fused_attn: bool = True,
    ) -> None:
        super().__init__(img_size, patch_size, in_chans, embed_dim, num_frames, num_classes)
        self.time_embed = nn.Parameter(torch.zeros(1, num_frames, 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        attn_layer = partial(Attention, fused_attn=fused_attn)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, dpr[i], attn_layer=attn_layer)
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = LinearHead(embed_dim, num_classes, drop_rate)
        self.init_weights()

    def zero_init_params(self) -> set[str]:
        return {"time_embed"}

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, 1 + T*N, D) after the final norm (CLS, then frame-major patches)."""
        B, C, T, H, W = x.shape
        x = self.embed_patches(x) + resize_temporal_embed(self.time_embed, T)  # (B, T, N, D)
        cls = self.cls_with_pos().expand(B, -1, -1)  # (B, 1, D)
        x = torch.cat([cls, x.flatten(1, 2)], dim=1)  # (B, 1+T*N, D)
        x = self.pos_drop(x).unsqueeze(1)  # (B, 1, 1+T*N, D): one "frame" holding every token
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x.squeeze(1))  # (B, 1+T*N, D)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features[:, 0])


register_family("joint", JointSpaceTime, "Joint space-time attention (ViViT model 1)")
