"""``xvit bench-deploy``: every runtime of a nano X-ViT exported, run in its own process and
reported side by side (clips/s, ratio to eager, export time, file size, peak memory). Speed is
only recorded, never asserted."""

from __future__ import annotations

import json

from xvit.cli import main


def test_bench_deploy_reports_every_runtime_side_by_side(tmp_path, capsys):
    doc_path, work = tmp_path / "deploy.json", tmp_path / "work"
    args = ["bench-deploy", "--sizes", "nano", "--batch-sizes", "1", "2", "--repeats", "1", "--min-seconds", "0"]
    assert (
        main([*args, "--runtimes", "eager", "onnx", "int8", "pt2", "--json", str(doc_path), "--out-dir", str(work)])
        == 0
    )
    text = capsys.readouterr().out
    doc = json.loads(doc_path.read_text())
    rows = {(r["runtime"], r["batch"]): r for r in doc["rows"]}
    assert set(rows) == {(r, b) for r in ("eager", "onnx", "int8", "pt2") for b in (1, 2)}
    for (runtime, _), r in rows.items():
        assert r["clips_per_s"] > 0 and len(r["repeats"]) == 1 and r["calls"] == 1
        assert r["peak_rss_mib"] > r["mem_mib"] > 0 and r["size_bytes"] > 0
        assert r["x_eager"] > 0 and (runtime != "eager" or r["x_eager"] == 1.0)
        assert runtime == "eager" or (r["export_seconds"] > 0 and r["passed"])
    assert rows["int8", 1]["size_bytes"] < rows["onnx", 1]["size_bytes"] and rows["int8", 1]["prob_diff"] < 0.1
    assert {p.name for p in work.iterdir()} >= {
        "xvit_nano_patch8_32.safetensors",
        "xvit_nano_patch8_32.onnx",
        "xvit_nano_patch8_32.int8.onnx",
        "xvit_nano_patch8_32.pt2",
    }
    assert "| xvit_nano_patch8_32 | onnxruntime int8 |" in text and "clips/s b2" in text
    assert doc["environment"]["onnxruntime"] and doc["settings"]["threads"] == 2
