"""``xvit eval`` end to end: a nano checkpoint, tiny mp4 files, reports, the views sweep, mismatches."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from videos import write_garbage, write_index_video

import xvit
from xvit.cli import main
from xvit.engine.checkpoint import save_model

CLASSES = ["left", "right", "still"]
NUM_FRAMES, SIZE = 4, 32


def make_data(root: Path, labels: list[int], bad: int | None = None) -> Path:
    """``root/videos/v{i}.mp4`` (tiny index videos) + ``root/val.txt``; video ``bad`` is not a video."""
    (root / "videos").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, y in enumerate(labels):
        path = root / "videos" / f"v{i}.mp4"
        if i == bad:
            write_garbage(path, 512)
        else:
            write_index_video(path, num_frames=10 + 2 * i, height=SIZE, width=40, gop=4)
        lines.append(f"videos/v{i}.mp4 {y}")
    (root / "val.txt").write_text("\n".join(lines) + "\n")
    return root / "val.txt"


def make_checkpoint(path: Path, root: Path, **data_overrides) -> Path:
    """A nano X-ViT with 3 classes saved with the meta that ``xvit train`` writes."""
    torch.manual_seed(0)
    model = xvit.create_model("xvit_nano_patch8_32", num_frames=NUM_FRAMES, num_classes=len(CLASSES), img_size=SIZE)
    data = {
        "class_names": CLASSES,
        "num_frames": NUM_FRAMES,
        "sampling": "segment",
        "frame_stride": 2,
        "crop_size": SIZE,
        "test_short_side": None,
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "format": "list",
        "root": str(root),
        "val_annotations": str(root / "val.txt"),
        "test_views": "1x3",
        "num_clips": 1,
        "num_crops": 3,
        **data_overrides,
    }
    save_model(path, model, {"data": data, "train": {"epoch": 1, "step": 10}})
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Data (5 videos, the 3rd unreadable) and a checkpoint next to it."""
    root = tmp_path_factory.mktemp("evaldata")
    make_data(root, [0, 1, 2, 0, 1], bad=2)
    return make_checkpoint(root / "run" / "best.safetensors", root), root


def _csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_eval_writes_reports(run, capsys):
    ckpt, root = run
    assert main(["eval", "--checkpoint", str(ckpt), "--workers", "0", "--batch-size", "2", "--no-progress"]) == 0
    out_dir = ckpt.parent / "eval_1x3"  # default: next to the checkpoint, named by the views
    stdout = capsys.readouterr().out
    assert "top-1" in stdout and "mean class acc" in stdout and "v2.mp4" in stdout  # missing video listed

    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["views"] == "1x3" and metrics["num_clips"] == 1 and metrics["num_crops"] == 3
    assert metrics["num_videos"] == 4 and metrics["num_missing"] == 1
    assert metrics["missing"] == [{"index": 2, "path": str(root / "videos" / "v2.mp4")}]
    assert set(metrics["per_class_acc"]) == set(CLASSES) and metrics["top5"] == 100.0  # k clamped to 3

    conf = _csv(out_dir / "confusion.csv")
    assert conf[0][1:] == CLASSES and [r[0] for r in conf[1:]] == CLASSES
    counts = torch.tensor([[int(v) for v in r[1:]] for r in conf[1:]])
    assert counts.sum(1).tolist() == [2, 2, 0]  # true labels of the readable videos: 0, 1, 0, 1
    assert metrics["per_class_acc"]["still"] is None and metrics["num_classes_present"] == 2

    preds = json.loads((out_dir / "predictions.json").read_text())
    rows = _csv(out_dir / "predictions.csv")
    assert (
        len(preds) == 4
        and len(rows) == 5
        and rows[0][:7] == ["index", "path", "label", "label_name", "predicted", "predicted_name", "correct"]
    )
    assert [p["index"] for p in preds] == [0, 1, 3, 4]
    for p in preds:
        probs = [t["prob"] for t in p["topk"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-4
        assert p["predicted_name"] == p["topk"][0]["class"] and p["label_name"] == CLASSES[p["label"]]
    top1 = 100 * sum(p["correct"] for p in preds) / 4
    assert metrics["top1"] == pytest.approx(top1, abs=1e-3)
    assert (counts.diagonal().sum() / 4 * 100).item() == pytest.approx(top1)
    assert (out_dir / "confusion.png").read_bytes()[:4] == b"\x89PNG"

    # xvit predict's pipeline gives the same scores as the evaluation for the same views
    from xvit.engine.checkpoint import load_model
    from xvit.engine.eval.predict import predict_video

    model, clip = load_model(ckpt)
    got = predict_video(model, clip, root / "videos" / "v3.mp4", views=(1, 3), topk=3)
    want = next(p for p in preds if p["index"] == 3)["topk"]
    assert [c for c, _ in got] == [t["class"] for t in want]
    assert [p for _, p in got] == pytest.approx([t["prob"] for t in want], abs=1e-5)


def test_eval_views_sweep(run, tmp_path, capsys):
    ckpt, _ = run
    out = tmp_path / "sweep"
    code = main(
        [
            "eval",
            "--checkpoint",
            str(ckpt),
            "--views",
            "1x1,2x1,3x3",
            "--out",
            str(out),
            "--workers",
            "0",
            "--no-progress",
        ]
    )
    assert code == 0
    rows = list(csv.DictReader(open(out / "views.csv")))
    assert [r["views"] for r in rows] == ["1x1", "2x1", "3x3"]
    assert [int(r["num_views"]) for r in rows] == [1, 2, 9]
    assert all(int(r["num_videos"]) == 4 and int(r["num_missing"]) == 1 for r in rows)
    for r in rows:  # each setting's own reports agree with the table
        m = json.loads((out / r["views"] / "metrics.json").read_text())
        assert m["views"] == r["views"] and float(r["top1"]) == pytest.approx(m["top1"], abs=0.01)
    md = (out / "views.md").read_text()
    assert md.count("\n| ") == 5 and "| 3x3 | 9 |" in md  # header, rule, 3 rows
    assert (out / "views.png").read_bytes()[:4] == b"\x89PNG"
    assert "views study" in capsys.readouterr().out


def test_eval_class_mismatch_is_a_user_error(tmp_path, capsys):
    root = tmp_path / "data5"
    make_data(root, [0, 4, 1])  # labels up to 4: a 5-class dataset
    ckpt = make_checkpoint(tmp_path / "ckpt.safetensors", root)
    assert main(["eval", "--checkpoint", str(ckpt), "--workers", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "label 4" in err and "predicts 3 classes" in err and str(ckpt) in err

    # named classes that are not the checkpoint's: a folder dataset with 2 other classes
    for name in ("cat", "dog"):
        (tmp_path / "folder" / name).mkdir(parents=True)
    (tmp_path / "folder" / "cat" / "a.mp4").write_bytes(b"")
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(ckpt),
                "--format",
                "folder",
                "--data-root",
                str(tmp_path / "folder"),
                "--workers",
                "0",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "cat" in err and "predicts 3 classes (left, right, still)" in err


def test_eval_frames_mismatch_and_bad_paths(tmp_path, capsys):
    root = tmp_path / "data"
    make_data(root, [0, 1])
    ckpt = make_checkpoint(tmp_path / "ckpt.safetensors", root, num_frames=8)
    assert main(["eval", "--checkpoint", str(ckpt), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "['num_frames']=8" in err and f"built for num_frames={NUM_FRAMES}" in err

    ckpt = make_checkpoint(tmp_path / "ok.safetensors", root)
    assert main(["eval", "--checkpoint", str(ckpt), "--annotations", str(tmp_path / "nope.txt")]) == 2
    assert "nope.txt" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(ckpt), "--views", "2y3"]) == 2
    assert "2y3" in capsys.readouterr().err


def test_eval_runs_onnx_exports_and_bench_deploy_measures_what_int8_costs(run, tmp_path, capsys):
    """``xvit bench-deploy --accuracy``: the checkpoint, its fp32 and its int8 export evaluated on the
    same videos; ``xvit eval --model`` on the files it wrote gives the same figures."""
    ckpt, _ = run
    work, doc_path = tmp_path / "deploy", tmp_path / "accuracy.json"
    args = ["bench-deploy", "--accuracy", str(ckpt), "--out-dir", str(work), "--json", str(doc_path)]
    assert main(args) == 0
    assert "| onnxruntime int8 |" in capsys.readouterr().out
    doc = json.loads(doc_path.read_text())
    eager, fp32, int8 = doc["rows"]
    assert [r["runtime"] for r in doc["rows"]] == ["PyTorch eager", "onnxruntime fp32", "onnxruntime int8"]
    assert all(r["num_videos"] == 4 for r in doc["rows"]) and doc["views"] == "1x3"
    assert fp32["top1"] == eager["top1"] and fp32["same_prediction"] == 100.0
    assert int8["size_bytes"] < fp32["size_bytes"] and doc["checks"]["onnxruntime int8"]["max_prob_diff"] > 0
    for name, row in (("best.onnx", fp32), ("best.int8.onnx", int8)):
        out = tmp_path / name
        assert main(["eval", "--model", str(work / name), "--workers", "0", "--no-progress", "--out", str(out)]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["top1"] == pytest.approx(row["top1"], abs=1e-3) and metrics["num_missing"] == 1
    assert "top-1" in capsys.readouterr().out
    assert main(["eval", "--model", str(work / "best.onnx"), "--device", "cuda"]) == 2
    assert "onnxruntime on the CPU" in capsys.readouterr().err


def test_pair_order_accuracy_comes_from_the_config_or_the_built_in_pairs():
    from xvit.data.clip import ClipSpec
    from xvit.engine.checkpoint import CheckpointMeta
    from xvit.engine.eval.evaluate import reversed_pairs

    clip = ClipSpec(num_frames=4, crop_size=32)
    names = ["still", "moving_right", "moving_left", "approaching", "receding"]
    configured = {"config": {"eval": {"reversed_pairs": [["still", "receding"]]}}}
    assert reversed_pairs(CheckpointMeta(model={}, clip=clip, train=configured), names) == [(0, 4)]
    built_in = reversed_pairs(CheckpointMeta(model={}, clip=clip), names)  # the synthetic benchmark's, by name
    assert built_in == [(2, 1), (3, 4)]
    assert reversed_pairs(CheckpointMeta(model={}, clip=clip), CLASSES) == []
