"""TimeSformer with divided space-time attention (Bertasius et al. 2021), on xvit's backbone.

Per block: temporal attention over the T frames at each spatial location (own qkv, output
projection ``temporal_fc`` zero-initialised), then spatial attention within each frame where
the video CLS token is copied into every frame and the T copies are averaged afterwards, then
the MLP. At init it therefore equals a frame ViT on a clip of identical frames.

Features layout: ``(B, 1 + T*N, D)``: the video CLS token, then the patches frame by frame.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import DropPath, Mlp
from torch import Tensor, nn

from xvit.models.base import VideoModel, register_family
from xvit.models.layers import Attention, LinearHead, resize_temporal_embed


class DividedBlock(nn.Module):
    """Temporal attention, then spatial attention with a per-frame copy of the CLS, then MLP."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        fused_attn: bool = True,
    ) -> None:
        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-6)
        attn = partial(Attention, dim, num_heads, qkv_bias, attn_drop, drop, fused_attn=fused_attn)
        self.temporal_norm1 = norm(dim)
        self.temporal_attn = attn()
        self.temporal_fc = nn.Linear(dim, dim)
        self.norm1 = norm(dim)
        self.attn = attn()
        self.norm2 = norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, cls: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """cls (B, 1, D), patches x (B, T, N, D) -> the same shapes."""
        B, T, N, D = x.shape
        xt = x.transpose(1, 2)  # (B, N, T, D): attention over T at each location
        res_t = self.temporal_fc(self.temporal_attn(self.temporal_norm1(xt))).transpose(1, 2)  # (B, T, N, D)
        x = x + self.drop_path(res_t)
        s = torch.cat([cls.unsqueeze(1).expand(B, T, 1, D), x], dim=2)  # (B, T, 1+N, D)
        s = self.attn(self.norm1(s))  # (B, T, 1+N, D)
        res_s = torch.cat([s[:, :, :1].mean(dim=1), s[:, :, 1:].flatten(1, 2)], dim=1)  # (B, 1+T*N, D)
        y = torch.cat([cls, x.flatten(1, 2)], dim=1) + self.drop_path(res_s)  # (B, 1+T*N, D)
        y = y + self.drop_path(self.mlp(self.norm2(y)))
        return y[:, :1], y[:, 1:].view(B, T, N, D)


class TimeSformer(VideoModel):
    """TimeSformer-divided: one video CLS, spatial + temporal embeddings, divided blocks."""

    temporal_exchange = "divided attention: temporal, then spatial"  # in words, for result tables (describe)

    def __init__(self, *, fused_attn: bool = True, **vit_args) -> None:
        super().__init__(**vit_args)
        self.time_embed = nn.Parameter(torch.zeros(1, self.num_frames, 1, self.embed_dim))
        self.blocks = nn.ModuleList(
            DividedBlock(
                self.embed_dim,
                self.num_heads,
                self.mlp_ratio,
                self.qkv_bias,
                self.drop_rate,
                self.attn_drop_rate,
                self.drop_path_rates[i],
                fused_attn,
            )
            for i in range(self.depth)
        )
        self.head = LinearHead(self.embed_dim, self.num_classes, self.drop_rate)
        self.init_weights()

    def zero_init_params(self) -> set[str]:
        return {"time_embed"} | {n for n, _ in self.named_parameters() if ".temporal_fc." in n}

    def adapt_image_weights(self, state: dict[str, Tensor]) -> tuple[dict[str, Tensor], str]:
        """Image-ViT weights as TimeSformer starts from them (its official code's ImageNet init):
        each block's temporal attention and its norm are copies of the block's spatial attention
        and ``norm1``; ``temporal_fc`` stays zero, so every block starts as the image ViT's."""
        out, blocks = dict(state), set()
        for name, value in state.items():
            for src, dst in ((".attn.", ".temporal_attn."), (".norm1.", ".temporal_norm1.")):
                if name.startswith("blocks.") and src in name and name.replace(src, dst, 1) not in state:
                    out[name.replace(src, dst, 1)] = value
                    blocks.add(name.split(".")[1])
        note = f"temporal_attn, temporal_norm1 of {len(blocks)} blocks from attn, norm1 (TimeSformer's init)"
        return out, note if blocks else ""

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, 1 + T*N, D) after the final norm (CLS, then frame-major patches)."""
        B, C, T, H, W = x.shape
        x = self.embed_patches(x) + resize_temporal_embed(self.time_embed, T)  # (B, T, N, D)
        x = self.pos_drop(x)
        cls = self.cls_with_pos().expand(B, -1, -1)  # (B, 1, D)
        for blk in self.blocks:
            cls, x = blk(cls, x)
        return self.norm(torch.cat([cls, x.flatten(1, 2)], dim=1))  # (B, 1+T*N, D)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features[:, 0])


register_family("timesformer", TimeSformer, "TimeSformer, divided space-time attention")
