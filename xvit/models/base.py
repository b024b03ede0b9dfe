"""What every model shares (paper §3.1: a ViT applied to the frames of a clip): the constructor
arguments of the ViT sizes, patch + position embeddings with timm's parameter names (so ImageNet
ViT checkpoints load as they are), stochastic depth, the final norm, weight init, the head
interface, and ``register_family`` (one timm-style entry point per size)."""

from __future__ import annotations

import torch
from timm.layers import PatchEmbed, trunc_normal_
from torch import Tensor, nn

from xvit.models.layers import Attention
from xvit.models.registry import register_model
from xvit.models.sizes import SIZES, VARIANTS, variant_name


class VideoModel(nn.Module):
    """Base of every model: patch embedding, CLS token, spatial position embedding, dropout,
    stochastic-depth rates, final norm, init, and the timm-style interface (``forward_features`` /
    ``forward_head`` / ``reset_classifier`` / ``no_weight_decay`` / ``set_fused_attn``).

    A family's constructor takes its own options and passes these shared ViT arguments on;
    it builds ``self.blocks`` (using ``self.drop_path_rates``) and ``self.head``, then calls
    ``init_weights()``.
    """

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
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        self.num_frames = num_frames
        self.num_classes = num_classes
        self.embed_dim = self.num_features = embed_dim
        self.depth, self.num_heads, self.mlp_ratio, self.qkv_bias = depth, num_heads, mlp_ratio, qkv_bias
        self.drop_rate, self.attn_drop_rate = drop_rate, attn_drop_rate
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        # stochastic depth decay rule: linearly increasing from 0 to drop_path_rate over the blocks
        self.drop_path_rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.export_form = False  # set_export_form: the graph form an exporter traces

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
        for m in self.modules():
            if m is not self and hasattr(m, "init_weights"):
                m.init_weights()  # a module's own init on top of the generic one (TemporalAttentionHead)
        self._zero_init()

    def _zero_init(self) -> None:
        for name, p in self.named_parameters():
            if name in self.zero_init_params():
                nn.init.zeros_(p)

    def zero_init_params(self) -> set[str]:
        return set()

    temporal_exchange = "none"  # how frames exchange information, in words (result tables)

    def describe(self) -> dict[str, str]:
        """What exchanges information across frames, and the head, in words (for result tables)."""
        return {"temporal": self.temporal_exchange, "temporal_embed": "yes", "head": "video CLS token + linear"}

    def use_tubelets(self, tubelet: int) -> None:
        """Embed ``tubelet x patch x patch`` tubes instead of per-frame patches (ViViT's "tubelet
        embedding", Arnab et al. 2021 §3.2): one 2D patch embedding over the tubelet's frames
        stacked as channels, so ``T / tubelet`` token frames."""
        if tubelet < 1 or self.num_frames % tubelet:
            raise ValueError(f"tubelet {tubelet} must be >= 1 and divide num_frames {self.num_frames}")
        self.tubelet = tubelet
        if tubelet > 1:
            in_chans = self.patch_embed.proj.in_channels * tubelet
            self.patch_embed = PatchEmbed(self.img_size, self.patch_size, in_chans, self.embed_dim)

    def stack_tubelets(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, C*k, T/k, H, W): the frames of each tubelet of k as channels."""
        B, C, T, H, W = x.shape
        k = getattr(self, "tubelet", 1)
        if k == 1:
            return x
        if T % k:
            raise ValueError(f"{T} frames cannot be cut into tubelets of {k} frames")
        x = x.view(B, C, T // k, k, H, W).transpose(2, 3)  # (B, C, k, T/k, H, W): frame t*k+j at [j, t]
        return x.reshape(B, C * k, T // k, H, W)  # (B, C*k, T', H, W)

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

    def get_classifier(self) -> nn.Module:
        """The head's final classifier (timm's interface; never taken from another task's weights)."""
        return self.head.get_classifier()

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

    def set_export_form(self, enable: bool) -> None:
        """Trace-friendly forms of the temporal exchange (True) or the training/eager ones (False).

        True computes X-ViT's K/V mixing and TSM-ViT's token shift as slices and concatenation
        (``layers.shift_cat``), so an exported graph holds no scatter ops; False (the default) keeps
        the in-place mixing, whose memory training relies on. Same outputs either way.
        """
        self.export_form = enable
        for m in self.modules():
            if isinstance(m, Attention):
                m.export_form = enable


def variant_args(size: str, patch: int, img: int, overrides: dict) -> dict:
    """Size arguments of a variant, with the caller's overrides winning."""
    return {**SIZES[size], "patch_size": patch, "img_size": img, **overrides}


def register_family(prefix: str, cls: type[VideoModel], doc: str, **family_args) -> None:
    """Register ``<prefix>_<size>_patch<p>_<img>`` for every variant: tiny timm-style entry
    points, generated rather than written out 7 times per family."""
    for size, patch, img in VARIANTS:

        def entry(size=size, patch=patch, img=img, **kwargs) -> VideoModel:
            return cls(**variant_args(size, patch, img, {**family_args, **kwargs}))

        entry.__name__ = entry.__qualname__ = variant_name(prefix, size, patch, img)
        entry.__doc__ = f"{doc} ({size}, patch {patch}, {img} px)."
        register_model(entry)
