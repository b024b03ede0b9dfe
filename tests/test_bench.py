"""``xvit bench`` end to end at a tiny size on CPU: the table, every JSON field, the plot, the
peers (with and without HF transformers) and the errors a user can meet. No timing assertions."""

import json
import sys

import pytest
import torch

from xvit.bench import ALIASES, DEFAULT_MODELS
from xvit.bench.report import ISA_FLAGS, cpu_isa
from xvit.bench.runner import Pool, Runner
from xvit.bench.spec import BenchConfig, ModelSpec
from xvit.bench.stats import control_warnings, trim_warnings
from xvit.cli import main
from xvit.models.layers import temporal_shift

TINY = ["--size", "nano", "--patch", "8", "--device", "cpu", "--threads", "1", "--repeats", "1", "--warmup", "0"]
PHASE_FIELDS = {
    "kind", "batch", "iters", "wall_s", "cpu_s", "mem_bytes", "error", "median_s", "min_s", "max_s",
    "spread", "cpu_median_s", "videos_per_s", "latency_ms", "peak_mem_mb", "faults", "faults_median", "trimmed",
}  # fmt: skip
ROW_FIELDS = {"label", "family", "name", "options", "frames", "img_size", "params", "gmacs", "attn", "layout", "phases"}


def test_bench_end_to_end(tmp_path, capsys):
    out_json, out_png = tmp_path / "bench.json", tmp_path / "plots" / "bench.png"
    sizes = ["--frames", "2", "3", "--batch-sizes", "1", "2"]
    rc = main(["bench", *TINY, *sizes, "--json", str(out_json), "--plot", str(out_png)])
    assert rc == 0
    text = capsys.readouterr().out
    settings = ("device: cpu", "dtype: fp32", "threads: 1", "compile: off", "sdpa: on", "frames: 2 3")
    for setting in (*settings, "resolution: 32 px", "torch "):
        assert setting in text
    assert "| model | T | params (M) | GFLOPs | infer b1 videos/s" in text and "train b2 clips/s" in text
    assert "| xvit / vit | 2 |" in text and "| xvit-avg / vit | 3 |" in text
    assert "A/A control (xvit measured twice, as xvit and xvit#2), T=2: infer_b1 " in text
    assert "ISA: " in text

    doc = json.loads(out_json.read_text())
    settings = doc["settings"]
    assert settings["frames"] == [2, 3] and settings["batch_sizes"] == [1, 2] and settings["train_batch_size"] == 2
    assert settings["settle"] == 1 and settings["warmup"] == 0 and settings["keep_heap"] is True
    assert {"torch", "cpu", "cpu_isa", "memory_method", "date_utc"} <= set(doc["environment"])
    assert isinstance(doc["environment"]["cpu_isa"], list)
    rows = {(r["label"], r["frames"]): r for r in doc["results"]}
    assert set(rows) == {(m, t) for m in [*DEFAULT_MODELS, "xvit#2"] for t in (2, 3)}  # + the A/A control
    for (label, frames), row in rows.items():
        assert ROW_FIELDS <= set(row), label
        assert row["params"] > 0 and row["gmacs"] > 0 and row["options"] == ALIASES[label.removesuffix("#2")][1]
        assert set(row["phases"]) == {"infer_b1", "infer_b2", "train_b2"}
        for ph in row["phases"].values():
            assert PHASE_FIELDS <= set(ph) and ph["error"] is None, (label, frames, ph)
            assert len(ph["wall_s"]) == len(ph["cpu_s"]) == 1
            assert ph["median_s"] > 0 and ph["videos_per_s"] > 0 and ph["latency_ms"] > 0
            assert ph["peak_mem_mb"] is not None
    # the mixing costs no FLOPs: X-ViT with the frame ViT's head counts exactly the frame ViT's
    assert rows[("xvit-avg", 2)]["gmacs"] == pytest.approx(rows[("vit", 2)]["gmacs"])
    pairs = {(r["a"], r["b"], r["frames"]) for r in doc["ratios"]}
    assert {("xvit", "vit", 2), ("xvit-avg", "vit", 3), ("timesformer", "xvit", 2), ("joint", "xvit", 3)} <= pairs
    assert ("xvit#2", "xvit", 3) in pairs
    for r in doc["ratios"]:
        assert set(r["phases"]) == {"infer_b1", "infer_b2", "train_b2"}
        assert all(p["wall"] > 0 and p["cpu_paired_min"] <= p["cpu_paired_max"] for p in r["phases"].values())
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_only_the_memory_pass_trims_the_heap_the_timed_passes_reuse_it():
    """The memory pass gives freed heap back (for its peak) and pays for faulting it in again;
    the other passes keep the heap (a bench worker tells glibc to keep freed memory), so their
    timed iterations fault far less."""
    spec, cfg = ModelSpec("vit", "xvit", "vit_micro_patch8_64"), BenchConfig(threads=1, img_size=64)
    pool = Pool([spec], cfg)
    try:
        assert "error" not in pool.call("vit", "load", 4)
        trimmed = [pool.call("vit", "phase", "train", 2, 1, 0, True) for _ in range(3)]
        kept = [pool.call("vit", "phase", "train", 2, 1, 0, False) for _ in range(3)]
    finally:
        pool.close()
    assert all(t["mem"] > 0 for t in trimmed) and all(k["mem"] is None for k in kept)
    faults = [t["faults"] for t in trimmed], [k["faults"] for k in kept]
    assert max(faults[1]) < 0.2 * min(faults[0]), faults


def test_a_phase_runs_its_settle_iterations_before_the_timed_ones():
    runner = Runner(ModelSpec("vit", "xvit", "vit_nano_patch8_32"), BenchConfig(threads=1, img_size=32))
    runner.load(2)
    calls = []
    runner.model.register_forward_hook(lambda *_: calls.append(1))
    out = runner.phase("train", 2, 2, 1)
    assert len(calls) == 3 and out["wall"] > 0 and out["mem"] > 0 and out["faults"] >= 0


def test_peers_missing_is_a_clear_message(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now fails
    out_json = tmp_path / "b.json"
    one = ["--frames", "2", "--batch-sizes", "1", "--no-train"]
    rc = main(["bench", *TINY, "--models", "vit", "--peers", *one, "--no-aa-control", "--json", str(out_json)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "need transformers" in err and "pip install 'xvit[bench]'" in err and "running without them" in err
    doc = json.loads(out_json.read_text())
    assert [r["label"] for r in doc["results"]] == ["vit"] and doc["environment"]["transformers"] is None
    # only peers asked for, and none can run: an error, not an empty table
    assert main(["bench", *TINY, "--models", "hf-vivit", "--frames", "2", "--no-train"]) == 2
    assert "no model left" in capsys.readouterr().err


def test_peers_match_our_models(tmp_path):
    """HF TimeSformer and ViViT (tubelet 1) at our size: same FLOPs as ours, measured beside them."""
    pytest.importorskip("transformers")
    out_json = tmp_path / "b.json"
    models = ["timesformer", "joint", "hf-timesformer", "hf-vivit"]
    sizes = ["--frames", "2", "--batch-sizes", "1", "--train-batch-size", "1"]
    rc = main(["bench", *TINY, "--models", *models, *sizes, "--json", str(out_json)])
    assert rc == 0
    rows = {r["label"]: r for r in json.loads(out_json.read_text())["results"]}
    assert all(ph["error"] is None and ph["median_s"] > 0 for r in rows.values() for ph in r["phases"].values())
    assert rows["hf-timesformer"]["gmacs"] == pytest.approx(rows["timesformer"]["gmacs"])
    assert rows["hf-timesformer"]["params"] == rows["timesformer"]["params"]
    assert rows["hf-vivit"]["gmacs"] == pytest.approx(rows["joint"]["gmacs"])
    assert rows["hf-timesformer"]["attn"] == "eager" and rows["hf-vivit"]["attn"] == "sdpa"


def test_aa_control_warns_outside_two_percent():
    ratios = [
        {"a": "vit#2", "b": "vit", "frames": 8, "phases": {"infer_b1": {"wall": 1.015}, "train_b4": {"wall": 0.97}}},
        {"a": "xvit", "b": "vit", "frames": 8, "phases": {"infer_b1": {"wall": 1.5}}},  # not the control
    ]
    warnings = control_warnings(ratios, "vit")
    assert len(warnings) == 1 and "T=8 train_b4: 0.970, outside 1.00 +- 0.02" in warnings[0]


def test_a_worker_that_gave_its_heap_back_is_named():
    row = {"label": "joint", "frames": 16, "phases": {"infer_b1": {"trimmed": 0}, "train_b1": {"trimmed": 2}}}
    (line,) = trim_warnings([row, {"label": "vit", "frames": 16, "phases": {"train_b1": {"trimmed": 0}}}])
    assert line.startswith("joint T=16: RAM ran low") and "after train_b1" in line


def test_cpu_isa_reads_the_vector_flags():
    flags = cpu_isa()
    assert set(flags) <= set(ISA_FLAGS)
    with open("/proc/cpuinfo") as f:
        text = f.read()
    assert ("avx2" in flags) == (" avx2 " in text.replace("\n", " "))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "xvit", "resnet50"], "unknown model 'resnet50'"),
        (["--size", "huge"], "unknown --size 'huge'"),
        (["--size", "nano", "--patch", "16"], "no xvit model of size 'nano' with patch 16"),
        (["--no-train", "--no-infer"], "leave nothing to measure"),
        (["--frames", "0"], "--frames must be >= 1"),
        (["--train-batch-size", "0"], "--train-batch-size must be >= 1"),
        pytest.param(
            ["--device", "cuda"],
            "CUDA is not available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has a GPU"),
        ),
    ],
)
def test_bad_options_are_clear_errors(argv, message, capsys):
    assert main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "shape, offsets, fold",
    [((2, 5, 3, 8), (1, -1), 2), ((1, 6, 2, 2, 12), (1, -1, 2, -2), 3), ((1, 2, 4), (1, -1), 2)],
)
def test_temporal_shift_gradient_is_the_opposite_shift(shape, offsets, fold):
    """The mixing step's own backward (one reverse shift) equals autograd's numerical gradient."""
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: temporal_shift(t, offsets, fold), (x,))
    y = temporal_shift(x, offsets, fold)
    assert y[:, -1, ..., :fold].abs().sum() == 0 and torch.equal(y[:, 0, ..., :fold], x[:, 1, ..., :fold])
