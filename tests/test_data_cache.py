"""The decoded-frame cache: the same frames as the decoder, the same errors for bad files, the
same dataset items with and without it, reuse and invalidation of the disk cache, and workers."""

from __future__ import annotations

import fcntl
import logging
import os
import threading

import pytest
import torch
from torch.utils.data import DataLoader
from videos import BROKEN_VIDEOS, STANDARD_VIDEOS, standard_videos

from xvit.data import cache as frame_cache
from xvit.data.annotations import VideoSample
from xvit.data.cache import build_disk_cache, build_frame_cache, build_memory_cache
from xvit.data.clip import Augment, ClipSpec
from xvit.data.datasets import VideoDataset, collate_views
from xvit.data.decode import VideoDecodeError, open_video
from xvit.errors import UserError


@pytest.fixture(scope="module")
def vids(tmp_path_factory) -> dict:
    return standard_videos(tmp_path_factory.getbasetemp() / "xvit_videos")


def _paths(vids) -> list[str]:
    return [str(vids[n]) for n in (*STANDARD_VIDEOS, *BROKEN_VIDEOS)]


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_cached_frames_equal_decoded_frames_and_errors_are_kept(vids, tmp_path, mode):
    paths = _paths(vids)
    cache = build_frame_cache(mode, paths, directory=tmp_path, workers=2, progress=False)
    assert len(cache) == len(paths) and cache.mode == mode
    for i, path in enumerate(paths):
        try:
            with open_video(path) as video:
                want = video.get_all()
        except VideoDecodeError:
            with pytest.raises(VideoDecodeError, match=os.path.basename(path)):
                cache.open(i)
            continue
        got = cache.open(i)
        assert got.num_frames == len(want)
        idx = [0, len(want) - 1, 1, 1] if len(want) > 1 else [0]
        assert torch.equal(got.get(idx), want[idx])
    assert "unreadable" in cache.summary()


def test_short_side_is_reduced_never_enlarged(vids):
    small, large = str(vids["h264.mp4"]), str(vids["h264.mp4"])
    cache = build_memory_cache([small, large], short_side=24, progress=False)
    h, w = cache.open(0).get([0]).shape[1:3]
    assert min(h, w) == 24
    assert min(build_memory_cache([small], short_side=4096, progress=False).open(0).get([0]).shape[1:3]) > 24


def test_disk_cache_is_reused_and_invalidated_per_file(vids, tmp_path, monkeypatch):
    paths = [str(tmp_path / f"v{i}.mp4") for i in range(3)]
    for p in paths:
        with open(p, "wb") as f:
            f.write(vids["h264.mp4"].read_bytes())
    build_disk_cache(paths, tmp_path / "cache", progress=False)
    decoded = []
    original = frame_cache._decode
    monkeypatch.setattr(frame_cache, "_decode", lambda job: decoded.append(job[0]) or original(job))
    again = build_disk_cache(paths, tmp_path / "cache", progress=False)
    assert decoded == [] and again.open(2).num_frames > 0  # nothing decoded the second time
    with open(paths[1], "wb") as f:  # a changed file (other size) is decoded again
        f.write(vids["vp9.webm"].read_bytes())
    third = build_disk_cache(paths, tmp_path / "cache", progress=False)
    assert decoded == [paths[1]]
    with open_video(paths[1]) as video:
        assert torch.equal(third.open(1).get([0, 3]), video.get([0, 3]))


def test_one_process_at_a_time_fills_a_disk_cache(vids, tmp_path, caplog):
    """While another process holds the cache's lock (filling it), a second builder waits; it then
    reads what the first wrote. Two builders at once appended into the same file, and each index
    pointed at bytes the other had written (two `xvit train` started together read wrong frames)."""
    paths = _paths(vids)[:3]
    key = frame_cache.cache_key(paths, None)
    built: list = []
    with open(tmp_path / f"{key}.lock", "a") as held, caplog.at_level(logging.INFO, logger="xvit.data.cache"):
        fcntl.flock(held, fcntl.LOCK_EX)  # flock locks are per open file: this thread's build must wait too
        builder = threading.Thread(target=lambda: built.append(build_disk_cache(paths, tmp_path, progress=False)))
        builder.start()
        builder.join(2.0)
        assert builder.is_alive() and not (tmp_path / f"{key}.u8").exists()
        assert "another process is filling it" in caplog.text
    builder.join(60)  # the lock went with the file
    with open_video(paths[0]) as video:
        assert torch.equal(built[0].open(0).get([0, 1]), video.get([0, 1]))


def test_disk_cache_key_names_the_decoder_and_its_libraries(vids, tmp_path, monkeypatch):
    """A disk cache filled by one decoder (or one version of its libraries) never serves another."""
    from xvit.data import decode, video

    paths = [str(vids["h264.mp4"])]
    build_disk_cache(paths, tmp_path / "cache", progress=False)
    decoded = []
    original = frame_cache._decode
    monkeypatch.setattr(frame_cache, "_decode", lambda job: decoded.append(job[2]) or original(job))
    build_disk_cache(paths, tmp_path / "cache", progress=False)
    assert decoded == []  # the same decoder: reused
    monkeypatch.setitem(video.REGISTRY, "other", video.DecoderEntry("xvit.data.decode", "VideoReader"))
    other = build_disk_cache(paths, tmp_path / "cache", progress=False, decoder="other")
    assert decoded == ["other"] and other.open(0).num_frames > 0  # another decoder: decoded again
    monkeypatch.setattr(decode, "library_version", lambda: "av 0.0 (libavcodec 0.0)")
    build_disk_cache(paths, tmp_path / "cache", progress=False)
    assert decoded == ["other", "pyav"]  # the default decoder with other libraries: decoded again
    assert len(list((tmp_path / "cache").glob("*.json"))) == 3
    assert frame_cache.cache_key(paths, None, "pyav") != frame_cache.cache_key(paths, 24, "pyav")


def test_memory_cache_decodes_a_repeated_path_once(vids, monkeypatch):
    decoded = []
    original = frame_cache._decode
    monkeypatch.setattr(frame_cache, "_decode", lambda job: decoded.append(job[0]) or original(job))
    a, b = str(vids["h264.mp4"]), str(vids["vp9.webm"])
    cache = build_memory_cache([a, b, a], progress=False)
    assert decoded == [a, b] and len(cache) == 3
    assert torch.equal(cache.open(0).get([0, 5]), cache.open(2).get([0, 5]))


def _dataset(vids, mode: str, cache=None) -> VideoDataset:
    names = ["h264.mp4", "vp9.webm", "garbage.mp4", "h264_odd_321x239.mp4"]
    samples = [VideoSample(str(vids[n]), i % 2) for i, n in enumerate(names)]
    clip = ClipSpec(num_frames=4, crop_size=16, views=(2, 3))
    transform = Augment(short_side_range=(16, 20)).train_transform(clip) if mode == "train" else clip.test_transform()
    ds = VideoDataset(
        samples,
        ["a", "b"],
        num_frames=4,
        sampling="segment",
        mode=mode,
        transform=transform,
        num_clips=2 if mode == "test" else 1,
        num_crops=3 if mode == "test" else 1,
    )
    ds.attach_cache(cache)
    return ds


@pytest.mark.parametrize("mode", ["train", "test"])
def test_dataset_items_are_the_same_with_and_without_the_cache(vids, tmp_path, mode):
    plain = _dataset(vids, mode)
    paths = [s.path for s in plain.samples]
    cached = _dataset(vids, mode, build_disk_cache(paths, tmp_path, progress=False))
    for index in (0, 1, 3):
        torch.manual_seed(index)
        a = plain[index]
        torch.manual_seed(index)
        b = cached[index]
        assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    if mode == "test":
        assert cached[2][0] is None  # the unreadable video is missing, as without the cache
    loader = DataLoader(
        cached, batch_size=2, num_workers=2, timeout=120, collate_fn=collate_views if mode == "test" else None
    )
    assert len(list(loader)) == 2


def test_bad_mode_and_size_mismatch_are_user_errors(vids, tmp_path):
    with pytest.raises(UserError, match="data.cache='ram'"):
        build_frame_cache("ram", [])
    with pytest.raises(ValueError, match="holds 1 videos but the dataset 4"):
        _dataset(vids, "test", build_memory_cache([str(vids["h264.mp4"])], progress=False))
    assert build_frame_cache("none", ["x"]) is None
    logging.getLogger(__name__).info("ok")
