"""README's "Bring your own dataset", followed literally: its config and its commands, read from the
README, on videos made here (a small subset of the synthetic classes, renamed)."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from xvit.cli import main
from xvit.data.synthetic import generate_synthetic

README = Path(__file__).resolve().parents[1] / "README.md"
CLASSES = {"left": "moving_left", "right": "moving_right", "cross": "static_cross", "ring": "static_ring"}
# what the test adds to the README's train command: 1 epoch on one thread, no progress bars
FAST = ["train.epochs=1", "train.batch_size=4", "train.threads=1", "train.progress=false", "train.tensorboard=false"]


def _block(marker: str) -> str:
    text = README.read_text()
    match = re.search(re.escape(marker) + r"\s*```\w*\n(.*?)```", text, re.S)
    assert match, f"README has no code block after {marker}"
    return "\n".join(line.removeprefix("   ") for line in match.group(1).splitlines())


def _make_videos(where: Path) -> None:
    """my_videos/<class>/clip_NNNN.mp4 for 4 classes, with classes/train/val lists as README says."""
    src = where / "src"
    generate_synthetic(src, videos_per_class=4, num_frames=8, size=32, val_fraction=0.0, workers=1, progress=False)
    names = (src / "classes.txt").read_text().split()
    root = where / "my_videos"
    lines = []
    for label, (name, synthetic_name) in enumerate(CLASSES.items()):
        (root / name).mkdir(parents=True)
        for i, video in enumerate(sorted((src / "videos" / synthetic_name).glob("*.mp4"))):
            shutil.copy(video, root / name / f"clip_{i + 1:04d}.mp4")
            lines.append(f"{name}/clip_{i + 1:04d}.mp4 {label}")
        assert synthetic_name in names
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "val.txt").write_text("\n".join(lines[::2]) + "\n")


def test_readme_bring_your_own_dataset(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _make_videos(tmp_path)
    config = _block("<!-- byod-config -->")
    assert yaml.safe_load(config)["base"] == "synthetic"
    Path("my_data.yaml").write_text(config)
    commands = [shlex.split(c) for c in _block("<!-- byod-commands -->").splitlines() if c.strip()]
    assert [c[:2] for c in commands] == [
        ["xvit", "check-data"],
        ["xvit", "train"],
        ["xvit", "eval"],
        ["xvit", "predict"],
    ]
    for argv in commands:
        extra = {"train": FAST, "eval": ["--workers", "0", "--no-progress"]}.get(argv[1], [])
        assert main(argv[1:] + extra) == 0, (argv, capsys.readouterr())
    out = capsys.readouterr().out
    assert "left / right" in Path("runs/my_data/summary.md").read_text()  # the pair order table
    assert (Path("runs/my_data/xvit_micro_patch8_64/checkpoints/eval_2x1") / "metrics.json").is_file()
    assert re.search(r"%\s+(left|right|cross|ring)$", out, re.M)  # predict printed class names
    assert list(Path("my_videos/.frames").glob("*.u8"))  # the frame cache went where the config says


@pytest.mark.parametrize("marker", ["<!-- byod-config -->", "<!-- byod-commands -->"])
def test_readme_blocks_exist(marker):
    assert _block(marker).strip()
