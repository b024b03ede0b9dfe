"""Seek decoding (``decode_frames``) against full decoding, metadata, rotation, broken files: with
each decoder (the ``decoder`` fixture), and the pyav decoder's own seeking and index fallbacks.
The two decoders against each other: ``test_data_decoders.py``."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from videos import BROKEN_VIDEOS, STANDARD_VIDEOS, read_frame_index, standard_videos

from xvit.data import decode
from xvit.data.decode import open_video
from xvit.data.video import VideoDecodeError, decode_all, decode_frames, video_info
from xvit.errors import UserError

GOOD = sorted(STANDARD_VIDEOS)


@pytest.fixture(scope="session")
def vids(tmp_path_factory) -> dict:
    return standard_videos(tmp_path_factory.getbasetemp() / "xvit_videos")


class FullDecodes(dict):
    """Reference full decodes of the good videos, per decoder, decoded once per session."""

    def __init__(self, vids: dict) -> None:
        super().__init__()
        self.vids = vids

    def __missing__(self, key: tuple[str, str]) -> torch.Tensor:
        name, decoder = key
        self[key] = decode_all(self.vids[name], decoder)
        return self[key]


@pytest.fixture(scope="session")
def full_decodes(vids) -> FullDecodes:
    return FullDecodes(vids)


@pytest.fixture
def full(full_decodes, decoder) -> dict:
    """Full decodes by name with this test's decoder."""
    return {name: full_decodes[name, decoder] for name in GOOD}


@pytest.mark.parametrize("name", GOOD)
def test_full_decode_has_every_frame_in_order(vids, full, decoder, name):
    frames = full[name]
    expected = STANDARD_VIDEOS[name]["num_frames"]
    assert frames.dtype == torch.uint8 and frames.shape[0] == expected and frames.shape[-1] == 3
    assert [read_frame_index(f.numpy()) for f in frames] == list(range(expected))
    assert video_info(vids[name], decoder).num_frames == expected


@pytest.mark.parametrize("name", GOOD)
def test_decode_frames_equals_full_decode(vids, full, decoder, name):
    n = full[name].shape[0]
    rng = np.random.default_rng(len(name))
    index_sets = [[0], [n - 1], [n - 1, 0], [0, 0, 0], list(range(n))[::-3]]
    index_sets += [rng.integers(0, n, size=int(rng.integers(1, 9))).tolist() for _ in range(6)]
    for indices in index_sets:  # unsorted, repeated, far apart, near the end
        got = decode_frames(vids[name], indices, decoder)
        assert torch.equal(got, full[name][indices]), (name, indices)


def test_odd_sizes(full):
    assert full["vp9_odd_97x61.webm"].shape[1:] == (61, 97, 3)
    assert full["h264_odd_321x239.mp4"].shape[1:] == (239, 321, 3)


def test_seek_decodes_only_what_is_needed(vids):  # pyav: torchcodec does not count decoded frames
    path = vids["h264_long_gop.mp4"]  # 150 frames, keyframe every 30, B-frames
    with open_video(path) as video:
        frames = video.get([121, 120])
        assert [read_frame_index(f.numpy()) for f in frames] == [121, 120]
        assert video.frames_decoded <= 30  # from keyframe 120, not from 0
    with open_video(path) as video:
        video.get([5, 140])  # far apart: a second seek instead of decoding through 6..119
        assert video.frames_decoded <= 2 * 30
    with open_video(path) as video:
        video.get([0, 2, 4])  # close together: one pass, no seek back
        assert video.frames_decoded <= 3 + 4  # plus the frames in flight in the decoder


def test_vfr_falls_back_to_exact_timestamps(vids, full_decodes):
    # The MKV reports a constant 25 fps but its frame durations alternate: the constant-rate mapping
    # is detected as wrong on the decoded pts and the packet timestamp table is used instead.
    with open_video(vids["h264_vfr.mkv"]) as video:
        assert video._rate_map() is not None
        assert torch.equal(video.get([3, 17, 38]), full_decodes["h264_vfr.mkv", "pyav"][[3, 17, 38]])
    with open_video(vids["h264_vfr.mp4"]) as video:
        assert video._rate_map() is None  # average rate != base rate: variable frame rate


def test_sequential_fallback(vids, full_decodes, monkeypatch):
    # A stream whose timestamps cannot be mapped decodes sequentially from the start.
    monkeypatch.setattr(decode.VideoReader, "_rate_map", lambda self: None)
    monkeypatch.setattr(decode.VideoReader, "_table_map", lambda self: None)
    got = decode_frames(vids["h264_bframes.mp4"], [50, 3, 3])
    assert torch.equal(got, full_decodes["h264_bframes.mp4", "pyav"][[50, 3, 3]])


def test_rotation_metadata(vids, full, decoder):
    plain = full["h264_unrotated.mp4"].numpy()
    for name, angle in (("h264_rot90.mp4", 90), ("h264_rot180.mp4", 180)):
        info = video_info(vids[name], decoder)
        assert info.rotation == angle
        expected = np.rot90(plain, angle // 90, axes=(1, 2))  # counter-clockwise, per frame
        assert np.array_equal(full[name].numpy(), expected)
        assert (info.height, info.width) == expected.shape[1:3]
        assert np.array_equal(decode_frames(vids[name], [7], decoder).numpy(), expected[[7]])


def test_rotate_helper_on_a_small_matrix():
    image = np.arange(6).reshape(2, 3, 1)  # [[0 1 2], [3 4 5]]
    assert decode._rotate(image, 90)[..., 0].tolist() == [[2, 5], [1, 4], [0, 3]]  # counter-clockwise
    assert decode._rotate(image, -90)[..., 0].tolist() == [[3, 0], [4, 1], [5, 2]]
    assert decode._rotate(image, 180)[..., 0].tolist() == [[5, 4, 3], [2, 1, 0]]
    assert decode._rotate(image, 0) is image


def test_video_info(vids, decoder):
    info = video_info(vids["vp9.webm"], decoder)  # WebM: no frame count in the container, counted from packets
    assert (info.num_frames, info.width, info.height) == (50, 64, 48)
    assert info.fps == pytest.approx(12.0, rel=1e-3)  # torchcodec: 50 frames / duration of the content
    assert info.duration == pytest.approx(50 / 12, abs=0.05)
    one = video_info(vids["one_frame.mp4"], decoder)
    assert one.num_frames == 1
    assert decode_frames(vids["one_frame.mp4"], [0, 0], decoder).shape == (2, 48, 64, 3)


@pytest.mark.parametrize("name", BROKEN_VIDEOS + ("missing.mp4",))
def test_broken_files_raise_video_decode_error(vids, tmp_path, decoder, name):
    path = vids.get(name, tmp_path / name)
    last = {"truncated_faststart.mp4": 39, "truncated.webm": 49}.get(name, 0)
    with pytest.raises(VideoDecodeError) as err:
        decode_frames(path, [0, last], decoder)
    assert err.value.path == str(path) and str(path) in str(err.value)
    assert isinstance(err.value, UserError)
    if name not in ("truncated_faststart.mp4", "truncated.webm"):  # these open; their end is missing
        with pytest.raises(VideoDecodeError):
            video_info(path, decoder)
    if name != "truncated.webm":  # the WebM's first half decodes: decode_all returns it
        with pytest.raises(VideoDecodeError):
            decode_all(path, decoder)


def test_error_pickles_and_bad_indices(vids, decoder):
    err = pickle.loads(pickle.dumps(VideoDecodeError("a.mp4", "empty file")))
    assert (err.path, err.reason, str(err)) == ("a.mp4", "empty file", "a.mp4: empty file")
    with pytest.raises(ValueError):
        decode_frames(vids["h264.mp4"], [], decoder)
    with pytest.raises(ValueError):
        decode_frames(vids["h264.mp4"], [-1], decoder)
    with pytest.raises(VideoDecodeError, match="truncated"):
        decode_frames(vids["h264.mp4"], [400], decoder)  # far past the end


def test_containers_are_closed(vids, decoder):
    fd_dir = "/proc/self/fd"
    if not os.path.isdir(fd_dir):
        pytest.skip("needs /proc")
    decode_frames(vids["h264.mp4"], [3], decoder)  # the decoder's own libraries are loaded
    before = len(os.listdir(fd_dir))
    for _ in range(40):
        decode_frames(vids["h264.mp4"], [3, 30], decoder)
        video_info(vids["vp9.webm"], decoder)
        for name in ("garbage.mp4", "audio_only.m4a", "truncated_faststart.mp4"):
            with pytest.raises(VideoDecodeError):
                decode_frames(vids[name], [0, 39], decoder)
    assert len(os.listdir(fd_dir)) <= before + 2
