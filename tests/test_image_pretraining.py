"""The image-pretraining regime: the synthetic still pictures (a picture is a one-frame clip), an
image ViT trained on them with ``xvit train --config synthetic_images``, and any family initialised
from that checkpoint (backbone loaded, temporal parts and classifier at their init, one log line)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import xvit
from xvit.cli import main
from xvit.data.datasets import build_dataset
from xvit.data.synthetic import IMAGE_DEFAULTS, STILL_CLASS_NAMES, cache_key, generate_synthetic, render_image
from xvit.engine.checkpoint import read_meta, save_model
from xvit.errors import UserError
from xvit.models.weights import load_pretrained

FAMILIES = ("xvit", "vit", "tsm_vit", "timesformer", "joint")


def test_stills_are_deterministic_pngs_one_class_per_shape_and_count(tmp_path):
    info = generate_synthetic(tmp_path / "s", task="images", images_per_class=3, size=32, workers=1, progress=False)
    assert info.classes == STILL_CLASS_NAMES and len(STILL_CLASS_NAMES) == 14
    assert (info.num_train, info.num_val) == (28, 14) and info.flip_label_map == {}
    meta = json.loads((info.root / "meta.json").read_text())
    assert meta["complete"] and meta["params"]["task"] == "images"
    first = info.root / "images" / STILL_CLASS_NAMES[3] / "00001.png"
    pixels = np.array(Image.open(first))
    assert pixels.shape == (32, 32, 3) and np.array_equal(pixels, render_image(3, 1, seed=0, size=32))  # lossless
    assert not np.array_equal(render_image(3, 1, seed=0), render_image(3, 1, seed=1))
    # its own cache key, and the temporal task's key is what it was before the image task existed
    assert cache_key(task="images") != cache_key() == cache_key(task="temporal")
    with pytest.raises(UserError, match="unknown synthetic images dataset parameter"):
        generate_synthetic(tmp_path / "bad", task="images", num_frames=4)


def test_a_picture_is_a_one_frame_clip_for_both_decoders(tmp_path, decoder):
    info = generate_synthetic(tmp_path / "s", task="images", images_per_class=2, size=32, workers=1, progress=False)
    spec = xvit.ClipSpec(num_frames=1, crop_size=32, views=(1, 1))
    ds = build_dataset(
        "val", format="list", root=str(info.root), annotations=str(info.val_list),
        class_names=str(info.classes_file), clip=spec, decoder=decoder,
    )  # fmt: skip
    views, label, _ = ds[0]
    assert views.shape == (1, 3, 1, 32, 32) and label == 0


def _image_checkpoint(path: Path, classes: int = 14) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    src = xvit.create_model("vit_nano_patch8_32", num_frames=1, num_classes=classes)
    save_model(path, src)
    return src.state_dict()


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_starts_from_an_image_vit_checkpoint(tmp_path, family, caplog):
    src = _image_checkpoint(tmp_path / "img.safetensors")
    torch.manual_seed(0)
    fresh = xvit.create_model(f"{family}_nano_patch8_32", num_frames=4, num_classes=5).state_dict()
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger="xvit.models.weights"):
        model = xvit.create_model(
            f"{family}_nano_patch8_32", num_frames=4, num_classes=5, pretrained=tmp_path / "img.safetensors"
        )
    lines = [r.getMessage() for r in caplog.records if "transfer" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]  # one log line: loaded, new, dropped
    assert "kept their own init" in lines[0] and "unused from the file (2): head.fc.bias, head.fc.weight" in lines[0]
    state = model.state_dict()
    backbone = [n for n in src if not n.startswith("head.")]
    assert len(backbone) == 30
    for name in backbone:  # patch and position embeddings, blocks and norm: the checkpoint's
        assert torch.equal(state[name], src[name]), name
    new = [n for n in state if n not in src or n.startswith("head.")]
    for name in new:  # everything an image ViT has not: as the model initialises it
        if family == "timesformer" and (".temporal_attn." in name or ".temporal_norm1." in name):
            # TimeSformer's official init: the temporal attention starts as a copy of the spatial one
            assert torch.equal(
                state[name], src[name.replace("temporal_attn", "attn").replace("temporal_norm1", "norm1")]
            )
        else:
            assert torch.equal(state[name], fresh[name]), name
    zero = [n for n in new if "temp_embed" in n or "time_embed" in n or ".temporal_fc." in n or n == "head.cls_token"]
    assert all(not state[n].any() for n in zero)
    assert model(torch.randn(1, 3, 4, 32, 32)).shape == (1, 5)


def test_another_size_is_a_one_line_error(tmp_path):
    _image_checkpoint(tmp_path / "img.safetensors")
    for name, kwargs in (("xvit_micro_patch8_64", {"img_size": 32}), ("xvit_nano_patch8_32", {"depth": 3})):
        with pytest.raises(UserError, match="not the model's") as err:
            xvit.create_model(name, num_frames=4, num_classes=5, pretrained=tmp_path / "img.safetensors", **kwargs)
        assert "\n" not in str(err.value)
    wide = xvit.create_model("vit_nano_patch8_32", num_frames=1, num_classes=14, embed_dim=48, num_heads=2)
    save_model(tmp_path / "wide.safetensors", wide)
    with pytest.raises(UserError, match=r"in the file but .* in the model"):
        xvit.create_model("xvit_nano_patch8_32", num_classes=5, pretrained=tmp_path / "wide.safetensors")


def test_same_model_and_task_loads_whole_other_classes_keep_all_but_the_classifier(tmp_path):
    torch.manual_seed(2)
    video = xvit.create_model("xvit_nano_patch8_32", num_frames=4, num_classes=5)
    with torch.no_grad():
        video.temp_embed.normal_()
    save_model(tmp_path / "v.safetensors", video)
    same = xvit.create_model("xvit_nano_patch8_32", num_frames=4, num_classes=5, pretrained=tmp_path / "v.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), video.state_dict().values()))
    other = xvit.create_model("xvit_nano_patch8_32", num_frames=4, num_classes=7, pretrained=tmp_path / "v.safetensors")
    src, got = video.state_dict(), other.state_dict()
    classifier = {"head.mlp_head.4.weight", "head.mlp_head.4.bias"}
    assert all(torch.equal(got[n], src[n]) for n in src if n not in classifier)  # the TA head and temp_embed too
    assert got["head.mlp_head.4.weight"].shape == (7, 32)
    with pytest.raises(UserError, match="strict load"):  # xvit.load_model's strict load still refuses it
        load_pretrained(other, tmp_path / "v.safetensors", strict=True)


def test_timm_weights_start_timesformer_temporal_attention_as_the_spatial_one(tmp_path):
    src = _image_checkpoint(tmp_path / "img.safetensors")
    plain = {k: v for k, v in src.items() if not k.startswith("head.")}  # as a timm state dict has them
    from safetensors.torch import save_file

    save_file(plain, tmp_path / "timm.safetensors")
    model = xvit.create_model("timesformer_nano_patch8_32", num_frames=4, num_classes=3)
    report = load_pretrained(model, tmp_path / "timm.safetensors")
    assert report.kind == "timm-vit" and any("TimeSformer's init" in a for a in report.adapted)
    assert torch.equal(model.state_dict()["blocks.1.temporal_attn.proj.weight"], src["blocks.1.attn.proj.weight"])
    assert not model.blocks[1].temporal_fc.weight.any()


def test_pretrain_on_pictures_then_fine_tune_on_video_with_xvit_train(tmp_path):
    cache = tmp_path / "cache"
    common = [
        f"data.cache_dir={cache}", f"data.frame_cache_dir={tmp_path / 'frames'}", "train.threads=1",
        "train.progress=false", "train.tensorboard=false", "train.epochs=1", "model.name=vit_nano_patch8_32",
    ]  # fmt: skip
    pre = tmp_path / "pre"
    code = main(["train", "--config", "synthetic_images", f"run_dir={pre}", *common, "train.batch_size=8",
                 "data.synthetic={task: images, images_per_class: 4, size: 32}"])  # fmt: skip
    assert code == 0
    ckpt = pre / "checkpoints" / "best.safetensors"
    meta = read_meta(ckpt)
    assert meta.model["num_frames"] == 1 and meta.clip.num_frames == 1 and len(meta.clip.class_names) == 14
    assert IMAGE_DEFAULTS["task"] == "images"
    fine = tmp_path / "fine"
    tiny_videos = "data.synthetic={videos_per_class: 3, num_frames: 8, size: 32, val_fraction: 0.34, workers: 1}"
    code = main(["train", "--config", "synthetic", f"run_dir={fine}", *common, f"model.pretrained={ckpt}",
                 "model.name=xvit_nano_patch8_32", "compare=[]", "data.num_frames=4", "train.batch_size=4",
                 tiny_videos])  # fmt: skip
    assert code == 0
    start = load_file(str(ckpt))
    tuned = load_file(str(fine / "checkpoints" / "last.safetensors"))
    assert set(start) - {"head.fc.weight", "head.fc.bias"} < set(tuned)  # the backbone went on training
    assert not torch.equal(start["blocks.0.attn.qkv.weight"], tuned["blocks.0.attn.qkv.weight"])


def test_the_shipped_image_vit_is_the_still_picture_checkpoint(caplog):
    from xvit.models.weights import shipped_weights

    path = shipped_weights()["vit_micro_patch8_64.stills"]
    meta = read_meta(path)
    assert meta.model["name"] == "vit_micro_patch8_64" and meta.model["num_frames"] == 1
    assert list(meta.clip.class_names) == list(STILL_CLASS_NAMES) and meta.clip.num_frames == 1
    assert (meta.train["config"]["data"]["synthetic"] or {})["task"] == "images"
    image_vit, clip = xvit.load_model(path)  # the format every command reads
    assert image_vit(torch.zeros(1, 3, 1, 32, 32)).shape == (1, 14) and clip.crop_size == 32
    with caplog.at_level(logging.INFO, logger="xvit.models.weights"):
        video = xvit.create_model("xvit_micro_patch8_64", num_classes=14, pretrained="vit_micro_patch8_64.stills")
    assert "transfer" in caplog.text
    tuned, shipped = video.state_dict(), load_file(str(path))
    assert torch.equal(tuned["blocks.3.attn.qkv.weight"], shipped["blocks.3.attn.qkv.weight"])
