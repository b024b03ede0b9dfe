"""Writing the synthetic benchmark: H.264 mp4s (or PNGs), list files and ``meta.json``; the dataset cache.

Two tasks share the layout and the cache. ``task: temporal`` (the default) renders every video
(:func:`~xvit.data.synthetic.scenes.render_video`) and encodes it with PyAV (libx264, yuv420p,
BT.601, bit-exact from run to run); ``task: images`` renders the still pictures of
:mod:`~xvit.data.synthetic.stills` and writes them as PNG (lossless). :func:`generate_synthetic`
runs the items in a process pool; :func:`ensure_synthetic` keeps one finished dataset per
parameter set under a cache folder (``synthetic-<hash>``, see :func:`cache_key`), generating it
only when it is missing or damaged. The layout is described in :mod:`xvit.data.synthetic`.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from xvit.data.synthetic.scenes import (
    CLASS_NAMES,
    CLASSES,
    FLIP_LABEL_MAP,
    render_video,
)
from xvit.data.synthetic.stills import STILL_CLASS_NAMES, render_image
from xvit.errors import UserError
from xvit.progress import progress_bar

__all__ = [
    "DEFAULTS",
    "GENERATOR_VERSION",
    "IMAGE_DEFAULTS",
    "TASKS",
    "SyntheticInfo",
    "cache_key",
    "ensure_synthetic",
    "generate_synthetic",
]

# Bump when the drawing or encoding changes: cached datasets keyed by the old version are rebuilt.
GENERATOR_VERSION = 3
# The ``generator`` of meta.json (the package's name, whatever module writes it): marks a folder as ours.
GENERATOR = "xvit.data.synthetic"
DEFAULTS: dict[str, int | float] = {
    "seed": 0,
    "videos_per_class": 80,  # 14 classes -> 1,120 videos, 896 train / 224 val
    "num_frames": 16,  # a model samples 8 of them (one per TSN segment)
    "size": 64,  # square frames, pixels
    "fps": 12,
    "val_fraction": 0.2,
}
# ``task: images``: still pictures (xvit.data.synthetic.stills), the image-pretraining stand-in.
IMAGE_DEFAULTS: dict[str, int | float | str] = {
    "task": "images",
    "seed": 0,
    "images_per_class": 1000,  # 14 classes -> 14,000 pictures, 11,200 train / 2,800 val
    "size": 32,  # square pictures, pixels
    "val_fraction": 0.2,
}
TASKS = ("temporal", "images")
_CRF = 20  # x264 quality; object/background contrast survives it with a wide margin


def _rgb_to_yuv420(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB (T, H, W, 3) -> PyAV's packed yuv420p (T, 3H/2, W): BT.601, limited range.

    Done here, element-wise, so that what the encoder gets is a pure function of the frames
    and the colour matrix is explicit (decoders assume BT.601 for untagged SD video).
    """
    num_frames, height, width, _ = frames.shape
    rgb = frames.astype(np.float32) / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]  # (T, H, W)
    y = 16.0 + 65.481 * r + 128.553 * g + 24.966 * b
    pooled = rgb.reshape(num_frames, height // 2, 2, width // 2, 2, 3).mean(axis=(2, 4))  # (T, H/2, W/2, 3)
    r, g, b = pooled[..., 0], pooled[..., 1], pooled[..., 2]
    u = 128.0 - 37.797 * r - 74.203 * g + 112.0 * b  # (T, H/2, W/2)
    v = 128.0 + 112.0 * r - 93.786 * g - 18.214 * b
    planes = [p.reshape(num_frames, -1) for p in (y, u, v)]  # (T, H*W), (T, H*W/4), (T, H*W/4)
    packed = np.concatenate(planes, axis=1).reshape(num_frames, height * 3 // 2, width)
    return np.clip(np.rint(packed), 0, 255).astype(np.uint8)


def _write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    """Encode uint8 (T, H, W, 3) RGB frames as H.264 (libx264, yuv420p, BT.601).

    One thread and x264's plain C code (``asm=0``): with its SIMD code, x264 wrote different
    (valid) streams for identical input in a few percent of these small videos, from run to run
    (apparently reading uninitialised memory), which broke "same seed, same decoded frames".
    The C code costs ~1.3-1.5x encoding time.
    """
    rate = Fraction(int(fps))
    with av.open(str(path), mode="w") as container:
        options = {"crf": str(_CRF), "preset": "veryfast", "threads": "1", "x264-params": "asm=0"}
        stream = container.add_stream("libx264", rate=rate, options=options)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = 1 / rate
        for index, image in enumerate(_rgb_to_yuv420(frames)):
            frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
            frame.pts, frame.time_base = index, 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))  # flush delayed frames


def _make_item(job: tuple) -> None:
    """Worker: render and write one video, ``(path, label, index, seed, frames, size, fps)``, or
    one picture, ``(path, label, index, seed, size)``."""
    if len(job) == 5:
        path, label, index, seed, size = job
        Image.fromarray(render_image(label, index, seed=seed, size=size)).save(path, compress_level=1)
        return
    path, label, index, seed, num_frames, size, fps = job
    frames = render_video(label, index, seed=seed, num_frames=num_frames, size=size)
    _write_mp4(Path(path), frames, fps)


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _run_jobs(jobs: list[tuple], workers: int, progress: bool) -> None:
    """Run ``_make_item`` over ``jobs`` in this process (workers <= 1) or a process pool."""
    if workers <= 1 or len(jobs) < 2:
        with progress_bar(total=len(jobs), desc="synthetic", unit="video", disable=not progress) as bar:
            for job in jobs:
                _make_item(job)
                bar.update()
        return
    # fork where available: workers need only numpy and av, and spawning would re-import torch.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method)) as pool:
        results = pool.map(_make_item, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers))))
        with progress_bar(total=len(jobs), desc="synthetic", unit="video", disable=not progress) as bar:
            for _ in results:
                bar.update()


@dataclass(frozen=True)
class SyntheticInfo:
    """What :func:`generate_synthetic` wrote: the root and the counts (also in ``meta.json``)."""

    root: Path
    classes: tuple[str, ...]
    num_train: int
    num_val: int
    params: dict  # the normalised parameters (DEFAULTS' keys, or IMAGE_DEFAULTS' for task images)
    seconds: float  # wall-clock generation time
    flip_label_map: dict[int, int] = field(default_factory=lambda: dict(FLIP_LABEL_MAP))

    @property
    def train_list(self) -> Path:
        return self.root / "train.txt"

    @property
    def val_list(self) -> Path:
        return self.root / "val.txt"

    @property
    def classes_file(self) -> Path:
        return self.root / "classes.txt"

    @property
    def num_videos(self) -> int:
        return self.num_train + self.num_val


def task_of(params: dict) -> str:
    """``"temporal"`` or ``"images"``: which dataset the parameters describe (UserError otherwise)."""
    task = params.get("task", "temporal")
    if task not in TASKS:
        raise UserError(f"synthetic task {task!r} is not one of {list(TASKS)}")
    return task


def _check_params(params: dict) -> dict:
    """Validate and normalise the generation parameters (keys of DEFAULTS, or IMAGE_DEFAULTS for
    ``task: images``); UserError on bad values. The temporal task's dict has no ``task`` key, so
    its cache key is what it was before the image task existed."""
    task = task_of(params)
    defaults = IMAGE_DEFAULTS if task == "images" else {**DEFAULTS, "task": "temporal"}
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise UserError(f"unknown synthetic {task} dataset parameter(s) {unknown}: use {sorted(defaults)}")
    p = {**defaults, **params}
    count = "images_per_class" if task == "images" else "videos_per_class"
    ints = (count, "seed", "size") + (() if task == "images" else ("num_frames", "fps"))
    out = {k: int(p[k]) for k in ints}
    out["val_fraction"] = float(p["val_fraction"])
    if out[count] < 1:
        raise UserError(f"{count} {out[count]} must be at least 1")
    if task == "images":
        if out["size"] < 8:
            raise UserError(f"size {out['size']} must be at least 8 pixels")
        out["task"] = "images"
    else:
        if out["num_frames"] < 2:
            raise UserError(f"num_frames {out['num_frames']} must be at least 2 (classes are defined by motion)")
        if out["size"] < 16 or out["size"] % 2:
            raise UserError(
                f"size {out['size']} must be an even number of pixels >= 16 (H.264 yuv420p needs even sizes)"
            )
        if out["fps"] < 1:
            raise UserError(f"fps {out['fps']} must be at least 1")
    if not 0.0 <= out["val_fraction"] < 1.0:
        raise UserError(f"val_fraction {out['val_fraction']} must be in [0, 1)")
    return out


def _num_val(videos_per_class: int, val_fraction: float) -> int:
    """Validation videos per class: the last ones; at least one if val_fraction > 0, one train kept."""
    if val_fraction <= 0 or videos_per_class < 2:
        return 0
    return min(videos_per_class - 1, max(1, round(videos_per_class * val_fraction)))


def _prepare_dir(out: Path) -> None:
    """Create ``out``; clear a previous synthetic dataset there, refuse any other non-empty folder."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory: choose another output folder")
    if out.is_dir() and any(out.iterdir()):
        try:
            ours = json.loads((out / "meta.json").read_text()).get("generator") == GENERATOR
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise UserError(f"{out} is not empty and holds no synthetic dataset: choose a new or empty folder")
        shutil.rmtree(out / "videos", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _write_meta(out: Path, meta: dict) -> None:
    """Write ``out/meta.json`` atomically (a temporary file renamed over it)."""
    tmp = out / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, out / "meta.json")


def _write_text(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def generate_synthetic(
    out_dir: str | os.PathLike, *, workers: int | None = None, progress: bool = True, **params
) -> SyntheticInfo:
    """Write the synthetic benchmark to ``out_dir`` (layout: see :mod:`xvit.data.synthetic`).

    ``params``: those of ``DEFAULTS`` (``seed``, ``videos_per_class``, ``num_frames``, ``size``,
    ``fps``, ``val_fraction``) for the temporal videos, or ``task="images"`` and those of
    ``IMAGE_DEFAULTS`` (``seed``, ``images_per_class``, ``size``, ``val_fraction``) for the still
    pictures. The same parameters give the same decoded frames whatever ``workers`` is (``None``:
    one per available core). Per class, the last ``round(per_class * val_fraction)`` items (at
    least one when ``val_fraction > 0``, and never all) form the validation split.
    ``meta.json`` says ``"complete": true`` only once every file is written. A folder holding an
    earlier synthetic dataset (finished or not) is overwritten; any other non-empty one is refused.
    """
    params = _check_params(params)
    images = task_of(params) == "images"
    out = Path(out_dir)
    _prepare_dir(out)
    # Marks the folder as ours (an interrupted run can be redone in place) but not complete.
    _write_meta(out, {"generator": GENERATOR, "version": GENERATOR_VERSION, "complete": False, "params": params})
    start = time.perf_counter()
    names = STILL_CLASS_NAMES if images else CLASS_NAMES
    per_class = params["images_per_class" if images else "videos_per_class"]
    num_val = _num_val(per_class, params["val_fraction"])
    folder, ext = ("images", "png") if images else ("videos", "mp4")
    common = (params["seed"], params["size"]) if images else (params["seed"], *_video_args(params))
    jobs, train, val = [], [], []
    for label, name in enumerate(names):
        (out / folder / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            rel = f"{folder}/{name}/{index:05d}.{ext}"
            jobs.append((str(out / rel), label, index, *common))
            (val if index >= per_class - num_val else train).append(f"{rel} {label}")
    _run_jobs(jobs, _default_workers() if workers is None else int(workers), progress)
    _write_text(out / "classes.txt", list(names))
    _write_text(out / "train.txt", train)
    _write_text(out / "val.txt", val)
    seconds = time.perf_counter() - start
    flip = {} if images else dict(FLIP_LABEL_MAP)
    meta = {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "complete": True,
        "params": params,
        "classes": list(names),
        "class_kinds": {n: "still" for n in names} if images else {c.name: c.kind for c in CLASSES},
        "flip_label_map": {str(k): v for k, v in flip.items()},
        "num_classes": len(names),
        "num_videos": len(jobs),
        "num_train": len(train),
        "num_val": len(val),
        "codec": "PNG (lossless)" if images else f"libx264 crf {_CRF} preset veryfast asm=0, yuv420p BT.601",
        "lists": {"train": "train.txt", "val": "val.txt", "classes": "classes.txt"},
        "seconds": round(seconds, 2),
    }
    _write_meta(out, meta)
    return SyntheticInfo(out, names, len(train), len(val), params, seconds, flip)


def _video_args(params: dict) -> tuple[int, int, int]:
    """(frames, size, fps) of a temporal video job."""
    return params["num_frames"], params["size"], params["fps"]


def _complete(root: Path, params: dict) -> bool:
    """Whether ``root`` holds a finished dataset made with ``params`` by this generator version."""
    try:
        meta = json.loads((root / "meta.json").read_text())
        lines = [line for name in ("train.txt", "val.txt") for line in (root / name).read_text().splitlines()]
    except (OSError, ValueError):
        return False
    if not (
        isinstance(meta, dict)
        and meta.get("complete") is True
        and meta.get("version") == GENERATOR_VERSION
        and meta.get("params") == params
        and len(lines) == meta.get("num_videos")
    ):
        return False
    return all((root / line.rsplit(" ", 1)[0]).is_file() for line in lines)


def cache_key(**params) -> str:
    """The cache folder name for these generation parameters (defaults filled in)."""
    params = _check_params(params)
    blob = json.dumps({"version": GENERATOR_VERSION, **params}, sort_keys=True)
    return "synthetic-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def ensure_synthetic(
    cache_dir: str | os.PathLike, *, workers: int | None = None, progress: bool = True, **params
) -> Path:
    """A complete synthetic dataset for ``params`` under ``cache_dir``, generated only if needed.

    The folder is ``cache_dir/synthetic-<hash of params>``; a new one is written to a temporary
    folder and renamed when finished, so an interrupted run never leaves a half dataset that
    looks complete. ``params`` are those of :func:`generate_synthetic` (defaults: ``DEFAULTS``).
    """
    params = _check_params(params)
    cache = Path(cache_dir)
    final = cache / cache_key(**params)
    if _complete(final, params):
        return final
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=cache))
    try:
        generate_synthetic(tmp, workers=workers, progress=progress, **params)
        if final.exists():  # a stale, incomplete leftover (or a finished one from a concurrent run)
            if _complete(final, params):
                shutil.rmtree(tmp)
                return final
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
