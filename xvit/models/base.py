"""What every model shares: the ViT sizes, patch + position embeddings with timm's parameter
names (so ImageNet ViT checkpoints load as they are), weight init, and the head interface."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed, trunc_normal_
from torch import Tensor, nn

from xvit.layers import Attention

# ViT sizes (SPEC §4) plus two small ones for CPU: nano for tests, micro for the synthetic run.
SIZES: dict[str, dict] = {
    "nano": dict(embed_dim=32, depth=2, num_heads=2),
    "micro": dict(embed_dim=96, depth=4, num_heads=4),
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
    "large": dict(embed_dim=1024, depth=24, num_heads=16),
}
# (size, patch, input) of each registered variant: <family>_<size>_patch<patch>_<input>.
VARIANTS: list[tuple[str, int, int]] = [
    ("nano", 8, 32),
    ("micro", 8, 64),
    ("tiny", 16, 224),
    ("small", 16, 224),
    ("base", 16, 224),
    ("large", 16, 224),
    ("base", 32, 224),
]


def variant_args(size: str, patch: int, img: int, overrides: dict) -> dict:
    """Size arguments of a variant, with the caller's overrides winning."""
    return {**SIZES[size], "patch_size": patch, "img_size": img, **overrides}


def resize_temporal_embed(embed: Tensor, num_frames: int) -> Tensor:
    """Linear interpolation of a (1, T0, 1, D) or (1, T0, D) temporal embedding to ``num_frames``."""
    T0 = embed.shape[1]
    if T0 == num_frames:
        return embed
    flat = embed.reshape(1, T0, -1).transpose(1, 2)  # (1, D', T0)
    if T0 == 1:
        out = flat.expand(-1, -1, num_frames)
    else:
        out = F.interpolate(flat, size=num_frames, mode="linear", align_corners=True)  # (1, D', T)
    return out.transpose(1, 2).reshape(1, num_frames, *embed.shape[2:])


class VideoModel(nn.Module):
    """Base of every model: patch embedding, CLS token, spatial position embedding, init, and
    the timm-style interface (``forward_features`` / ``forward_head`` / ``reset_classifier`` /
    ``no_weight_decay`` / ``set_fused_attn``)."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, num_frames: int, num_classes: int) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        self.num_frames = num_frames
        self.num_classes = num_classes
        self.embed_dim = self.num_features = embed_dim
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, embed_dim))

    def init_weights(self) -> None:
        """timm ViT init: trunc-normal(0.02) linears and position embedding, unit norms.

        Modules with zero init by design (temporal embeddings, head CLS, TimeSformer's temporal
        projection) re-zero themselves in ``_zero_init``.
        """
        trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self._zero_init()

    def _zero_init(self) -> None:
        for name, p in self.named_parameters():
            if name in self.zero_init_params():
                nn.init.zeros_(p)

    def zero_init_params(self) -> set[str]:
        return set()

    def embed_patches(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) video -> (B, T, N, D) patch tokens with spatial position embedding."""
        B, C, T, H, W = x.shape
        if (H, W) != (self.img_size, self.img_size):
            raise ValueError(f"{type(self).__name__} was built for {self.img_size}x{self.img_size} input, got {H}x{W}")
        x = x.transpose(1, 2).reshape(B * T, C, H, W)  # (BT, C, H, W)
        x = self.patch_embed(x) + self.pos_embed[:, 1:]  # (BT, N, D)
        return x.view(B, T, self.num_patches, self.embed_dim)  # (B, T, N, D)

    def cls_with_pos(self) -> Tensor:
        """(1, 1, D) CLS token plus its position embedding."""
        return self.cls_token + self.pos_embed[:, :1]

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) float video -> (B, num_classes) logits."""
        return self.forward_head(self.forward_features(x))

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, features: Tensor) -> Tensor:
        raise NotImplementedError

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final classifier with a fresh one for ``num_classes`` (0: features only)."""
        self.num_classes = num_classes
        self.head.reset(num_classes)
        if getattr(self, "model_config", None):
            self.model_config["num_classes"] = num_classes

    def no_weight_decay(self) -> set[str]:
        """Names of parameters excluded from weight decay: tokens and embeddings."""
        keys = {"cls_token", "pos_embed", "temp_embed", "time_embed", "head.cls_token"}
        return {n for n, _ in self.named_parameters() if n in keys}

    def set_fused_attn(self, enable: bool) -> None:
        """Choose ``F.scaled_dot_product_attention`` (True) or the eager reference path (False)."""
        for m in self.modules():
            if isinstance(m, Attention):
                m.fused_attn = enable


def register_family(prefix: str, cls: type[VideoModel], doc: str, **family_args) -> None:
    """Register ``<prefix>_<size>_patch<p>_<img>`` for every variant: tiny timm-style entry
    points, generated rather than written out 7 times per family."""
    from xvit.models.registry import register_model

    for size, patch, img in VARIANTS:

        def entry(size=size, patch=patch, img=img, **kwargs) -> VideoModel:
            return cls(**variant_args(size, patch, img, {**family_args, **kwargs}))

        entry.__name__ = entry.__qualname__ = f"{prefix}_{size}_patch{patch}_{img}"
        entry.__doc__ = f"{doc} ({size}, patch {patch}, {img} px)."
        register_model(entry)
