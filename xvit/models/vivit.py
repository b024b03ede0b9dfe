"""ViViT's factorised encoder (Arnab et al., "ViViT: A Video Vision Transformer", ICCV 2021, §3.3
"Model 2", Fig. 4), on xvit's ViT backbone.

Two transformer encoders in series ("late fusion"):

- a **spatial encoder** (the image ViT: ``depth`` blocks, its own CLS token and position
  embedding) run on the tokens of each temporal index alone, here the ``T / tubelet`` tubelets of
  ``tubelet x 16 x 16`` (ViViT-L/16x2: 2, §3.2 "tubelet embedding"); its CLS output, after the
  final norm, is the representation ``h_i`` of temporal index i;
- a **temporal encoder** of ``temporal_depth`` blocks (``L_t = 4``, §4.2 "we set L_t = 4 for all
  experiments") over the ``n_t`` representations with a CLS token and a learned temporal position
  embedding prepended / added, whose CLS output is classified.

Cost: the spatial encoder dominates, so FLOPs grow linearly with the frames (§4.2): ViViT-L/16x2
FE costs 995.3 GFLOPs per view at 32 frames and 3980.4 at 128 (the paper's figures; ours in the
README), against 1446 for the unfactorised Model 1 (``joint_large_patch16_224`` with
``tubelet=2``, Table 4). Features layout: ``(B, 1 + T', D)``, the temporal CLS, then the T'
per-index representations after the temporal encoder's norm.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import trunc_normal_
from torch import Tensor, nn

from xvit.models.base import VideoModel, register_family
from xvit.models.layers import Attention, Block, LinearHead, resize_temporal_embed


class FactorisedEncoder(VideoModel):
    """Spatial ViT per temporal index, then a temporal transformer over the indices' CLS tokens."""

    temporal_exchange = "factorised encoder: spatial ViT per tubelet frame, then a temporal transformer"

    def __init__(self, *, tubelet: int = 2, temporal_depth: int = 4, fused_attn: bool = True, **vit_args) -> None:
        """``tubelet``: frames per token (2: ViViT's 16x2); ``temporal_depth``: L_t, the temporal encoder's blocks."""
        super().__init__(**vit_args)
        self.use_tubelets(tubelet)
        self.temporal_depth = temporal_depth
        attn = partial(Attention, fused_attn=fused_attn)
        dim, heads = self.embed_dim, self.num_heads

        def block(drop_path: float) -> Block:
            return Block(
                dim,
                heads,
                self.mlp_ratio,
                self.qkv_bias,
                self.drop_rate,
                self.attn_drop_rate,
                drop_path,
                attn_layer=attn,
            )

        self.blocks = nn.ModuleList(block(self.drop_path_rates[i]) for i in range(self.depth))
        self.temporal_cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.temporal_pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_frames // tubelet, dim))
        self.temporal_blocks = nn.ModuleList(block(self.drop_path_rates[-1]) for _ in range(temporal_depth))
        self.temporal_norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = LinearHead(dim, self.num_classes, self.drop_rate)
        self.init_weights()
        trunc_normal_(self.temporal_pos_embed, std=0.02)

    def no_weight_decay(self) -> set[str]:
        return super().no_weight_decay() | {"temporal_cls_token", "temporal_pos_embed"}

    def describe(self) -> dict[str, str]:
        out = super().describe()
        size = f"{self.tubelet}x{self.patch_size}x{self.patch_size}"
        out["temporal"] = f"{self.temporal_exchange} ({self.temporal_depth} blocks), {size} tubelets"
        out["head"] = "temporal CLS token + linear"
        return out

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, 1 + T', D): temporal CLS + the per-index representations."""
        B = x.shape[0]
        x = self.embed_patches(self.stack_tubelets(x))  # (B, T', N, D)
        Tp = x.shape[1]
        cls = self.cls_with_pos().expand(B, Tp, 1, -1)  # (B, T', 1, D): one spatial CLS per index
        x = self.pos_drop(torch.cat([cls, x], dim=2))  # (B, T', 1+N, D)
        for blk in self.blocks:  # attention within each temporal index
            x = blk(x)
        h = self.norm(x[:, :, 0])  # (B, T', D): the spatial encoder's CLS outputs
        pos = resize_temporal_embed(self.temporal_pos_embed[:, 1:], Tp)  # (1, T', D)
        t_cls = self.temporal_cls_token + self.temporal_pos_embed[:, :1]  # (1, 1, D)
        z = torch.cat([t_cls.expand(B, -1, -1), h + pos], dim=1).unsqueeze(1)  # (B, 1, 1+T', D)
        for blk in self.temporal_blocks:
            z = blk(z)
        return self.temporal_norm(z.squeeze(1))  # (B, 1+T', D)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features[:, 0])


register_family("vivit_fe", FactorisedEncoder, "ViViT factorised encoder (Model 2), 2-frame tubelets", tubelet=2)
