"""The package's shape: a torch-free command line start, one registry of names, the typed clip
spec and checkpoint metadata (written, stored and read back once; older files still read)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import xvit
from xvit.data.clip import ClipSpec, parse_view_list, parse_views
from xvit.engine.checkpoint import CheckpointMeta, read_meta, save_model
from xvit.errors import UserError
from xvit.models.sizes import model_names


def test_cli_start_imports_no_torch():
    code = "import sys; from xvit.cli import main; main(['models']); main([]); assert 'torch' not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "xvit_base_patch16_224" in proc.stdout and "joint_nano_patch8_32" in proc.stdout


def test_static_names_are_the_registry():
    assert model_names() == xvit.list_models() and len(model_names()) == 6 * 7 + 13  # 6 ViT families x 7 sizes, 13 CNNs
    assert model_names("tsm_*") == xvit.list_models("tsm_*")


def test_views_parsed_in_one_place():
    assert parse_views("2x3") == (2, 3) and parse_views((1, 3)) == (1, 3)
    assert parse_view_list("1x3, 2x3,1x3") == [(1, 3), (2, 3)]
    for bad in ("0x3", "2y3", "3", ""):
        with pytest.raises(UserError, match="TxS|at least 1|give TxS"):
            parse_view_list(bad) if bad == "" else parse_views(bad)


def test_clip_spec_is_frozen_validated_and_round_trips():
    clip = ClipSpec(
        num_frames=4, sampling="dense", frame_stride=2, crop_size=32, short_side=36, views="2x3", class_names=["a", "b"]
    )
    assert clip.views == (2, 3) and clip.class_names == ("a", "b") and clip.test_short_side == 36
    assert ClipSpec.from_dict(json.loads(json.dumps(clip.to_dict()))) == clip
    with pytest.raises(AttributeError):
        clip.num_frames = 8
    with pytest.raises(UserError, match="sampling 'random'"):
        ClipSpec(sampling="random")
    with pytest.raises(UserError, match="short_side 16 is smaller than crop_size 32"):
        ClipSpec(crop_size=32, short_side=16)
    with pytest.raises(UserError, match="unknown keys"):
        ClipSpec.from_dict({"num_frame": 8})


def test_checkpoint_carries_the_clip_spec_and_old_files_still_load(tmp_path):
    model = xvit.create_model("xvit_nano_patch8_32", num_frames=4, num_classes=2, img_size=32)
    clip = ClipSpec(num_frames=4, crop_size=32, views=(2, 1), class_names=("a", "b"))
    meta = CheckpointMeta(model=model.model_config, clip=clip, data={"format": "list", "root": "/data"})
    save_model(tmp_path / "new.safetensors", model, meta)
    assert read_meta(tmp_path / "new.safetensors") == meta
    again, got = xvit.load_model(tmp_path / "new.safetensors")
    assert got == clip and not again.training
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model.eval()(x))
    # a checkpoint as the code before ClipSpec wrote it: the pipeline spread over meta["data"]
    old = {
        "class_names": ["a", "b"],
        "num_frames": 4,
        "sampling": "dense",
        "frame_stride": 2,
        "crop_size": 32,
        "test_short_side": None,
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "format": "ssv2",
        "root": "/d",
        "val_annotations": "/d/val.json",
        "test_views": "2x3",
        "num_clips": 2,
        "num_crops": 3,
    }
    save_model(tmp_path / "old.safetensors", model, {"data": old, "train": {"epoch": 1, "step": 5}})
    legacy = read_meta(tmp_path / "old.safetensors")
    assert legacy.clip == ClipSpec(
        num_frames=4, sampling="dense", frame_stride=2, crop_size=32, views=(2, 3), class_names=("a", "b")
    )
    assert legacy.data == {"format": "ssv2", "root": "/d", "val_annotations": "/d/val.json"}
    assert legacy.train["step"] == 5
    # without recorded views: the paper's default for the format (SSv2: 2x3)
    save_model(tmp_path / "older.safetensors", model, {"data": {"format": "ssv2"}})
    assert read_meta(tmp_path / "older.safetensors").clip.views == (2, 3)


def test_models_command_takes_a_pattern(capsys):
    from xvit.cli import main

    assert main(["models", "tsm_vit_*"]) == 0
    assert capsys.readouterr().out.split() == model_names("tsm_vit_*")


def test_reversed_pairs_resolve_by_name_or_label():
    from xvit.engine.eval.metrics import resolve_pairs

    names = ["left", "right", "still"]
    assert resolve_pairs([["left", "right"], [2, 0]], names) == [(0, 1), (2, 0)]
    with pytest.raises(UserError, match="class 'up' is not one of the 3 classes"):
        resolve_pairs([["left", "up"]], names)
    with pytest.raises(UserError, match="is not a pair"):
        resolve_pairs([["left"]], names)


def test_clip_spec_names_fall_back_to_label_numbers():
    assert ClipSpec(class_names=("a", "b")).names(2) == ["a", "b"]
    assert ClipSpec(class_names=("a", "b")).names(3) == ["0", "1", "2"]
