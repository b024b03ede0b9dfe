"""Loading weights (paper §4, ImageNet initialisation): timm image ViTs in every file format, the public X-ViT reference
code's checkpoints (logits reproduced by an independent timm-based re-implementation of that
code), temporal-embedding resizing, strict loading of xvit's own checkpoints, no unpickling."""

import logging

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

import xvit
from xvit.engine.checkpoint import load_model, save_model
from xvit.errors import UserError
from xvit.models.weights import load_pretrained

NANO = dict(embed_dim=32, depth=2, num_heads=2, patch_size=8)


def timm_vit(img=32, classes=10):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=img, num_classes=classes, **NANO).eval()


@pytest.mark.parametrize("fmt", [".pth", ".bin", ".safetensors"])
@pytest.mark.parametrize("with_classifier", [True, False])
def test_timm_checkpoint_initialises_every_family(tmp_path, fmt, with_classifier, caplog):
    vit = timm_vit()
    state = {k: v for k, v in vit.state_dict().items() if with_classifier or not k.startswith("head.")}
    path = tmp_path / f"vit{fmt}"
    save_file(state, path) if fmt == ".safetensors" else torch.save(state, path)
    for family in ("xvit", "vit", "tsm_vit", "timesformer", "joint"):
        model = xvit.create_model(f"{family}_nano_patch8_32", num_frames=4, num_classes=3)
        with caplog.at_level(logging.INFO, logger="xvit.models.weights"):
            report = load_pretrained(model, path)
        for name in (
            "cls_token",
            "pos_embed",
            "patch_embed.proj.weight",
            "blocks.1.attn.qkv.weight",
            "blocks.0.mlp.fc2.bias",
            "norm.weight",
        ):
            assert name in report.loaded
            torch.testing.assert_close(model.state_dict()[name], state[name])
        assert not report.mismatched
        assert sorted(report.unexpected) == (["head.bias", "head.weight"] if with_classifier else [])
        assert all(not n.startswith(("blocks.", "patch_embed", "norm.")) or "temporal" in n for n in report.missing)
        assert "kept their own init" in report.summary()


def test_pos_embed_is_resampled_for_another_resolution(tmp_path):
    path = tmp_path / "vit.pth"
    torch.save(timm_vit(img=32).state_dict(), path)
    model = xvit.create_model("xvit_nano_patch8_32", num_frames=2, num_classes=3, img_size=64)
    report = load_pretrained(model, path)
    assert model.pos_embed.shape == (1, 1 + 64, 32) and "pos_embed" in report.loaded
    assert any("pos_embed" in a for a in report.adapted)
    assert model(torch.randn(1, 3, 2, 64, 64)).shape == (1, 3)


def _shift(t, fold, T):
    """Reference-code semantics written independently: (B*T, N, D) channels [0,f) from t+1, [f,2f) from t-1."""
    x = t.view(-1, T, *t.shape[1:])
    out = x.clone()
    out[:, :, :, :fold] = torch.roll(x[:, :, :, :fold], -1, dims=1)
    out[:, -1, :, :fold] = 0
    out[:, :, :, fold : 2 * fold] = torch.roll(x[:, :, :, fold : 2 * fold], 1, dims=1)
    out[:, 0, :, fold : 2 * fold] = 0
    return out.view_as(t)


class ShiftedQKV(nn.Module):
    """Wraps a timm qkv Linear: mixes the K and V parts of its output across frames."""

    def __init__(self, linear, fold, T):
        super().__init__()
        self.linear, self.fold, self.T = linear, fold, T

    def forward(self, x):
        q, k, v = self.linear(x).chunk(3, dim=-1)
        return torch.cat([q, _shift(k, self.fold, self.T), _shift(v, self.fold, self.T)], dim=-1)


def reference_checkpoint(path, classes=5, dim=32, heads=2):
    """A PySlowFast-layout checkpoint of the reference code, and its forward (built on timm)."""
    vit = timm_vit(classes=0)
    torch.manual_seed(1)
    temp_embed = torch.randn(1, 8, 1, dim) * 0.1
    head_block = timm.models.vision_transformer.Block(dim, heads, qkv_bias=False, norm_layer=nn.LayerNorm).eval()
    mlp_head = nn.Sequential(
        nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Dropout(0.5), nn.Linear(dim, classes)
    ).eval()
    cls = torch.randn(1, 1, dim) * 0.1
    state = {f"base_model.{k}": v for k, v in vit.state_dict().items()}
    state["base_model.temp_embed"] = temp_embed
    state.update({f"consensus.temporal_encoder.0.{k}": v for k, v in head_block.state_dict().items()})
    state.update({f"consensus.mlp_head.{k}": v for k, v in mlp_head.state_dict().items()})
    state["consensus.cls_token"] = cls
    state["new_fc.weight"], state["new_fc.bias"] = (
        torch.randn(classes, dim),
        torch.zeros(classes),
    )  # unused by the reference
    torch.save({"model_state": {f"module.{k}": v for k, v in state.items()}, "epoch": 30}, path)

    def forward(video, shift_div=4):
        B, C, T, H, W = video.shape
        for blk in vit.blocks:
            if not isinstance(blk.attn.qkv, ShiftedQKV):
                blk.attn.qkv = ShiftedQKV(blk.attn.qkv, dim // shift_div, T)
            blk.attn.qkv.T = T
        frames = video.transpose(1, 2).reshape(B * T, C, H, W)
        x = vit._pos_embed(vit.patch_embed(frames))  # (BT, 1+N, D)
        x = (x.view(-1, 8, *x.shape[1:]) + temp_embed).view_as(x)  # the 8-frame embedding, reused for frames 8-15
        x = vit.norm(vit.blocks(x))[:, 0].view(B, T, dim)
        x = head_block(torch.cat([cls.expand(B, -1, -1), x], dim=1))
        return mlp_head(x[:, 0])

    return forward


@pytest.mark.parametrize("frames", [8, 16])
def test_reference_checkpoint_gives_the_reference_logits(tmp_path, frames):
    path = tmp_path / "checkpoint_epoch_00030.pyth"
    reference = reference_checkpoint(path)
    model = xvit.create_model("xvit_nano_patch8_32", num_frames=frames, num_classes=5, pretrained=str(path)).eval()
    video = torch.randn(2, 3, frames, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(video), reference(video), atol=1e-5, rtol=1e-5)
    report = load_pretrained(model, path)
    assert (
        sorted(report.unexpected) == ["new_fc.bias", "new_fc.weight"] and not report.missing and not report.mismatched
    )


def test_reference_temporal_embedding_is_tiled_to_16_frames(tmp_path):
    path = tmp_path / "ref.pyth"
    reference_checkpoint(path)
    model = xvit.create_model("xvit_nano_patch8_32", num_frames=16, num_classes=5, pretrained=str(path))
    torch.testing.assert_close(model.temp_embed[:, 8:], model.temp_embed[:, :8])


def test_temporal_embedding_is_interpolated_for_another_frame_count(tmp_path):
    src = xvit.create_model("xvit_nano_patch8_32", num_frames=8, num_classes=3)
    with torch.no_grad():
        src.temp_embed.copy_(torch.arange(8.0).view(1, 8, 1, 1).expand(1, 8, 1, 32))
    save_model(tmp_path / "m8.safetensors", src)
    dst = xvit.create_model(
        "xvit_nano_patch8_32", num_frames=15, num_classes=3, pretrained=str(tmp_path / "m8.safetensors")
    )
    expected = torch.linspace(0, 7, 15).view(1, 15, 1, 1).expand(1, 15, 1, 32)
    torch.testing.assert_close(dst.temp_embed.detach(), expected)


def test_own_checkpoints_load_strictly_and_report_mismatches(tmp_path):
    m = xvit.create_model("xvit_nano_patch8_32", num_frames=4, num_classes=3)
    save_model(tmp_path / "m.safetensors", m, {"data": {"class_names": ["a", "b", "c"]}})
    again, clip = load_model(tmp_path / "m.safetensors")
    assert clip.class_names == ("a", "b", "c")
    for k, v in m.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
    # a strict load (xvit.load_model's) names every mismatch; without strict=True a checkpoint of
    # another task or model initialises instead (tests/test_image_pretraining.py)
    wrong = xvit.create_model("xvit_nano_patch8_32", num_frames=4, num_classes=7)
    with pytest.raises(UserError, match=r"head.mlp_head.4.weight file \(3, 32\) vs model \(7, 32\)"):
        load_pretrained(wrong, tmp_path / "m.safetensors", strict=True)
    other = xvit.create_model("vit_nano_patch8_32", num_frames=4, num_classes=3)
    with pytest.raises(UserError, match="unused from the file"):
        load_pretrained(other, tmp_path / "m.safetensors", strict=True)


class Payload:
    pass


def test_pickled_objects_are_never_loaded(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": Payload()}}, path)
    with pytest.raises(UserError, match="holds pickled Python objects") as err:
        load_pretrained(xvit.create_model("vit_nano_patch8_32"), path)
    assert "\n" not in str(err.value) and "weights_only=False" not in str(err.value)  # one line, no unsafe advice


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        xvit.create_model("vit_nano_patch8_32", pretrained=str(tmp_path / "nope.pth"))
