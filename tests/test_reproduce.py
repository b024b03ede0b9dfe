"""``xvit reproduce table1|table2|fig1`` end to end at a tiny size (nano models, 3 videos per
class, one epoch, one or two seeds): the files, the tables, resuming, and the study helpers."""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import xvit
from xvit.cli import main
from xvit.data.clip import ClipSpec
from xvit.engine.checkpoint import save_model
from xvit.engine.config import load_config
from xvit.studies import common, fig1, gap
from xvit.studies import table2 as table2_study
from xvit.studies.common import StudyDir, Unit, compare, eta, mean_std, pm, run_units


def tiny(cache: Path) -> list[str]:
    """Overrides that shrink the built-in benchmark and its recipe to seconds."""
    return [
        "model.name=xvit_nano_patch8_32", f"data.cache_dir={cache / 'synthetic'}",
        "data.synthetic={videos_per_class: 3, num_frames: 8, size: 32, val_fraction: 0.34, workers: 1}",
        f"data.frame_cache_dir={cache / 'frames'}", "data.num_frames=4", "train.epochs=1",
        "train.batch_size=4", "train.threads=1", "train.progress=false", "train.tensorboard=false",
        "eval.batch_size=8", "model.pretrained=null",
    ]  # fmt: skip


SCRATCH = ["--regimes", "scratch", "--lrs", "1e-3"]  # one regime, one rate: no sweep


@pytest.fixture(scope="module")
def table2(tmp_path_factory):
    root = tmp_path_factory.mktemp("table2")
    out = root / "study"
    assert main(["reproduce", "table2", *SCRATCH, "--seeds", "2", "--out", str(out), *tiny(root)]) == 0
    return root, out


def test_table2_writes_every_run_the_table_and_the_verdict(table2):
    _, out = table2
    res = json.loads((out / "results.json").read_text())
    assert {p.name for p in out.iterdir()} >= {"results.json", "results.md", "table2.png", "study.json", "runs"}
    assert len(res["runs"]) == 10 and {r["seed"] for r in res["runs"]} == {0, 1}
    assert list(res["regimes"]) == ["scratch"] and res["regimes"]["scratch"]["model_pretrained"] is None
    rows = res["regimes"]["scratch"]["rows"]
    models = [r["model"] for r in rows]
    assert models == [
        "xvit_nano_patch8_32", "xvit_nano_patch8_32", "tsm_vit_nano_patch8_32", "tsm_vit_nano_patch8_32",
        "vit_nano_patch8_32",
    ]  # fmt: skip
    heads = [r["describe"]["head"] for r in rows]
    assert heads[0].startswith("temporal attention") and heads[1] == "temporal average pooling"
    assert heads[2].startswith("temporal attention") and heads[3] == heads[4] == "temporal average pooling"
    for row in rows:
        assert row["top1"]["n"] == 2 and row["top1"]["std"] is not None and row["train_acc"]["n"] == 2
        assert row["lr"] == 1e-3 and [s["lr"] for s in row["sweep"]] == [1e-3]
    assert [c["metric"] for c in res["regimes"]["scratch"]["ordering"]] == ["top1", "pair_order_acc"] * 2
    md = (out / "results.md").read_text()
    for figure in ("63.4", "61.6", "60.8"):
        assert figure in md
    assert "X-ViT + temporal attention > X-ViT + temporal pooling (top-1)" in md
    assert res["machine"]["cpu_count"] >= 1 and res["seconds"] > 0


def test_table2_rerun_reads_its_records_and_more_seeds_add_runs(table2, capsys):
    root, out = table2
    before = json.loads((out / "results.json").read_text())
    capsys.readouterr()
    assert main(["reproduce", "table2", *SCRATCH, "--seeds", "2", "--out", str(out), *tiny(root)]) == 0
    err = capsys.readouterr().err
    assert "5 of 5 units already done" in err and "[table2 seeds] 5 of 5 units already done" in err
    after = json.loads((out / "results.json").read_text())
    assert after["regimes"] == before["regimes"]


def test_table2_refuses_a_directory_with_other_settings(table2, capsys):
    root, out = table2
    assert (
        main(["reproduce", "table2", *SCRATCH, "--seeds", "1", "--out", str(out), *tiny(root), "train.epochs=2"]) == 2
    )
    assert "holds a table2 study with other settings" in capsys.readouterr().err


def test_a_killed_study_continues_from_its_finished_runs(table2, tmp_path, capsys):
    root, _ = table2
    out = tmp_path / "study"
    args = ["reproduce", "table2", *SCRATCH, "--seeds", "1", "--out", str(out), *tiny(root)]
    assert main(args) == 0
    (out / "records" / "scratch_tsm_pool_lr0.001_s0.json").unlink()  # as if killed during that run
    (out / "runs" / "scratch_tsm_pool_lr0.001_s0" / "results.json").unlink()
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "4 of 5 units already done" in err and "4/5: scratch: TSM-ViT + temporal pooling" in err
    assert json.loads((out / "results.json").read_text())["runs"][3]["variant"] == "tsm_pool"


def test_table2_sweeps_each_model_and_runs_the_pretrained_regime(table2, tmp_path):
    root, _ = table2
    torch.manual_seed(0)
    save_model(tmp_path / "img.safetensors", xvit.create_model("vit_nano_patch8_32", num_frames=1, num_classes=14))
    out = tmp_path / "both"
    args = ["reproduce", "table2", "--lrs", "1e-3", "3e-3", "--variants", "xvit_ta", "tsm_pool", "--seeds", "2"]
    assert main([*args, "--pretrained", str(tmp_path / "img.safetensors"), "--out", str(out), *tiny(root)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert list(res["regimes"]) == ["scratch", "pretrained"] and len(res["runs"]) == 2 * 2 * 2 + 2 * 2
    for regime in res["regimes"].values():
        for row in regime["rows"]:
            sweep = {s["lr"]: s["top1"] for s in row["sweep"]}
            assert set(sweep) == {1e-3, 3e-3} and sweep[row["lr"]] == max(sweep.values())  # its own best rate
            runs = [r for r in res["runs"] if r["regime"] == regime["regime"] and r["variant"] == row["variant"]]
            assert sorted(r["seed"] for r in runs if r["lr"] == row["lr"]) == [0, 1]
    pre = [r for r in res["runs"] if r["regime"] == "pretrained"]
    assert all(r["pretrained"] == str(tmp_path / "img.safetensors") for r in pre)
    assert all(r["pretrained"] is None for r in res["runs"] if r["regime"] == "scratch")
    assert {g["variant"] for g in res["pretrained_gain"]} == {"xvit_ta", "tsm_pool"}
    md = (out / "results.md").read_text()
    assert "## From scratch" in md and "## Fine-tuned from an image ViT" in md and "Learning-rate sweep" in md


def test_table2_pretrained_regime_needs_an_image_vit_of_the_size(tmp_path, capsys):
    assert main(["reproduce", "table2", "--seeds", "1", "--out", str(tmp_path / "x"), *tiny(tmp_path)]) == 2
    assert "needs an image ViT of xvit_nano_patch8_32's size" in capsys.readouterr().err


def test_fig1_evaluates_given_checkpoints_at_every_view_count(table2):
    root, t2 = table2
    ckpt = t2 / "runs" / "scratch_xvit_ta_lr0.001_s0" / "checkpoints" / "best.safetensors"
    out = root / "fig1"
    args = ["reproduce", "fig1", "--checkpoint", str(ckpt), "--max-clips", "2", "--out", str(out), *tiny(root)]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert [p["views"] for p in res["points"]] == ["1x1", "1x3", "2x1", "2x3"]
    assert res["models"] == 1 and all(r["kind"] == "eval" for r in res["runs"])
    for p in res["points"]:
        assert 0 <= p["top1"]["mean"] <= 100 and p["model_ms_per_video"]["mean"] > 0
    assert all(len(r["confusion"]) == 14 for r in res["runs"])
    assert any(r["pair_order_acc"] is not None for r in res["runs"])  # the benchmark's reversed pairs
    assert [(g["from"], g["to"]) for g in res["gain"]] == [("1x3", "2x3"), ("1x1", "1x3")]
    assert res["points"][0]["top1_over_1x1"]["mean"] == 0.0
    assert (out / "fig1.png").stat().st_size > 0 and "| 2x3 |" in (out / "results.md").read_text()


def test_fig1_trains_its_model_and_tests_at_a_short_side_where_the_crops_differ(tmp_path):
    out = tmp_path / "fig1"
    assert main(["reproduce", "fig1", "--seeds", "1", "--max-clips", "1", "--out", str(out), *tiny(tmp_path)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [r["kind"] for r in res["runs"]] == ["train", "eval", "eval"]
    assert res["short_side"] == 36 and res["crop_size"] == 32
    assert res["settings"]["config"]["optim"]["lr"] == 1e-3  # the shipped figure's recipe, not the main job's
    _, clip = xvit.load_model(out / "runs" / "train_s0" / "checkpoints" / "best.safetensors")
    frames = torch.randint(0, 255, (4, 32, 32, 3), dtype=torch.uint8)
    crops = clip.test_transform(num_crops=3)(frames)  # (3, C, T, 32, 32)
    assert not torch.equal(crops[0], crops[1]) and not torch.equal(crops[1], crops[2])
    square = ClipSpec(num_frames=4, crop_size=32, views=(1, 3)).test_transform()(frames)
    assert torch.equal(square[0], square[2])  # short side = crop on square frames: 3 copies (why 36)


def test_table1_measures_the_rows_and_the_ratios_to_xvit(tmp_path):
    out = tmp_path / "t1"
    rows = ["xvit_8", "vivit_l", "slowfast_r50", "vivit_fe_128_1x1"]
    args = ["reproduce", "table1", "--size", "nano", "--rows", *rows, "--repeats", "2"]
    assert main([*args, "--heavy-repeats", "1", "--threads", "1", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    xv, slowfast, vivit, fe, fe_1x1 = res["rows"]  # the 1x1 row brings in the row it shares its timing with
    assert xv["ratio"] == 1.0 and len(xv["times_s"]) == 2 and xv["num_views"] == 3 and xv["verdict"] == "reference"
    assert vivit["num_views"] == 12 and vivit["options"] == {"tubelet": 2}
    assert vivit["paper_ratio"] == round(0.66 / 12.0, 4) and vivit["verdict"].startswith(("agrees", "disagrees"))
    assert vivit["videos_per_s"] == pytest.approx(1 / (statistics.median(vivit["times_s"]) * 12), rel=1e-3)
    assert slowfast["name"] == "slowfast_nano" and slowfast["num_views"] == 30 and slowfast["img_size"] == 32
    assert fe_1x1["timed_by"] == fe["key"] and fe_1x1["times_s"] == fe["times_s"]
    assert fe_1x1["videos_per_s"] == pytest.approx(3 * fe["videos_per_s"], rel=1e-3)
    assert xv["gmacs_ratio"] == 1.0 and 0 < slowfast["gmacs_ratio"]
    # measured group by group, each beside its own X-ViT 8x: the ratios are to the group's reference
    assert set(res["groups"]) == {"vit", "vivit", "cnn"} and (xv["group"], slowfast["group"]) == ("vit", "cnn")
    cnn_ref = statistics.median(res["groups"]["cnn"]["reference_times_s"])
    assert slowfast["ratio"] == pytest.approx(3 * cnn_ref / (30 * statistics.median(slowfast["times_s"])), abs=1e-4)
    md = (out / "results.md").read_text()
    assert "ViViT-L/16x2 32x (model 1) (nano)" in md and "SlowFast 8x8 R50 (nano)" in md and "as vivit_fe_128" in md


def test_table1_rejects_overrides_and_unknown_sizes(tmp_path):
    assert main(["reproduce", "table1", "--out", str(tmp_path), "train.epochs=1"]) == 2
    assert main(["reproduce", "table1", "--size", "huge", "--out", str(tmp_path / "x")]) == 2


def test_mean_std_and_the_ordering_verdict():
    a, b = mean_std([70.0, 72.0, 74.0]), mean_std([60.0, 61.0, 62.0])
    assert a == {"mean": 72.0, "std": 2.0, "n": 3} and pm(a) == "72.0 ± 2.0"
    assert compare(a, b)["verdict"] == "yes" and compare(b, a)["verdict"] == "no"
    assert compare(a, mean_std([71.0, 73.0, 70.0]))["verdict"] == "unresolved"
    assert compare(mean_std([1.0]), mean_std([0.0]))["verdict"] == "one seed"
    assert mean_std([None])["mean"] is None and pm(mean_std([])) == "—"


def test_joint_tubelet_embedding_is_a_3d_patch_convolution():
    """ViViT's tubelet embedding: a 2x8x8 Conv3d over the clip, here a 2D patch embedding over the
    tubelet's frames stacked as channels; both give the same tokens."""
    torch.manual_seed(0)
    model = xvit.create_model("joint_nano_patch8_32", num_frames=4, tubelet=2, num_classes=3).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    w = model.patch_embed.proj.weight  # (D, C*k, p, p), channel c*k + j = colour c of frame j
    conv3d = nn.Conv3d(3, w.shape[0], (2, 8, 8), stride=(2, 8, 8))
    seen = []
    model.patch_embed.register_forward_hook(lambda m, i, o: seen.append(o))  # (B*T/2, N, D)
    with torch.no_grad():
        conv3d.weight.copy_(w.view(w.shape[0], 3, 2, 8, 8))
        conv3d.bias.copy_(model.patch_embed.proj.bias)
        ref = conv3d(x).flatten(3).permute(0, 2, 3, 1)  # (B, T/2, N, D)
        model(x)
    torch.testing.assert_close(seen[0].view(2, 2, 16, -1), ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        assert model.forward_features(x).shape == (2, 1 + 2 * 16, 32)
    assert "2x8x8 tubelet" in model.describe()["temporal"]
    with pytest.raises(ValueError, match="divide num_frames"):
        xvit.create_model("joint_nano_patch8_32", num_frames=5, tubelet=2)


def test_the_eta_counts_each_kind_of_unit_at_its_own_pace():
    units = [Unit(str(i), "", dict, kind) for i, kind in enumerate(["train", "eval", "eval"])]
    assert eta(units, {}) is None
    assert eta(units, {"train": [100.0, 110.0]}) == 3 * 105.0  # no eval finished yet: the overall mean
    assert eta(units, {"train": [100.0], "eval": [2.0, 4.0]}) == 100.0 + 2 * 3.0


@contextlib.contextmanager
def held_by_a_live_process(out: StudyDir, key: str):
    """Unit ``key`` of ``out`` claimed by a live process on this host (a ``sleep``), for the block."""
    holder = subprocess.Popen(["sleep", "30"])
    try:
        (out.records / f"{key}.claim").write_text(f"{common.socket.gethostname()}:{holder.pid}")
        yield
    finally:
        holder.kill()
        holder.wait()


def test_processes_sharing_a_study_directory_run_each_unit_once(tmp_path, monkeypatch):
    import threading

    monkeypatch.setattr(common, "CLAIM_POLL_S", 0.05)
    out = StudyDir(tmp_path, "demo", {})
    ran = []

    def unit(key):
        return Unit(key, key, lambda: ran.append(key) or {"key": key, "by": "me"})

    with held_by_a_live_process(out, "b"):
        (out.records / "c.claim").write_text(f"{common.socket.gethostname()}:999999999")  # its process is gone

        def other_process_finishes_b():
            out.save("b", {"key": "b", "by": "other"})
            (out.records / "b.claim").unlink()

        threading.Timer(0.3, other_process_finishes_b).start()
        records = run_units("demo", out, [unit("a"), unit("b"), unit("c")])
    assert ran == ["a", "c"] and [r["by"] for r in records] == ["me", "other", "me"]
    assert not list(out.records.glob("*.claim"))  # a claim goes when its unit is recorded
    assert run_units("demo", out, [unit("a"), unit("b"), unit("c")]) == records and ran == ["a", "c"]


def test_a_unit_another_process_finishes_while_this_one_runs_its_own_is_returned(tmp_path):
    out = StudyDir(tmp_path, "demo", {})

    def run_a():  # while this process runs "a", the process holding "b" records it
        out.save("b", {"key": "b", "by": "other"})
        (out.records / "b.claim").unlink()
        return {"key": "a", "by": "me"}

    with held_by_a_live_process(out, "b"):
        records = run_units("demo", out, [Unit("b", "b", lambda: {"key": "b", "by": "me"}), Unit("a", "a", run_a)])
    assert [r["by"] for r in records] == ["other", "me"]  # a study's sweep picks its rates from all of them


def test_gap_runs_ablations_and_curves_and_says_when_xvit_catches_up(table2, tmp_path):
    root, _ = table2
    out = tmp_path / "gap"
    args = [
        "reproduce", "gap", "--ablations", "xvit", "no_temb", "tsm", "--curves", "xvit", "tsm", "--curve-epochs", "2",
        "--curve-every", "1", "--curve-lr", "tsm=3e-3", "--seeds", "2", "--curve-seeds", "1", "--lr", "1e-3",
    ]  # fmt: skip
    assert main([*args, "--out", str(out), *tiny(root)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [r["key"] for r in res["ablations"]] == ["xvit", "no_temb", "tsm"] and res["regime"] == "scratch"
    assert all(r["top1"]["n"] == 2 for r in res["ablations"]) and res["ablations"][0]["vs_xvit"] is None
    assert set(res["ablations"][1]["vs_xvit"]) == {"top1", "pair_order_acc", "train_acc"}
    no_temb = next(r for r in res["runs"] if r["key"] == "no_temb")
    assert no_temb["options"] == {"temporal_embed": False} and no_temb["describe"]["temporal_embed"] == "no"
    xv, tsm = res["curves"]
    assert (xv["lr"], tsm["lr"]) == (1e-3, 3e-3) and [p["epoch"] for p in xv["points"]] == [1, 2]
    assert all(p["top1"]["n"] == 1 and p["train_acc"]["mean"] is not None for p in xv["points"])
    assert res["curve_seeds"] == 1 and not any("curve" in r for r in res["runs"] if r["seed"] == 1)
    assert res["catch_up"] is not None and (out / "gap.png").stat().st_size > 0
    assert "## Learning curve: X-ViT" in (out / "results.md").read_text()


def test_gap_ablations_fine_tuned_from_an_image_vit(table2, tmp_path):
    root, _ = table2
    torch.manual_seed(0)
    image_vit = tmp_path / "img.safetensors"
    save_model(image_vit, xvit.create_model("vit_nano_patch8_32", num_frames=1, num_classes=14))
    out = tmp_path / "gap"
    args = ["reproduce", "gap", "--ablations", "xvit", "mix_k", "--curves", "--seeds", "1", "--out", str(out)]
    assert main([*args, "--pretrained", str(image_vit), *tiny(root)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["regime"] == "pretrained" and res["settings"]["pretrained"] == str(image_vit) and not res["curves"]
    for key in ("xvit_s0", "mix_k_s0"):
        assert yaml.safe_load((out / "runs" / key / "config.yaml").read_text())["model"]["pretrained"] == str(image_vit)
    assert (out / "results.md").read_text().startswith(f"# Fine-tuned from {image_vit}: ablations")


def test_main_study_runs_the_job_per_seed_and_checks_the_targets(table2, tmp_path):
    root, _ = table2
    out = tmp_path / "main"
    assert (
        main(["reproduce", "main", "--seeds", "2", "--out", str(out), *tiny(root), "compare=[vit_nano_patch8_32]"]) == 0
    )
    res = json.loads((out / "results.json").read_text())
    assert res["seeds"] == [0, 1] and [m["model"] for m in res["models"]] == [
        "xvit_nano_patch8_32",
        "vit_nano_patch8_32",
    ]
    xv = res["models"][0]
    assert xv["top1"]["n"] == 2 and len(xv["pairs"]) == 5 and all(len(p["seeds"]) == 2 for p in xv["pairs"])
    assert [s["top1"] for s in xv["per_seed"]] == [
        json.loads((out / "runs" / f"seed_{s}" / "summary.json").read_text())[0]["top1"] for s in (0, 1)
    ]
    t = res["targets"]
    assert t["of"] == 2 and 0 <= t["met_by"] <= 2 and {"pair_mean", "pair_min", "top1_margin"} <= set(t["per_seed"][0])
    assert "met by" in (out / "results.md").read_text()


SHIPPED = Path(__file__).resolve().parents[1] / "docs" / "reproduction"


@pytest.mark.parametrize(
    "study, defaults, per_run",
    [("table2", table2_study.DEFAULTS, {"lr"}), ("gap", gap.DEFAULTS, set()), ("fig1", fig1.DEFAULTS, set())],
)
def test_a_study_reruns_with_the_recipe_of_its_shipped_results(study, defaults, per_run):
    # the main job's recipe moves (synthetic.yaml); a study's defaults keep the one it shipped with
    settings = json.loads((SHIPPED / study / "results.json").read_text())["settings"]
    extra = settings["recipe"].split(" + ", 1)[1].split()  # the command's overrides after the defaults of its time
    now = load_config(None, [*defaults, *extra]).to_dict()
    for section, shipped in settings["config"].items():
        if not isinstance(shipped, dict):
            assert now[section] == shipped, section
            continue
        for key, value in shipped.items():
            if key not in per_run:
                assert now[section][key] == value, f"{section}.{key}"
