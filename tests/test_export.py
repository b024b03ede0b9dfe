"""``xvit export``: every family and X-ViT option exports to torch.export (pt2) and ONNX, and the
files, as written and loaded back (onnxruntime for ONNX), agree with eager PyTorch on a random
clip and on a decoded mp4; the clip spec travels in the file; a failed check removes the file."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from videos import write_index_video

import xvit
from xvit.cli import main
from xvit.data.clip import ClipSpec
from xvit.engine import export as xexport
from xvit.engine.checkpoint import CheckpointMeta, save_model
from xvit.engine.onnx_model import CLIP_KEY, MODEL_KEY, OnnxModel, require
from xvit.engine.predict import video_views
from xvit.errors import UserError

CLASSES = ["a", "b", "c", "d", "e"]
CLIP = ClipSpec(
    num_frames=4, sampling="dense", frame_stride=2, crop_size=32, short_side=36, views=(2, 1), class_names=CLASSES
)
# Every family, and X-ViT's mixing options spread over three models: kv / k / v, t_w 2, chosen
# mixing blocks, summary token, both heads.
CONFIGS = {
    "xvit-kv-attn": ("xvit_nano_patch8_32", {}),
    "xvit-k-tw2-summary-avg-odd": (
        "xvit_nano_patch8_32",
        dict(mix="k", t_w=2, shift_div=8, summary_token=True, head="avg", mix_blocks="odd"),
    ),
    "xvit-v-block0-attn2-eager": ("xvit_nano_patch8_32", dict(mix="v", mix_blocks=[0], head_depth=2, fused_attn=False)),
    "vit": ("vit_nano_patch8_32", {}),
    "tsm_vit": ("tsm_vit_nano_patch8_32", {}),
    "timesformer": ("timesformer_nano_patch8_32", {}),
    "joint": ("joint_nano_patch8_32", {}),
}


def build(name: str, options: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    model = xvit.create_model(name, num_frames=4, num_classes=len(CLASSES), img_size=32, **options).eval()
    with torch.no_grad():  # non-zero temporal parts, so that a broken temporal path shows
        for pname, p in model.named_parameters():
            if "temp" in pname or "time_embed" in pname or "temporal_fc" in pname or "cls_token" in pname:
                p.normal_(0, 0.5)
    return model


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_index_video(tmp_path_factory.mktemp("export") / "clip.mp4", num_frames=24, height=36, width=48)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_every_family_exports_to_pt2_and_onnx_within_tolerance(config, video, tmp_path):
    name, options = CONFIGS[config]
    model = build(name, options)
    program = xexport.export_program(model, CLIP.num_frames, CLIP.crop_size)
    assert not [n for n in program.graph.nodes if "autograd" in str(n.target).lower()]  # inference ops only
    meta = xexport.export_metadata({"name": name, "num_frames": 4, "options": options}, CLIP)
    xexport.save_pt2(program, tmp_path / "m.pt2", meta)
    xexport.save_onnx(xexport.to_onnx(program, meta), tmp_path / "m.onnx")
    ort = OnnxModel(tmp_path / "m.onnx")
    inputs = {"random": torch.randn(3, 3, 4, 32, 32), "video": video_views(video, CLIP)}  # batch 3 and 2
    runners = {"pt2": torch.export.load(str(tmp_path / "m.pt2")).module(), "onnxruntime": ort}
    checks = xexport.verify_export(model, runners, inputs)
    assert len(checks) == 4 and all(c.max_diff <= xexport.TOLERANCE for c in checks), checks
    assert ort(inputs["random"][:1]).shape == (1, len(CLASSES))  # dynamic batch, down to 1
    dims = onnx.load(str(tmp_path / "m.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, 4, 32, 32]
    # the clip spec and the model travel in both files
    assert ort.clip == CLIP and ort.config["name"] == name
    assert ClipSpec.from_dict(json.loads(xexport.read_pt2_metadata(tmp_path / "m.pt2")[CLIP_KEY])) == CLIP


def test_a_wrong_export_fails_the_check(video):
    """The check can fail: another model's program differs from this one by far more than 1e-4."""
    model, other = build("xvit_nano_patch8_32", {}), build("xvit_nano_patch8_32", dict(mix="k"))
    program = xexport.export_program(other, 4, 32)
    checks = xexport.verify_export(model, {"pt2": program.module()}, {"video": video_views(video, CLIP)})
    assert checks[0].max_diff > 1e-3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("export_ckpt")
    model = build("xvit_nano_patch8_32", {})
    model.model_config = {"name": "xvit_nano_patch8_32", "num_frames": 4, "num_classes": 5, "img_size": 32}
    save_model(d / "model.safetensors", model, CheckpointMeta(model=model.model_config, clip=CLIP))
    return d / "model.safetensors"


def test_export_cli_pt2_json_default_path_and_frames(checkpoint, capsys):
    """(The ONNX command line is run by tests/test_timeline.py's fixture.)"""
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "pt2", "--json", "--frames", "6"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["path"] == str(checkpoint.with_suffix(".pt2"))
    assert {c["input"] for c in report["checks"]} == {"random clip", "decoded H.264 clip (2x1 views)"}
    assert [c["shape"] for c in report["checks"]] == [[2, 3, 6, 32, 32]] * 2
    meta = xexport.read_pt2_metadata(checkpoint.with_suffix(".pt2"))
    assert ClipSpec.from_dict(json.loads(meta[CLIP_KEY])) == CLIP.replace(num_frames=6)
    assert json.loads(meta[MODEL_KEY])["num_frames"] == 6


def test_export_cli_fails_above_tolerance_and_removes_the_file(checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(xexport, "compare", lambda model, run, x: 3e-4)
    out = tmp_path / "bad.pt2"
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "pt2", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "ABOVE the tolerance" in captured.out and "removed" in captured.err and not out.exists()


def test_export_errors_are_one_line(checkpoint, tmp_path, capsys, monkeypatch):
    assert main(["export", "--checkpoint", str(tmp_path / "nope.safetensors"), "--format", "onnx"]) == 2
    assert "nope.safetensors" in capsys.readouterr().err
    with pytest.raises(UserError, match="--frames 0"):
        xexport.export_checkpoint(checkpoint, "pt2", frames=0)
    (tmp_path / "x.onnx").write_bytes(b"not onnx")
    with pytest.raises(UserError, match="not a loadable ONNX model"):
        OnnxModel(tmp_path / "x.onnx")
    monkeypatch.setattr("importlib.import_module", lambda name: (_ for _ in ()).throw(ImportError(name)))
    with pytest.raises(UserError, match=r"pip install 'xvit\[export\]'"):
        require("onnxruntime")
