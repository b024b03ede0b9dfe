"""``xvit export``: every family and X-ViT option exports to torch.export (pt2) and ONNX, and the
files, as written and loaded back (onnxruntime for ONNX), agree with eager PyTorch on a random
clip and on a decoded mp4; the ONNX graph holds no scatter op (the mixing is slices + concat);
the clip spec travels in the file; int8 quantization keeps it and runs in predict; a failed check
removes the file."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from videos import write_index_video

import xvit
from xvit.cli import main
from xvit.data.clip import ClipSpec
from xvit.engine.checkpoint import CheckpointMeta, save_model
from xvit.engine.deploy import export as xexport
from xvit.engine.deploy.onnx_model import CLIP_KEY, INPUT_KEY, MODEL_KEY, OUTPUT_KEY, QUANT_KEY, OnnxModel, require
from xvit.engine.eval.predict import video_views
from xvit.errors import UserError
from xvit.models.layers import Attention, mix_offsets, shift_cat, temporal_shift

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
SCATTER_OPS = {"Scatter", "ScatterND", "ScatterElements"}  # what slice assignments become in ONNX


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
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert not {n.op_type for n in graph.node} & SCATTER_OPS  # the export form: slices and concatenation
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, 4, 32, 32]
    assert not model.export_form and not any(m.export_form for m in model.modules() if isinstance(m, Attention))
    # the clip spec and the model travel in both files
    assert ort.clip == CLIP and ort.config["name"] == name
    assert ClipSpec.from_dict(json.loads(xexport.read_pt2_metadata(tmp_path / "m.pt2")[CLIP_KEY])) == CLIP


@pytest.mark.parametrize("T", [1, 2, 3, 8])
@pytest.mark.parametrize("offsets,fold", [(mix_offsets(1), 3), (mix_offsets(2), 2), ((3, -3), 2), ((1,), 0)])
def test_shift_cat_is_the_zero_padded_shift(offsets, fold, T):
    """The export form of the mixing equals the shift training uses, bit for bit, down to clips
    shorter than an offset (a group all zeros) and an empty fold."""
    x = torch.randn(2, T, 5, 2, 12)  # (B, T, N, parts, C): the K/V view the mixing shifts
    y = temporal_shift(x, offsets, fold)
    torch.testing.assert_close(shift_cat(x, offsets, fold), y, rtol=0, atol=0)
    for i, off in enumerate(offsets):  # no source frame inside the clip: zeros (was uninitialised memory)
        assert abs(off) < T or not y[..., i * fold : (i + 1) * fold].any()


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
    monkeypatch.setattr(xexport, "compare", lambda model, run, x: (3e-4, 0.0, len(x)))
    out = tmp_path / "bad.pt2"
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "pt2", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "ABOVE the tolerance" in captured.out and "removed" in captured.err and not out.exists()


def test_int8_export_keeps_the_clip_spec_and_predicts_like_the_checkpoint(checkpoint, video, tmp_path, capsys):
    out = tmp_path / "m.int8.onnx"
    args = ["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--quantize", "int8", "--out", str(out)]
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["quantize"] == "int8" and report["size_bytes"] < report["fp32_size_bytes"]
    runtimes = [c["runtime"] for c in report["checks"]]
    assert runtimes == ["exported program"] * 2 + ["onnxruntime (CPU)"] * 2 + ["onnxruntime int8 (CPU)"] * 2
    fp32 = [c for c in report["checks"] if not c["quantized"]]
    int8 = [c for c in report["checks"] if c["quantized"]]
    assert all(c["max_diff"] <= xexport.TOLERANCE for c in fp32)  # the graph quantized was checked in fp32
    assert all(0 < c["prob_diff"] <= report["int8_tolerance"] for c in int8) and report["top1_agree"][1] == 4
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops and not ops & SCATTER_OPS
    ort = OnnxModel(out)
    assert ort.clip == CLIP and ort.config["name"] == "xvit_nano_patch8_32" and "QInt8" in ort.quantization
    props = {p.key for p in onnx.load(str(out)).metadata_props}
    assert props == {CLIP_KEY, MODEL_KEY, INPUT_KEY, OUTPUT_KEY, QUANT_KEY}  # the fp32 export's metadata, carried over
    # xvit predict runs it like any ONNX file: same classes, probabilities close to the checkpoint's
    docs = []
    for flag, path in (("--checkpoint", checkpoint), ("--model", out)):
        assert main(["predict", str(video), flag, str(path), "--json", "--topk", "5"]) == 0
        docs.append(json.loads(capsys.readouterr().out)["results"][0]["predictions"])
    want, got = ({t["class"]: t["prob"] for t in d} for d in docs)
    assert set(got) == set(CLASSES) and all(abs(got[c] - want[c]) < 0.02 for c in CLASSES)


def test_int8_export_fails_above_its_tolerance(checkpoint, tmp_path, capsys):
    out = tmp_path / "bad.int8.onnx"
    args = ["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--quantize", "int8", "--out", str(out)]
    assert main([*args, "--int8-tolerance", "1e-6"]) == 1
    captured = capsys.readouterr()
    assert "int8: max |logit difference|" in captured.out and "ABOVE the tolerance 1e-06" in captured.out
    assert "removed" in captured.err and not out.exists()
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "pt2", "--quantize", "int8"]) == 2
    assert "--format onnx" in capsys.readouterr().err


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
