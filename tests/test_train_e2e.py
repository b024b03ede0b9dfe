"""End-to-end ``xvit train`` on a tiny synthetic set: overfitting, exact mid-epoch resume, bad input.

Runs go through ``xvit.cli.main(["train", ...])`` in-process with the ``nano`` models (32 px,
dim 32, depth 2), one CPU thread, no data-loader workers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import xvit
from xvit.cli import main
from xvit.engine.train.resume import last_state

SUBSET = (0, 1, 12, 13)  # moving_left, moving_right (time-reversed pair), static_cross, static_ring


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """14 classes x 2 videos of 8 frames, 32 px, and lists of 4 classes' videos.

    ``sub.txt``: classes 0, 1, 12, 13; ``overfit.txt``: classes 0, 3, 4, 13 (no time-reversed pair),
    ``overfit4.txt``: the same 4 times (4 optimizer steps per epoch instead of 1).
    """
    from xvit.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("tiny_synthetic")
    generate_synthetic(root, videos_per_class=2, num_frames=8, size=32, val_fraction=0.0, workers=1, progress=False)
    lines = (root / "train.txt").read_text().splitlines()
    for name, classes, repeat in (("sub", SUBSET, 1), ("overfit", (0, 3, 4, 13), 1), ("overfit4", (0, 3, 4, 13), 4)):
        chosen = [ln for ln in lines if int(ln.split()[1]) in classes] * repeat
        (root / f"{name}.txt").write_text("\n".join(chosen) + "\n")
    return root


def tiny_overrides(root: Path, run_dir: Path, **extra) -> list[str]:
    """``key=value`` overrides of a tiny CPU run on ``root/sub.txt`` (values YAML-dumped)."""
    values = {
        "run_dir": str(run_dir),
        "compare": [],
        "model.name": "xvit_nano_patch8_32",
        "model.pretrained": None,  # the main job's shipped image ViT is micro-sized
        "data.format": "list",
        "data.root": str(root),
        "data.train_annotations": str(root / "sub.txt"),
        "data.val_annotations": str(root / "sub.txt"),
        "data.class_names": str(root / "classes.txt"),
        "data.num_frames": 8,
        "data.crop_size": 32,
        "data.short_side_range": [32, 32],
        "data.hflip": False,
        "data.num_workers": 0,
        "optim.name": "adamw",
        "optim.lr": 3e-3,
        "optim.lr_base_batch": None,
        "optim.weight_decay": 0.0,
        "optim.warmup_epochs": 1,
        "train.epochs": 1,
        "train.batch_size": 4,
        "train.amp": "none",
        "train.threads": 1,
        "train.progress": False,
        "train.log_every_steps": 1,
        "eval.views": "1x1",
        "eval.batch_size": 8,
        "eval.num_workers": 0,
    }
    values.update({k.replace("__", "."): v for k, v in extra.items()})
    return [
        f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
        for k, v in values.items()
    ]


def train(root: Path, run_dir: Path, **extra) -> int:
    return main(["train", *tiny_overrides(root, run_dir, **extra)])


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory) -> Path:
    """A finished 1-epoch run (14 classes, 8 frames) to resume / fine-tune from."""
    run_dir = tmp_path_factory.mktemp("runs") / "trained"
    assert train(tiny, run_dir, eval__enabled=False) == 0
    return run_dir


OVERFIT = dict(
    train__epochs=40,
    train__batch_size=8,
    optim__lr=5e-3,
    optim__warmup_epochs=5,
    train__label_smoothing=0.0,
    train__ckpt_every_steps=25,
    model__options={"head": "avg"},
)


def test_overfits_tiny_set_and_writes_run_dir(tiny, tmp_path, capsys):
    """xvit_nano reaches 100% on its 8 training videos (160 steps; eval-mode sampling of the same videos).

    Temporal average pooling (``head=avg``): at dim 32 the temporal-attention head's two stacked
    0.02-std linears start with ~20x smaller logits than the pooled head and need far more steps.
    """
    run_dir = tmp_path / "overfit"
    rc = train(
        tiny,
        run_dir,
        data__train_annotations=str(tiny / "overfit4.txt"),
        data__val_annotations=str(tiny / "overfit.txt"),
        **OVERFIT,
    )
    assert rc == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["top1"] == 100.0 and results["num_videos"] == 8  # train set == eval set, eval-mode sampling
    assert "top-1 100.00%" in capsys.readouterr().out
    # resolved config: complete, reloadable, equal to what ran
    from xvit.engine.config import load_config

    resolved = load_config(str(run_dir / "config.yaml"))
    assert resolved.train.epochs == 40 and resolved.model.name == "xvit_nano_patch8_32"
    assert resolved.data.train_annotations == str(tiny / "overfit4.txt") and resolved.model.options == {"head": "avg"}
    for name in ("last.safetensors", "best.safetensors", "latest"):
        assert (run_dir / "checkpoints" / name).is_file()
    (step,) = [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step_")]  # older ones pruned
    assert step.name == "step_000000160" and (run_dir / "checkpoints" / "latest").read_text().strip() == step.name
    assert (step / "model.safetensors").samefile(run_dir / "checkpoints" / "last.safetensors")  # a hard link
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    lines = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {ln["kind"] for ln in lines} == {"train_step", "train_epoch", "val"}
    assert [ln["global_step"] for ln in lines if ln["kind"] == "train_step"] == list(range(1, 161))
    # the checkpoint is what eval/predict need: model + test pipeline in its metadata
    model, clip = xvit.load_model(run_dir / "checkpoints" / "last.safetensors")
    assert model.num_classes == 14 and clip.num_frames == 8 and len(clip.class_names) == 14 and not model.training
    state = last_state(run_dir)
    assert state["finished"] and state["global_step"] == 160 and state["epoch"] == 40
    # running it again finds the finished run and only reports it
    assert (
        train(
            tiny,
            run_dir,
            data__train_annotations=str(tiny / "overfit4.txt"),
            data__val_annotations=str(tiny / "overfit.txt"),
            **OVERFIT,
        )
        == 0
    )
    assert "already trained" in capsys.readouterr().out


def test_killed_mid_epoch_and_resumed_equals_uninterrupted(tiny, tmp_path):
    """Bit-exact (torch.equal on every tensor) on CPU with deterministic algorithms.

    Mixup/cutmix (numpy RNG), drop path (torch RNG), random crops and random clip starts (seeded
    per item by (seed, epoch, index)) are all on: the RNG states must be restored to get the same weights.
    """
    common = dict(
        train__epochs=2,
        train__batch_size=2,
        train__deterministic=True,
        eval__enabled=False,
        data__num_frames=4,
        data__sampling="dense",
        data__frame_stride=1,  # random start frame
        data__short_side_range=[32, 40],
        train__mixup_alpha=0.4,
        train__cutmix_alpha=1.0,
        train__label_smoothing=0.1,
        model__drop_path_rate=0.1,
        optim__name="sgd",
        optim__lr=0.05,
    )
    assert train(tiny, tmp_path / "a", **common) == 0
    # 4 steps per epoch; checkpoints at steps 3 (mid-epoch 0), 4 (end of epoch 0), 6 (mid-epoch 1); killed at 7
    assert train(tiny, tmp_path / "b", train__ckpt_every_steps=3, train__stop_after_steps=7, **common) == 0
    assert not (tmp_path / "b" / "results.json").exists()
    state = last_state(tmp_path / "b")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 2, 6)
    assert train(tiny, tmp_path / "b", train__ckpt_every_steps=3, **common) == 0
    a = load_file(str(tmp_path / "a" / "checkpoints" / "last.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoints" / "last.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    sa = last_state(tmp_path / "a")
    sb = last_state(tmp_path / "b")
    assert sa["global_step"] == sb["global_step"] == 8
    assert all(
        torch.equal(sa["optimizer"]["state"][i]["momentum_buffer"], sb["optimizer"]["state"][i]["momentum_buffer"])
        for i in sa["optimizer"]["state"]
    )


# ------------------------------------------------------------------------------------------ bad input


def _fails(capsys, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def test_unknown_keys_and_model(tiny, tmp_path, capsys):
    run_dir = tmp_path / "r"
    _fails(
        capsys,
        main(["train", "train.epoch=3", f"run_dir={run_dir}"]),
        "unknown config key 'train.epoch'",
        "did you mean 'train.epochs'",
    )
    _fails(capsys, train(tiny, run_dir, model__name="xvit_nano_patch8_3"), "xvit_nano_patch8_32")
    _fails(capsys, train(tiny, run_dir, compare=["vit_nano"]), "compare[0]")
    _fails(capsys, train(tiny, run_dir, model__options={"shift_dvi": 4}), "model.options")
    _fails(capsys, main(["train", "--config", str(tmp_path / "nope.yaml")]), "nope.yaml", "shipped")
    assert not run_dir.exists()


def test_bad_data(tiny, tmp_path, capsys):
    run_dir = tmp_path / "r"
    _fails(capsys, train(tiny, run_dir, data__root=str(tmp_path / "missing")), str(tmp_path / "missing"))
    _fails(capsys, train(tiny, run_dir, data__train_annotations=str(tmp_path / "none.txt")), "none.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text((tiny / "sub.txt").read_text() + "videos/static_ring/00000.mp4 20\n")
    _fails(capsys, train(tiny, run_dir, data__train_annotations=str(bad)), "label 20", "bad.txt")
    # without class names the classes are those of the training split; a val label beyond them is an error
    val = tmp_path / "val.txt"
    val.write_text("videos/static_ring/00000.mp4 13\n")
    two = tmp_path / "two.txt"
    two.write_text(
        "".join(ln + "\n" for ln in (tiny / "sub.txt").read_text().splitlines() if ln.endswith((" 0", " 1")))
    )
    _fails(
        capsys,
        train(tiny, run_dir, data__class_names=None, data__train_annotations=str(two), data__val_annotations=str(val)),
        "val.txt:1: label 13",
        "[0, 2)",
    )
    _fails(capsys, train(tiny, run_dir, train__batch_size=64), "fewer than one global batch")
    assert not run_dir.exists()


def test_incompatible_checkpoints(tiny, trained, tmp_path, capsys, caplog):
    new = tmp_path / "new"
    ckpt = trained / "checkpoints" / "last.safetensors"
    _fails(
        capsys, train(tiny, new, train__resume=str(trained), data__num_frames=4), "num_frames=8", "data.num_frames=8"
    )
    # a pretrained checkpoint of other frames or classes is a start, not a run to continue: its
    # backbone transfers, the temporal embedding and the classifier start at their init
    two = tmp_path / "two.txt"
    two.write_text(
        "".join(ln + "\n" for ln in (tiny / "sub.txt").read_text().splitlines() if ln.endswith((" 0", " 1")))
    )
    fine = dict(data__class_names=None, data__train_annotations=str(two), data__val_annotations=str(two))
    with caplog.at_level("INFO", logger="xvit.models.weights"):
        assert train(tiny, tmp_path / "fine", model__pretrained=str(ckpt), data__num_frames=4, **fine) == 0
    assert "2 classes: transfer" not in caplog.text and "14 classes: transfer" in caplog.text
    _fails(capsys, train(tiny, new, model__pretrained=str(tmp_path / "vit.pth")), "vit.pth", "download")
    assert not new.exists()
    # the run directory of the existing run: a mismatching resume leaves it untouched
    before = {p: p.stat().st_mtime_ns for p in trained.rglob("*") if p.is_file()}
    _fails(
        capsys,
        train(tiny, trained, model__name="vit_nano_patch8_32"),
        "name=xvit_nano_patch8_32",
        "model.name=xvit_nano_patch8_32",
    )
    _fails(capsys, train(tiny, trained, train__resume="never"), "already holds a checkpoint")
    assert {p: p.stat().st_mtime_ns for p in trained.rglob("*") if p.is_file()} == before


def test_gradient_accumulation_matches_larger_batch(tiny, tmp_path):
    """batch 2 x 2 accumulation steps == batch 4: same clips per optimizer step, same weights (atol 1e-6)."""
    common = dict(
        train__epochs=2, eval__enabled=False, optim__name="sgd", optim__lr=0.1, data__short_side_range=[32, 40]
    )
    assert train(tiny, tmp_path / "big", train__batch_size=4, **common) == 0
    assert train(tiny, tmp_path / "acc", train__batch_size=2, train__accum_steps=2, **common) == 0
    big = load_file(str(tmp_path / "big" / "checkpoints" / "last.safetensors"))
    acc = load_file(str(tmp_path / "acc" / "checkpoints" / "last.safetensors"))
    assert max((big[k] - acc[k]).abs().max().item() for k in big) <= 1e-6
    state = last_state(tmp_path / "acc")
    assert state["global_step"] == 4 and state["global_batch"] == 4


def test_bf16_autocast_on_cpu(tiny, tmp_path, capsys):
    assert train(tiny, tmp_path / "bf16", train__amp="bf16", eval__enabled=False) == 0
    lines = [json.loads(ln) for ln in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()]
    assert all(ln["loss"] is not None and ln["loss"] > 0 for ln in lines if ln["kind"] == "train_step")
    _fails(capsys, train(tiny, tmp_path / "fp16", train__amp="fp16"), "train.amp=fp16 needs a CUDA device")
    assert not (tmp_path / "fp16").exists()


# ------------------------------------------------------------------------------------------ skip ledger


def test_skip_ledger_counts_and_lists_unreadable_videos(tiny, tmp_path, capsys, caplog):
    """Two unreadable training videos and one unreadable validation video: each listed once (path,
    reason, epoch) in metrics.jsonl, results.json and the epoch log line; above
    data.max_skipped_fraction the run stops with one line instead of training on the rest."""
    (tiny / "bad").mkdir(exist_ok=True)
    (tiny / "bad" / "empty.mp4").write_bytes(b"")
    (tiny / "bad" / "text.mp4").write_text("not a video\n")
    train_list, val_list = tmp_path / "train.txt", tmp_path / "val.txt"
    train_list.write_text((tiny / "sub.txt").read_text() + "bad/empty.mp4 0\nbad/text.mp4 1\n")
    val_list.write_text((tiny / "sub.txt").read_text() + "bad/empty.mp4 0\n")
    run_dir = tmp_path / "skips"
    common = dict(
        data__train_annotations=str(train_list),
        data__val_annotations=str(val_list),
        data__cache="none",
        train__epochs=2,
        train__batch_size=2,
    )
    with caplog.at_level("INFO", logger="xvit.train"):
        assert train(tiny, run_dir, data__max_skipped_fraction=0.25, **common) == 0
    results = json.loads((run_dir / "results.json").read_text())
    skipped = results["skipped"]
    assert (skipped["train"], skipped["val"]) == (2, 1)
    by_split = {(v["split"], Path(v["path"]).name): v for v in skipped["videos"]}
    assert set(by_split) == {("train", "empty.mp4"), ("train", "text.mp4"), ("val", "empty.mp4")}
    assert all(v["reason"] and v["epoch"] in (0, 1) for v in skipped["videos"])
    assert results["num_missing"] == 1 and results["num_videos"] == 8
    lines = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    skips = [(ln["split"], Path(ln["path"]).name) for ln in lines if ln["kind"] == "skip"]
    assert sorted(skips) == sorted(by_split)  # once per path, though both epochs read them
    epochs = [ln for ln in lines if ln["kind"] == "train_epoch"]
    assert [ln["skipped_train"] for ln in epochs] == [2, 2] and epochs[0]["skipped_new"] == 2
    assert "2 unreadable training videos skipped" in caplog.text
    # the default data.max_skipped_fraction (0.01): the first unreadable video of 10 stops the run, in one line
    err = _fails(
        capsys,
        train(tiny, tmp_path / "strict", **common),
        "of the 10 training videos",
        "data.max_skipped_fraction=0.01",
    )
    assert ".mp4" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "strict" / "results.json").exists()


def test_a_resumed_run_does_not_reopen_the_videos_its_ledger_holds(tiny, tmp_path, monkeypatch):
    """The skip ledger's training videos survive a resume as known unreadable: the continued run
    replaces them without opening them (in every epoch), and still lists them once."""
    from xvit.data import datasets

    (tiny / "bad").mkdir(exist_ok=True)
    (tiny / "bad" / "empty.mp4").write_bytes(b"")
    (tiny / "bad" / "text.mp4").write_text("not a video\n")
    train_list = tmp_path / "train.txt"
    train_list.write_text((tiny / "sub.txt").read_text() + "bad/empty.mp4 0\nbad/text.mp4 1\n")
    opened: list[str] = []
    real_open = datasets.open_video
    monkeypatch.setattr(datasets, "open_video", lambda path, *a: opened.append(Path(path).name) or real_open(path, *a))
    common = dict(
        data__train_annotations=str(train_list),
        data__cache="none",
        data__max_skipped_fraction=0.25,
        eval__enabled=False,
        train__batch_size=2,
    )
    run_dir = tmp_path / "resumed"
    assert train(tiny, run_dir, train__epochs=1, **common) == 0
    assert {"empty.mp4", "text.mp4"} <= set(opened)  # one epoch draws every video once
    opened.clear()
    assert train(tiny, run_dir, train__epochs=3, **common) == 0  # resumed after epoch 1, two more epochs
    assert len(opened) >= 2 * 8 and not {"empty.mp4", "text.mp4"} & set(opened)
    skipped = json.loads((run_dir / "results.json").read_text())["skipped"]
    assert skipped["train"] == 2 and sorted(Path(v["path"]).name for v in skipped["videos"]) == [
        "empty.mp4",
        "text.mp4",
    ]


def test_run_directory_of_an_older_version_resumes(tiny, trained, tmp_path):
    """``last.safetensors`` + ``last.state.pt`` (state version 1, no ledger): continued to a 2nd epoch."""
    import shutil

    from xvit.engine.train.resume import find_checkpoint

    run = tmp_path / "old"
    shutil.copytree(trained, run)
    folder = run / "checkpoints"
    weights, state_path = find_checkpoint(run)
    state = torch.load(state_path, weights_only=True)
    old = {k: v for k, v in state.items() if k not in ("skipped", "metrics_bytes", "epoch_sums")} | {"version": 1}
    torch.save(old, folder / "last.state.pt")
    shutil.rmtree(weights.parent)
    (folder / "latest").unlink()
    assert find_checkpoint(run) == (folder / "last.safetensors", folder / "last.state.pt")
    assert train(tiny, run, eval__enabled=False, train__epochs=2) == 0
    assert last_state(run)["global_step"] == 2 * state["global_step"] and not (folder / "last.state.pt").exists()
