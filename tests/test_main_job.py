"""The main job (``xvit train`` with the synthetic config) at a tiny size: the same numbers and
weights on a rerun, compared models that stay what they are, and its summary files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import xvit
from xvit.cli import main
from xvit.engine.checkpoint import save_model
from xvit.models.weights import load_pretrained


def tiny_job(cache: Path, run_dir: Path, *extra: str) -> list[str]:
    """The shipped synthetic config, shrunk: 2 videos per class of 8 frames at 32 px, nano models."""
    return [
        "train", "--config", "synthetic", f"run_dir={run_dir}", f"data.cache_dir={cache / 'synthetic'}",
        "data.synthetic={videos_per_class: 3, num_frames: 8, size: 32, val_fraction: 0.34, workers: 1}",
        f"data.frame_cache_dir={cache / 'frames'}", "data.num_workers=0", "data.num_frames=4",
        "model.name=xvit_nano_patch8_32", "compare=[vit_nano_patch8_32]", "train.epochs=2",
        "train.batch_size=4", "train.threads=1", "train.progress=false", "train.tensorboard=false",
        "eval.batch_size=8", "model.pretrained=null", *extra,
    ]  # fmt: skip


def _metrics(results: list[dict]) -> list[dict]:
    drop = ("run_dir", "train_time_s", "train_clips_per_s", "eval_time_s")
    return [{k: v for k, v in r.items() if k not in drop} for r in results]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("mainjob")
    runs = []
    for name in ("a", "b"):
        assert main(tiny_job(root, root / name, "model.options={head: attn, shift_div: 8}")) == 0
        runs.append(root / name)
    return runs


def test_main_job_is_deterministic(job):
    a, b = job
    ra, rb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert _metrics(ra) == _metrics(rb)
    for model in ("xvit_nano_patch8_32", "vit_nano_patch8_32"):
        wa = load_file(str(a / model / "checkpoints" / "last.safetensors"))
        wb = load_file(str(b / model / "checkpoints" / "last.safetensors"))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_summary_reports_pairs_and_what_each_model_is(job):
    a, _ = job
    results = json.loads((a / "summary.json").read_text())
    xv, vit = results
    assert xv["describe"]["head"].startswith("temporal attention") and "rho 25%" in xv["describe"]["temporal"]
    # model.options belong to model.name: the frame ViT baseline stays a frame ViT
    assert set(vit["options"]) <= {"drop_rate", "drop_path_rate"} and vit["describe"]["temporal"].startswith("none")
    assert vit["describe"]["head"] == "temporal average pooling"
    for r in results:
        assert len(r["pairs"]) == 5 and r["pair_order_acc"] is not None
        records = (a / r["model"] / "metrics.jsonl").read_text().splitlines()
        val = [json.loads(ln) for ln in records if '"kind": "val"' in ln]  # every evaluation's pair order
        assert val and val[-1]["pair_order_acc"] == pytest.approx(r["pair_order_acc"], abs=0.05)
        assert r["train_acc"] is not None and r["params_m"] > 0 and r["train_clips_per_s"] > 0
        assert len(r["confusion"]) == 14
    text = (a / "summary.md").read_text()
    assert "pair order acc" in text and "moving_left / moving_right" in text
    assert (a / "summary.png").read_bytes()[:4] == b"\x89PNG"


def test_print_config_validates_model_names(capsys):
    assert main(["train", "--print-config", "compare=[vit_nano_patch8_23]"]) == 2
    assert "vit_nano_patch8_32" in capsys.readouterr().err
    assert main(["train", "--print-config"]) == 0


def test_pretrained_mismatch_is_a_python_warning(tmp_path):
    src = xvit.create_model("xvit_nano_patch8_32", num_frames=4, num_classes=3)
    save_model(tmp_path / "m.safetensors", src)
    other = xvit.create_model("vit_nano_patch8_32", num_frames=4, num_classes=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_pretrained(other, tmp_path / "m.safetensors", strict=False)
    assert any("unused from the file" in str(w.message) for w in caught)


def test_bench_train_measures_compute_loader_and_training(job, tmp_path, capsys):
    root = job[0].parent  # the tiny job's synthetic data and frame cache
    argv = tiny_job(root, tmp_path / "bench")[3:]  # the overrides, without "train --config synthetic"
    out = tmp_path / "bench.json"
    code = main(["bench-train", "--config", "synthetic", "--steps", "3", "--warmup", "1", "--repeats", "2",
                 "--snapshots", "2", "--json", str(out), *argv])  # fmt: skip
    assert code == 0
    doc = json.loads(out.read_text())
    assert set(doc["median"]) == {"compute", "loader", "train"} and all(v > 0 for v in doc["median"].values())
    assert all(len(r) == 2 for r in doc["clips_per_s"].values()) and doc["settings"]["cache"] == "disk"
    # the ratio comes from the unrounded medians, the JSON's medians are rounded to 0.1 clips/s
    assert doc["train_over_compute"] == pytest.approx(doc["median"]["train"] / doc["median"]["compute"], rel=0.05)
    snap = doc["snapshot"]  # the cost of preemption safety: the step-boundary check, a snapshot and its size
    assert snap["check_us"] > 0 and len(snap["snapshot_s"]) == 2 and snap["snapshot_mb"] > 0.1
    printed = capsys.readouterr().out
    assert "train / compute" in printed and "step-boundary check" in printed
