"""The six messages of the crash-consistency issue: each is one line naming the value and what to
do, with a non-zero exit and no traceback; a too-short video is warned about when predicted."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_train_e2e import tiny, train, trained  # noqa: F401 - the module's fixtures

import xvit
from xvit.cli import main
from xvit.data.clip import ClipSpec
from xvit.engine.checkpoint import CheckpointMeta, save_model
from xvit.engine.config import load_config
from xvit.engine.train.resume import find_checkpoint
from xvit.errors import UserError


def _one_line_error(capsys, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("xvit ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_overrides_after_a_flag(capsys):
    assert main(["train", "train.epochs=2", "--print-config", "seed=3"]) == 0
    cfg = capsys.readouterr().out
    assert "seed: 3" in cfg and "epochs: 2" in cfg
    with pytest.raises(SystemExit):  # a real unknown flag is still argparse's error
        main(["train", "--print-config", "--no-such-flag"])
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_yaml_number_for_a_text_key(capsys):
    with pytest.raises(UserError, match=r"eval.views '0x3'.*'1x3'"):
        load_config(None, ["eval.views=0x3"])
    _one_line_error(capsys, main(["train", "eval.views=0x3", "--print-config"]), "eval.views", "0x3")


def test_pretrained_checkpoint_of_another_size(tiny, tmp_path, capsys):  # noqa: F811
    # another model of the same size transfers (tests/test_image_pretraining.py); another size cannot
    other = xvit.create_model("vit_micro_patch8_64", num_frames=8, num_classes=14, img_size=32)
    ckpt = tmp_path / "vit.safetensors"
    save_model(ckpt, other, CheckpointMeta(model=other.model_config, clip=ClipSpec(num_frames=8, crop_size=32)))
    rc = train(tiny, tmp_path / "r", model__pretrained=str(ckpt))
    _one_line_error(capsys, rc, "vit.safetensors", "same width and depth")


class Payload:
    pass


def test_pickle_as_pretrained(tiny, tmp_path, capsys):  # noqa: F811
    path = tmp_path / "weights.pth"
    torch.save({"model": {"w": Payload()}}, path)
    line = _one_line_error(capsys, train(tiny, tmp_path / "r", model__pretrained=str(path)), "pickled", "safetensors")
    assert "weights_only=False" not in line


def test_resume_checkpoint_whose_weights_do_not_fit_its_metadata(tiny, trained, tmp_path, capsys):  # noqa: F811
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    weights, _ = find_checkpoint(run)
    with safe_open(str(weights), framework="pt") as f:
        metadata = f.metadata()
    state = load_file(str(weights))
    state.pop(sorted(state)[0])  # a tensor missing: not the model its metadata describes
    weights.unlink()  # (a hard link to last.safetensors: write a new file, do not modify the shared one)
    save_file(state, str(weights), metadata=metadata)
    _one_line_error(capsys, train(tiny, run), "do not fit the model", str(weights.parent))


def test_image_named_mp4_is_predicted_with_a_warning(tmp_path, capsys, caplog):
    model = xvit.create_model("xvit_nano_patch8_32", num_frames=4, num_classes=3, img_size=32)
    ckpt = tmp_path / "m.safetensors"
    clip = ClipSpec(num_frames=4, crop_size=32, views=(1, 1), class_names=("a", "b", "c"))
    save_model(ckpt, model, CheckpointMeta(model=model.model_config, clip=clip))
    image = tmp_path / "photo.mp4"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(image, format="PNG")
    with caplog.at_level("WARNING", logger="xvit.data"):
        assert main(["predict", str(image), "--checkpoint", str(ckpt), "--device", "cpu"]) == 0
    assert "photo.mp4 has 1 frame, fewer than the 4 a clip needs: its frames are repeated" in caplog.text
