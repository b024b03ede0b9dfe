"""The convolutional systems of supplement Table 1 (SlowFast, I3D-NL, TEA, bLVNet-TAM) at test
sizes: shapes and gradients, the shared interface, their temporal parts, ImageNet init by
inflation, and ``xvit train`` / ``eval`` / ``predict`` / ``export`` on each family (with ViViT's
factorised encoder). Their costs against the published figures: tests/test_flops.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from test_train_e2e import tiny_overrides
from timm.models.res2net import Bottle2neck
from timm.models.resnet import ResNet

import xvit
from xvit.cli import main
from xvit.errors import UserError
from xvit.models.cnn.i3d_nl import inflated_blocks
from xvit.models.cnn.resnet3d import NonLocal3d
from xvit.models.sizes import CNN_MODELS, is_cnn

NANO = [f"{family}_nano" for family in CNN_MODELS]
FRAMES = {"slowfast_nano": (1, 4, 8), "i3d_nl_nano": (1, 4, 8), "tea_nano": (1, 3, 8), "blvnet_tam_nano": (2, 8)}


def nano(name: str, num_frames: int = 8, num_classes: int = 5, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return xvit.create_model(name, num_frames=num_frames, num_classes=num_classes, **kw)


def randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Non-zero values in the zero-initialised parts (residual BNs, non-local and ME outputs)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.ndim == 1 and not p.any():
                p.normal_(0, 0.5)
    return model


def test_registry_lists_the_four_families():
    names = xvit.list_models()
    for family, members in CNN_MODELS.items():
        assert set(members) <= set(names) and all(is_cnn(n) for n in members), family
    assert {"slowfast_r50_8x8", "i3d_nl_r101", "tea_r50", "blvnet_tam_r101"} <= set(names)
    assert not is_cnn("xvit_base_patch16_224") and not is_cnn("vivit_fe_large_patch16_224")


@pytest.mark.parametrize("name", NANO)
def test_forward_backward_and_features(name):
    for frames in FRAMES[name]:
        model = randomise(nano(name, num_frames=frames))
        x = torch.randn(2, 3, frames, 32, 32)
        logits = model(x)
        assert logits.shape == (2, 5)
        logits.square().mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        with torch.no_grad():
            model.eval()
            torch.testing.assert_close(model.forward_head(model.forward_features(x)), model(x))


def test_feature_maps_keep_each_pathways_frames():
    slow, fast = nano("slowfast_nano", num_frames=8).forward_features(torch.randn(1, 3, 8, 32, 32))
    assert slow.shape == (1, 8 * 4 * 8, 4, 1, 1) and fast.shape == (1, 2 * 4 * 8, 8, 1, 1)  # alpha 2, beta 1/4
    assert nano("i3d_nl_nano", num_frames=16).forward_features(torch.randn(1, 3, 16, 32, 32)).shape[2] == 2  # T/8
    assert nano("tea_nano").forward_features(torch.randn(1, 3, 8, 32, 32)).shape[2] == 8
    assert nano("blvnet_tam_nano").forward_features(torch.randn(1, 3, 8, 32, 32)).shape[2] == 4  # one per pair
    with pytest.raises(ValueError, match="even number of frames, got 3"):
        nano("blvnet_tam_nano", num_frames=3)(torch.randn(1, 3, 3, 32, 32))


@pytest.mark.parametrize("name", NANO)
def test_interface(name):
    model = nano(name)
    assert (model.num_frames, model.num_classes, model.img_size) == (8, 5, 32)
    assert model.no_weight_decay() == set() and set(model.describe()) == {"temporal", "temporal_embed", "head"}
    fc = model.get_classifier()
    assert isinstance(fc, torch.nn.Linear) and fc.out_features == 5 and fc is model.head.fc
    model.reset_classifier(7)
    assert model.eval()(torch.randn(1, 3, 8, 32, 32)).shape == (1, 7) and model.model_config["num_classes"] == 7
    assert model.get_classifier().out_features == 7 and model.get_classifier() is not fc
    default = xvit.create_model(name)  # the entry point's own clip length, recorded
    assert default.model_config["num_frames"] == default.num_frames == 8


def test_published_clip_lengths_are_the_defaults():
    with torch.device("meta"):
        assert xvit.create_model("slowfast_r50_8x8").num_frames == 32  # the Fast pathway's frames: 8 Slow x alpha 4
        assert xvit.create_model("slowfast_r101_nl_16x8").num_frames == 64
        assert xvit.create_model("blvnet_tam_r50").num_frames == 16  # 8 x 2


def test_non_local_block_starts_as_identity_and_fused_equals_eager():
    block = NonLocal3d(16).eval()
    x = torch.randn(2, 16, 3, 6, 6)
    torch.testing.assert_close(block(x), x)  # zero-gamma BN after W_z (§4.1)
    torch.nn.init.ones_(block.bn.weight)
    fused = block(x)
    block.fused_attn = False
    assert not torch.allclose(fused, x, atol=1e-3)
    torch.testing.assert_close(block(x), fused, atol=1e-5, rtol=1e-5)
    model = randomise(nano("i3d_nl_nano")).eval()
    v = torch.randn(2, 3, 8, 32, 32)
    fused = model(v)
    model.set_fused_attn(False)
    torch.testing.assert_close(model(v), fused, atol=1e-5, rtol=1e-5)


def test_i3d_inflates_every_other_block_as_the_paper():
    assert inflated_blocks(0, 3) == [3, 3, 3] and inflated_blocks(1, 4) == [3, 1, 3, 1]
    assert sum(k == 3 for k in inflated_blocks(2, 23)) == 12 and inflated_blocks(3, 3) == [1, 3, 1]
    with torch.device("meta"):
        model = xvit.create_model("i3d_nl_r101", num_frames=8)
    assert [int(i) for i in model.layer3.nonlocal_blocks] == [6, 13, 20]
    assert [int(i) for i in model.layer2.nonlocal_blocks] == [1, 3]


def resnet_1111() -> torch.nn.Module:
    return torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, [1, 1, 1, 1])


def test_c2d_from_a_torchvision_resnet_gives_the_image_features(tmp_path):
    """ImageNet init: names map onto torchvision's; on a clip of identical frames the C2D baseline
    (2D kernels, max pools in time) computes exactly the image ResNet's pooled features."""
    torch.manual_seed(0)
    image = randomise(resnet_1111()).eval()
    save_file(image.state_dict(), str(tmp_path / "r.safetensors"))
    video = xvit.create_model(
        "i3d_nl_r50", num_frames=8, blocks=(1, 1, 1, 1), inflate=False, nonlocal_blocks=False,
        pretrained=tmp_path / "r.safetensors",
    ).eval()  # fmt: skip
    frame = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = torch.flatten(image.avgpool(image.layer4(image.layer3(image.layer2(image.layer1(
            image.maxpool(image.relu(image.bn1(image.conv1(frame))))))))), 1)  # fmt: skip
        got = video.pool(video.forward_features(frame.unsqueeze(2).expand(-1, -1, 8, -1, -1)))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_i3d_inflation_repeats_and_rescales_the_2d_kernels(tmp_path):
    image = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, [1, 2, 1, 1])
    save_file(image.state_dict(), str(tmp_path / "r.safetensors"))
    video = xvit.create_model("i3d_nl_r50", num_frames=8, blocks=(1, 2, 1, 1), nonlocal_at=((1,), (0,)))
    report = video.load_image_weights(tmp_path / "r.safetensors")
    stem = video.stem.conv1.weight
    assert stem.shape[2] == 5 and torch.allclose(stem.sum(2), image.conv1.weight, atol=1e-6)
    assert torch.allclose(stem[:, :, 0], image.conv1.weight / 5)
    assert torch.equal(video.layer2.blocks[1].conv1.weight[:, :, 0], image.layer2[1].conv1.weight)  # 2D block
    assert video.layer2.blocks[0].conv1.weight.shape[2] == 3  # an inflated one
    assert sorted(report.unexpected) == ["fc.bias", "fc.weight"] and not report.mismatched
    assert report.missing and all(".nonlocal_blocks." in n or n.startswith("head.") for n in report.missing)
    with pytest.raises(UserError, match="holds no tensor this model can use"):
        save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
        video.load_image_weights(tmp_path / "other.safetensors")


def test_tea_from_an_imagenet_res2net_computes_its_features(tmp_path):
    """At init ME is an identity (zero-gamma BN: A = 0) and the temporal kernels are identities, so
    TEA initialised from timm's Res2Net-50 26w x 4s computes the image model's per-frame features."""
    torch.manual_seed(0)
    image = ResNet(block=Bottle2neck, layers=[1, 2, 1, 1], base_width=26, block_args=dict(scale=4))  # timm's Res2Net
    image = randomise(image).eval()
    save_file(image.state_dict(), str(tmp_path / "res2net.safetensors"))
    video = xvit.create_model("tea_r50", num_frames=3, blocks=(1, 2, 1, 1), pretrained=tmp_path / "res2net.safetensors")
    video.eval()
    clip = torch.randn(1, 3, 3, 64, 64)
    with torch.no_grad():
        expected = torch.stack([image.forward_features(clip[:, :, t]) for t in range(3)], dim=2)
        torch.testing.assert_close(video.forward_features(clip), expected, atol=1e-4, rtol=1e-4)
        randomise(video)  # ME and the temporal kernels at work: frames now see their neighbours
        assert not torch.allclose(video.forward_features(clip), expected, atol=1e-2)


# ----------------------------------------------------------------------------- the commands


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from xvit.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("cnn_synthetic")
    generate_synthetic(root, videos_per_class=1, num_frames=8, size=32, val_fraction=0.0, workers=1, progress=False)
    lines = (root / "train.txt").read_text().splitlines()[:8]
    (root / "sub.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("name", [*NANO, "vivit_fe_nano_patch8_32"])
def test_train_eval_predict_export(name, tiny_data, tmp_path, capsys):
    """The ViTs' commands, unchanged, on each family: a training run, multi-view evaluation of its
    checkpoint, prediction on an mp4, and an ONNX export checked against PyTorch (<= 1e-4)."""
    # model.options={}: the main job's options (shift_div) are X-ViT's, as a user switching family does
    run = tiny_overrides(tiny_data, tmp_path / "run", model__name=name, model__options={})
    assert main(["train", *run]) == 0
    (ckpt,) = sorted((tmp_path / "run").rglob("best.safetensors"))
    model, clip = xvit.load_model(ckpt)
    assert model.model_config["name"] == name and clip.num_frames == 8
    args = ["--workers", "0", "--no-progress", "--views", "2x1", "--out", str(tmp_path / "eval")]
    assert main(["eval", "--checkpoint", str(ckpt), *args]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["num_videos"] == 8
    video = tiny_data / (tiny_data / "sub.txt").read_text().split()[0]
    capsys.readouterr()
    assert main(["predict", str(video), "--checkpoint", str(ckpt), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"][0]["predictions"]) == 5
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and len(report["checks"]) == 4
