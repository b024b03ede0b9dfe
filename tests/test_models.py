"""Every registered transformer at a tiny size: shapes, backward, odd frame counts, SDPA == eager
(the convolutional families: tests/test_cnn_models.py)."""

import pytest
import torch

import xvit
from xvit.errors import UserError
from xvit.models.sizes import is_cnn

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
ALL = [n for n in xvit.list_models() if not is_cnn(n)]
PER_FRAME = [n for n in ALL if n.split("_")[0] in ("xvit", "vit", "tsm")]
TUBELET = [n for n in ALL if n.startswith("vivit_fe_")]  # 2-frame tubelets: even frame counts


def tiny(name, num_frames=4, num_classes=5, **kw):
    torch.manual_seed(0)
    return xvit.create_model(name, num_frames=num_frames, num_classes=num_classes, **{**TINY, **kw})


def test_registry_lists_every_family_and_size():
    for family in ("xvit", "vit", "tsm_vit", "timesformer", "joint", "vivit_fe"):
        for variant in (
            "tiny_patch16_224",
            "small_patch16_224",
            "base_patch16_224",
            "large_patch16_224",
            "base_patch32_224",
            "nano_patch8_32",
        ):
            assert f"{family}_{variant}" in ALL
    assert xvit.list_models("xvit_*") == [n for n in ALL if n.startswith("xvit_")]


def test_unknown_model_suggests_a_name():
    with pytest.raises(UserError, match="xvit_base_patch16_224"):
        xvit.create_model("xvit_base_patch16_244")


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("frames", [1, 2, 3, 16])
def test_forward_backward_shapes(name, frames):
    if name in TUBELET and frames % 2:
        with pytest.raises(ValueError, match="tubelet 2 must be >= 1 and divide num_frames"):
            tiny(name, num_frames=frames)
        return
    model = tiny(name, num_frames=frames)
    x = torch.randn(2, 3, frames, 32, 32)
    logits = model(x)
    assert logits.shape == (2, 5)
    logits.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    feats = model.forward_features(x)
    if name in PER_FRAME:
        assert feats.shape == (2, frames, 1 + 16, 32)
    elif name in TUBELET:  # the temporal CLS and one representation per 2-frame tubelet
        assert feats.shape == (2, 1 + frames // 2, 32)
    else:
        assert feats.shape == (2, 1 + frames * 16, 32)
    assert torch.allclose(model.forward_head(feats), logits, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_interface(name):
    model = tiny(name)
    assert (model.num_frames, model.num_classes, model.img_size) == (4, 5, 32)
    names = dict(model.named_parameters())
    nwd = model.no_weight_decay()
    assert nwd and nwd <= set(names) and "cls_token" in nwd and "pos_embed" in nwd
    model.reset_classifier(7)
    assert model(torch.randn(1, 3, 4, 32, 32)).shape == (1, 7)
    assert model.model_config["num_classes"] == 7


@pytest.mark.parametrize("name", ALL + ["xvit_nano_patch8_32+summary"])
def test_sdpa_equals_eager(name):
    name, _, extra = name.partition("+")
    model = tiny(name, **({"summary_token": True} if extra else {})).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    fused = model(x)
    model.set_fused_attn(False)
    eager = model(x)
    torch.testing.assert_close(fused, eager, atol=1e-5, rtol=1e-5)


def test_bad_input_size_is_a_clear_error():
    with pytest.raises(ValueError, match="built for 32x32"):
        tiny("xvit_nano_patch8_32")(torch.randn(1, 3, 4, 64, 64))


def test_registered_sizes_follow_vit():
    m = xvit.create_model("xvit_base_patch16_224", num_classes=10)
    assert (m.embed_dim, len(m.blocks), m.blocks[0].attn.num_heads, m.patch_size, m.img_size) == (768, 12, 12, 16, 224)
    m = xvit.create_model("joint_base_patch32_224", num_classes=10)
    assert (m.embed_dim, m.patch_size, m.num_patches) == (768, 32, 49)


def test_options_reach_the_attention():
    m = tiny("xvit_nano_patch8_32", depth=4, shift_div=8, t_w=1, mix="k", mix_blocks="odd")
    assert [b.attn.mix for b in m.blocks] == [None, "k", None, "k"]
    assert m.blocks[1].attn.fold == 32 // 8
    assert all(b.attn.mix is None for b in tiny("vit_nano_patch8_32").blocks)
    assert tiny("tsm_vit_nano_patch8_32").tsm_fold == 32 // 8
    assert type(tiny("xvit_nano_patch8_32", head="avg").head).__name__ == "TemporalAvgHead"
    assert len(tiny("xvit_nano_patch8_32", head_depth=2).head.temporal_encoder) == 2


def test_temporal_embedding_is_zero_initialised():
    m = tiny("xvit_nano_patch8_32")
    assert m.temp_embed.shape == (1, 4, 1, 32) and not m.temp_embed.any()
    assert not m.head.cls_token.any()
    ts = tiny("timesformer_nano_patch8_32")
    assert not ts.time_embed.any() and all(not b.temporal_fc.weight.any() for b in ts.blocks)
