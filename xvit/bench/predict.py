"""Where ``xvit predict``'s time goes, measured on the real command (the library of ``xvit bench-predict``).

:func:`write_videos` writes ``VIDEO_SET``: 8 H.264 mp4 files of different sizes (landscape, square,
portrait, 240p to 720p) and lengths (2-5 s), with moving textured content
(``xvit.data.bench.make_bench_video``). :func:`write_checkpoint` writes a checkpoint in xvit's own
format with random weights (nothing is downloaded; the time of a forward does not depend on the
weights) and the paper's Kinetics-400 test pipeline (§4: dense sampling, 1x3 views).
:func:`bench_predict` runs ``python -m xvit predict VIDEO... --checkpoint CKPT --json`` as a
subprocess ``repeats`` times (after ``warmup`` untimed runs on the smallest video, which bring the
Python modules and the checkpoint into the page cache), measures each whole command's wall time
from outside and reads the command's own split (``timing`` of its JSON: imports, load, decode
wait, model, output, other) from its output; what the outside clock sees beyond the command's
own is the process's spawn and exit. The figure of merit is model seconds / whole command (the
issue's goal: >= 0.9 over 8 videos with ViT-B).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import xvit
from xvit.bench.report import cpu_isa, cpu_model
from xvit.data.bench import make_bench_video
from xvit.data.clip import ClipSpec
from xvit.data.video import video_info
from xvit.engine.checkpoint import CheckpointMeta, save_model
from xvit.errors import UserError
from xvit.models import create_model

DEFAULT_MODEL = "xvit_base_patch16_224"  # X-ViT B/16, 8 frames
# (width, height, seconds, fps) of the written videos
VIDEO_SET: tuple[tuple[int, int, float, int], ...] = (
    (320, 240, 4.0, 30),
    (640, 360, 3.0, 25),
    (854, 480, 5.0, 30),
    (1280, 720, 3.0, 30),
    (480, 480, 4.0, 25),
    (360, 640, 3.0, 30),  # portrait
    (400, 300, 2.0, 24),
    (960, 540, 4.0, 25),
)
# the parts of a command, in order: (key in the result, key in predict's timing, label)
PARTS = (
    ("imports", "imports_seconds", "imports (process start -> code imported)"),
    ("load", "load_seconds", "checkpoint load (metadata, weights)"),
    ("decode_wait", "decode_wait_seconds", "waiting for decoding"),
    ("model", "model_seconds", "model forward"),
    ("output", "output_seconds", "output"),
    ("other", "other_seconds", "other, inside the command"),
)


def write_videos(folder: str | Path, specs=VIDEO_SET) -> list[Path]:
    """Write one mp4 per ``(width, height, seconds, fps)`` of ``specs`` into ``folder`` (keyframe every 2 s)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (width, height, seconds, fps) in enumerate(specs):
        path = folder / f"video{i}_{width}x{height}_{seconds:g}s.mp4"
        paths.append(make_bench_video(path, seconds=seconds, fps=fps, width=width, height=height, gop=2 * fps))
    return paths


def write_checkpoint(
    path: str | Path, model_name: str = DEFAULT_MODEL, num_classes: int = 400, num_frames: int | None = None
) -> Path:
    """A checkpoint of ``model_name`` with random weights and the K400 test pipeline (dense, 1x3 views);
    ``num_frames``: the model's default (8) unless given."""
    model = create_model(model_name, num_classes=num_classes, **({"num_frames": num_frames} if num_frames else {}))
    clip = ClipSpec(
        num_frames=model.num_frames, sampling="dense", frame_stride=8, crop_size=model.img_size, views=(1, 3)
    )
    save_model(path, model, CheckpointMeta(model=model.model_config, clip=clip))
    return Path(path)


def predict_command(videos: list[str | Path], checkpoint: str | Path, extra: list[str] = ()) -> list[str]:
    """The ``xvit predict ... --json`` command line, run with this interpreter."""
    return [
        sys.executable,
        "-m",
        "xvit",
        "predict",
        *map(str, videos),
        "--checkpoint",
        str(checkpoint),
        "--json",
        *extra,
    ]


def run_once(command: list[str]) -> dict:
    """Run ``command`` once: its wall time measured outside and its own ``timing``."""
    env = dict(os.environ)
    package_root = str(Path(xvit.__file__).resolve().parent.parent)  # the subprocess runs this xvit
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    tick = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - tick
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise UserError(f"xvit predict exited with {proc.returncode}: {tail}; run it by hand: {' '.join(command)}")
    doc = json.loads(proc.stdout)
    timing = doc["timing"]
    run = {key: timing[src] for key, src, _ in PARTS}
    run.update(
        wall=wall,
        command=timing["command_seconds"],
        outside=max(0.0, wall - timing["command_seconds"]),
        model_fraction=timing["model_seconds"] / wall,
    )
    return {"seconds": run, "timing": timing, "model": doc["model"], "views": doc["views"]}


def describe_videos(videos: list[str | Path]) -> list[dict]:
    """Path, size, frames and seconds of each video."""
    out = []
    for path in videos:
        info = video_info(str(path))
        out.append(
            {
                "path": str(path),
                "width": info.width,
                "height": info.height,
                "frames": info.num_frames,
                "fps": round(info.fps, 3),
                "seconds": round(info.duration, 2),
            }
        )
    return out


def bench_predict(
    videos: list[str | Path], checkpoint: str | Path, *, repeats: int = 3, warmup: int = 1, extra: list[str] = ()
) -> dict:
    """``repeats`` timed runs of ``xvit predict videos --checkpoint checkpoint --json`` (+ ``extra``)."""
    if repeats < 1 or warmup < 0:
        raise UserError(f"--repeats {repeats} / --warmup {warmup}: need repeats >= 1 and warmup >= 0")
    described = describe_videos(videos)
    smallest = min(described, key=lambda v: v["width"] * v["height"])["path"]
    for _ in range(warmup):  # page cache: modules, checkpoint
        run_once(predict_command([smallest], checkpoint, [*extra, "--views", "1x1"]))
    runs = [run_once(predict_command(videos, checkpoint, list(extra))) for _ in range(repeats)]
    keys = list(runs[0]["seconds"])
    median = {k: statistics.median(r["seconds"][k] for r in runs) for k in keys}
    share = {
        k: statistics.median(r["seconds"][k] / r["seconds"]["wall"] for r in runs)
        for k in keys
        if k != "model_fraction"
    }
    first = runs[0]["timing"]
    return {
        "settings": {
            "checkpoint": str(checkpoint),
            "model": runs[0]["model"],
            "views": runs[0]["views"],
            "predict_args": list(extra),
            "threads": first["threads"],
            "runtime": first["runtime"],
            "repeats": repeats,
            "warmup": warmup,
            "python": sys.version.split()[0],
            "cpu": cpu_model(),
            "cpu_isa": cpu_isa(),
            "cpu_count": os.cpu_count(),
        },
        "videos": described,
        "runs": [r["seconds"] for r in runs],
        "median": median,
        "median_share": share,  # median over the runs of each part / that run's whole command
        "model_fraction": median["model_fraction"],
    }


GOAL = 0.9  # model seconds / whole command (issue 14)


def format_report(doc: dict) -> str:
    """The settings line, the table of parts (median seconds, share of the whole, every repeat) and the ratio."""
    s, med, share, runs = doc["settings"], doc["median"], doc["median_share"], doc["runs"]
    sizes = ", ".join(f"{v['width']}x{v['height']} {v['seconds']:g} s" for v in doc["videos"])
    lines = [
        f"# xvit predict: {s['model']}, views {s['views']}, {s['runtime']}, {s['threads']} threads"
        f"{' ' + ' '.join(s['predict_args']) if s['predict_args'] else ''}; {len(doc['videos'])} videos ({sizes}); "
        f"{s['repeats']} repeats after {s['warmup']} warm-up; {s['cpu']} ({' '.join(s['cpu_isa'])}); "
        "medians over the repeats, of the seconds and of each repeat's share of its whole command",
        "",
        "| part | seconds | share of the whole | repeats (seconds) |",
        "| --- | ---: | ---: | --- |",
    ]
    rows = [(key, label) for key, _, label in PARTS] + [("outside", "outside the command (process spawn, exit)")]
    for key, label in rows + [("wall", "**whole command** (wall, measured outside)")]:
        each = ", ".join(f"{r[key]:.2f}" for r in runs)
        lines.append(f"| {label} | {med[key]:.2f} | {share[key]:.3f} | {each} |")
    verdict = "met" if doc["model_fraction"] >= GOAL else "not met"
    lines += ["", f"model / whole command = {doc['model_fraction']:.3f} (goal >= {GOAL}: {verdict})"]
    return "\n".join(lines)
