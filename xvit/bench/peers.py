"""The peers of supplement Table 1 from HF transformers (``pip install 'xvit[bench]'``):
TimeSformer (divided space-time) and ViViT (model 1) built from a config at our size, randomly
initialised and called like our models. transformers is optional, so it is imported only here
and only when a peer is used."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from xvit.bench.spec import BenchConfig
from xvit.errors import UserError
from xvit.models.flops import count_gmacs, count_params
from xvit.models.sizes import SIZES


def transformers_version() -> str | None:
    """The installed transformers' version, None if it cannot be imported."""
    try:
        import transformers
    except ImportError:
        return None
    return transformers.__version__


def peers_available() -> bool:
    return transformers_version() is not None


def import_peer_classes() -> None:
    """Import HF's video model code (lazily loaded by transformers) ahead of the first model."""
    import transformers as hf

    hf.TimesformerForVideoClassification, hf.VivitForVideoClassification  # noqa: B018  (lazy imports)


class PeerAdapter(nn.Module):
    """An HF video classifier called like ours: ``(B, T, C, H, W)`` pixels -> logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.net(pixel_values=pixel_values).logits


def peer_model(alias: str, cfg: BenchConfig, frames: int, attn: str) -> nn.Module:
    """HF TimeSformer (divided) or ViViT (model 1) at our size, randomly initialised."""
    import transformers as hf

    s = SIZES[cfg.size]
    common = dict(
        image_size=cfg.img_size,
        num_frames=frames,
        hidden_size=s["embed_dim"],
        num_hidden_layers=s["depth"],
        num_attention_heads=s["num_heads"],
        intermediate_size=4 * s["embed_dim"],
        hidden_act="gelu",
        num_labels=cfg.classes,
    )
    if alias == "hf-timesformer":
        config = hf.TimesformerConfig(patch_size=cfg.patch, attention_type="divided_space_time", **common)
        cls = hf.TimesformerForVideoClassification
    else:
        if frames % cfg.vivit_tubelet:
            raise UserError(
                f"ViViT tubelet {cfg.vivit_tubelet} does not divide {frames} frames; pick --vivit-tubelet 1"
            )
        config = hf.VivitConfig(tubelet_size=[cfg.vivit_tubelet, cfg.patch, cfg.patch], **common)
        cls = hf.VivitForVideoClassification
    config._attn_implementation = attn
    return PeerAdapter(cls(config))


def peer_attn(alias: str, sdpa: bool) -> str:
    """HF's TimeSformer has only the eager attention; ViViT has SDPA."""
    return "sdpa" if sdpa and alias == "hf-vivit" else "eager"


def build_peer(alias: str, cfg: BenchConfig, frames: int) -> tuple[nn.Module, dict]:
    """The peer on the CPU plus ``{"attn", "layout", "gmacs", "params"}`` (GMACs per view,
    counted through the eager attention on the meta device, like ``xvit.models.flops``)."""
    with torch.device("meta"):
        meta = peer_model(alias, cfg, frames, "eager")
        gmacs = count_gmacs(meta, torch.empty(1, frames, 3, cfg.img_size, cfg.img_size))
    attn = peer_attn(alias, cfg.sdpa)
    model = peer_model(alias, cfg, frames, attn)
    return model, {"attn": attn, "layout": "BTCHW", "gmacs": gmacs, "params": count_params(model)}
