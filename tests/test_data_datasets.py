"""VideoDataset: train / multi-view test items, one decode per test video, bad videos skipped."""

from __future__ import annotations

import gc
import logging
import pickle

import av
import pytest
import torch
from torch.utils.data import DataLoader
from videos import read_frame_index, standard_videos

from xvit.data import datasets
from xvit.data.annotations import VideoSample
from xvit.data.clip import Augment, ClipSpec
from xvit.data.datasets import VideoDataset, build_dataset, collate_views
from xvit.data.decode import VideoReader, decode_frames
from xvit.data.sampling import multi_clip_indices
from xvit.errors import UserError

BAD = ["missing.mp4", "empty.mp4", "truncated.mp4", "audio_only.m4a", "garbage.mp4"]


@pytest.fixture(scope="session")
def vids(tmp_path_factory) -> dict:
    return standard_videos(tmp_path_factory.getbasetemp() / "xvit_videos")


@pytest.fixture(autouse=True)
def fresh_log_memory():
    datasets._reported.clear()  # "logged once per process": forget between tests


def frame_ids(frames: torch.Tensor) -> list[int]:
    """Frame indices of a uint8 (T, H, W, C) clip of index videos."""
    return [read_frame_index(f.numpy()) for f in frames]


def keep_frames(frames: torch.Tensor, label: int):
    """Train transform that returns the raw uint8 clip (T, H, W, C)."""
    return frames, label


def two_crops(frames: torch.Tensor) -> torch.Tensor:
    """Test transform: uint8 (T, H, W, C) -> float (2, C, T, H, W/2): left and right halves."""
    clip = frames.permute(3, 0, 1, 2).float()  # (C, T, H, W)
    half = clip.shape[-1] // 2
    return torch.stack([clip[..., :half], clip[..., half : 2 * half]])  # (2, C, T, H, W/2)


def sample(vids, name: str, label: int = 0) -> VideoSample:
    return VideoSample(str(vids.get(name, f"/nonexistent/{name}")), label, f"list.txt:{label}")


def test_train_item_default_transform(vids):
    ds = VideoDataset([sample(vids, "h264.mp4", 1)], ["a", "b"], num_frames=4, sampling="dense", frame_stride=3)
    clip, label = ds[0]
    assert clip.shape == (3, 4, 48, 64) and clip.dtype == torch.float32 and label == 1
    assert 0.0 <= float(clip.min()) and float(clip.max()) <= 1.0
    assert ds.num_classes == 2 and ds.class_names == ["a", "b"] and len(ds) == 1


@pytest.mark.parametrize("sampling,step", [("dense", 3), ("segment", None)])
def test_train_clip_frames_follow_the_sampler(vids, sampling, step):
    ds = VideoDataset(
        [sample(vids, "h264_bframes.mp4")],
        ["a"],
        num_frames=6,
        sampling=sampling,
        frame_stride=3,
        transform=keep_frames,
    )
    for _ in range(5):
        ids = frame_ids(ds[0][0])
        if step:
            assert [b - a for a, b in zip(ids, ids[1:])] == [step] * 5
        else:  # one frame per segment of 10
            assert [i // 10 for i in ids] == list(range(6))


def test_test_views_decoded_once_equal_views_decoded_separately(vids, monkeypatch):
    path = vids["h264_long_gop.mp4"]
    ds = VideoDataset(
        [sample(vids, "h264_long_gop.mp4", 0)],
        ["a"],
        num_frames=4,
        sampling="segment",
        mode="test",
        transform=two_crops,
        num_clips=3,
        num_crops=2,
    )
    calls, real_get = [], VideoReader.get
    monkeypatch.setattr(VideoReader, "get", lambda self, idx: calls.append(list(idx)) or real_get(self, idx))
    views, label, index = ds[0]
    clips = multi_clip_indices("segment", 150, 4, num_clips=3)
    assert calls == [sorted({i for c in clips for i in c})]  # the union of the 3 clips, one decode
    assert views.shape == (6, 3, 4, 48, 32) and (label, index) == (0, 0)
    for k, clip in enumerate(clips):
        separate = two_crops(decode_frames(path, clip))  # (2, C, T, H, W/2)
        for s in range(2):
            assert torch.equal(views[k * 2 + s], separate[s])  # v = temporal * num_crops + spatial


def test_dense_test_clips_are_the_evenly_spaced_ones(vids):
    ds = VideoDataset(
        [sample(vids, "h264_long_gop.mp4")],
        ["a"],
        num_frames=3,
        sampling="dense",
        frame_stride=5,
        mode="test",
        num_clips=2,
        transform=lambda f: f.permute(3, 0, 1, 2)[None].float(),
    )
    views, _, _ = ds[0]
    ids = [frame_ids(v.permute(1, 2, 3, 0).to(torch.uint8)) for v in views]
    assert ids == multi_clip_indices("dense", 150, 3, stride=5, num_clips=2)


def test_bad_videos_are_skipped_in_training(vids, caplog):
    samples = [sample(vids, n) for n in BAD] + [sample(vids, "vp9.webm", 0)]
    ds = VideoDataset(samples, ["a"], num_frames=4, sampling="segment", transform=keep_frames, seed=1)
    with caplog.at_level(logging.WARNING, logger="xvit.data"):
        for i in range(len(samples)):
            frames, label = ds[i]  # every item is the good video, never an exception
            assert frames.shape == (4, 48, 64, 3) and label == 0
        for i in range(len(samples)):
            ds[i]
    assert ds.num_skipped == len(BAD)  # a video known to be unreadable is never opened again
    logged = [r.getMessage() for r in caplog.records if "skipping unreadable video" in r.getMessage()]
    assert len(logged) == len(set(logged)) <= len(BAD)  # once per path
    assert any("missing.mp4: file not found" in m for m in logged)


def test_training_stops_with_a_clear_error_when_nearly_everything_is_bad(vids):
    ds = VideoDataset([sample(vids, n) for n in BAD], ["a"], num_frames=4, max_retries=5)
    with pytest.raises(UserError, match="5 videos in a row could not be read.*check-data"):
        ds[0]  # every one of the 5 is tried once, none twice
    big = VideoDataset([sample(vids, n) for n in BAD * 4], ["a"], num_frames=4, max_retries=5)
    with pytest.raises(UserError, match="6 videos in a row could not be read.*check-data"):
        big[0]


def test_bad_videos_are_missing_in_test_mode(vids):
    samples = [
        sample(vids, "h264.mp4", 1),
        sample(vids, "truncated_faststart.mp4", 0),
        sample(vids, "empty.mp4", 1),
        sample(vids, "vp9.webm", 0),
    ]
    ds = VideoDataset(samples, ["a", "b"], num_frames=4, sampling="segment", mode="test", num_clips=2)
    items = [ds[i] for i in range(4)]
    assert items[1][0] is None and items[2][0] is None and ds.num_skipped == 2
    batch = collate_views(items)
    assert batch["views"].shape == (2, 2, 3, 4, 48, 64)
    assert batch["labels"].tolist() == [1, 0] and batch["indices"].tolist() == [0, 3]
    assert batch["missing"] == [1, 2]
    empty = collate_views([items[1]])
    assert empty["views"] is None and empty["missing"] == [1] and empty["labels"].numel() == 0


def test_dataloader_workers_epochs_and_pickling(vids):
    samples = [sample(vids, "h264_long_gop.mp4", 0), sample(vids, "empty.mp4", 1)] * 2
    ds = VideoDataset(
        samples, ["a", "b"], num_frames=4, sampling="dense", frame_stride=2, transform=keep_frames, seed=3
    )
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.samples == ds.samples

    def starts(epoch: int, workers: int = 2) -> list[int]:
        ds.set_epoch(epoch)
        torch.manual_seed(epoch)  # the DataLoader draws its worker base seed from torch
        loader = DataLoader(ds, batch_size=2, num_workers=workers, timeout=120 if workers else 0)
        return [frame_ids(clip)[0] for frames, _ in loader for clip in frames]

    first = starts(0)
    assert len(first) == 4 and starts(0) == first  # reproducible
    assert starts(0, workers=0) == first  # seeded by (seed, epoch, index): the same in any process
    assert starts(1) != first  # a new epoch samples new offsets
    test = VideoDataset(samples, ["a", "b"], num_frames=4, mode="test")
    batches = list(DataLoader(test, batch_size=2, num_workers=2, collate_fn=collate_views, timeout=120))
    assert [b["missing"] for b in batches] == [[1], [3]]


def _live_decoders() -> list:
    kinds = (av.container.Container, av.codec.context.CodecContext)
    return [o for o in gc.get_objects() if issubclass(type(o), kinds)]  # type(): no proxy's __class__


def test_reading_in_process_leaves_no_decoder_for_a_forked_worker(vids):
    # a decoder left to the garbage collector is freed in whichever process collects it: in a
    # forked DataLoader worker, freeing FFmpeg's slice threads (absent there) blocks forever
    samples = [sample(vids, "h264_long_gop.mp4", 0), sample(vids, "empty.mp4", 1)] * 2
    ds = VideoDataset(samples, ["a", "b"], num_frames=4, sampling="dense", transform=keep_frames, seed=3)
    gc.collect()
    gc.disable()
    try:
        for i in range(len(ds)):
            ds[i]  # 1 and 3 are replaced by a readable video after an error
        assert _live_decoders() == []
        reader = VideoReader(vids["h264.mp4"])
        reader.info()
        reader.close()
        assert _live_decoders() == []  # closed: freed now, even while the reader itself lives on
    finally:
        gc.enable()


def test_build_dataset_end_to_end(vids, tmp_path):
    pytest.importorskip("xvit.data.transforms")
    ann = tmp_path / "train.txt"
    ann.write_text("h264.mp4 0\nvp9.webm 1\nmissing.mp4 1\n")
    (tmp_path / "classes.txt").write_text("zero\none\n")
    root = str(vids["h264.mp4"].parent)
    common = dict(format="list", root=root, annotations=str(ann), class_names=str(tmp_path / "classes.txt"))
    spec = ClipSpec(num_frames=4, crop_size=32, sampling="dense", frame_stride=2)
    train = build_dataset("train", **common, clip=spec, augment=Augment(short_side_range=(32, 40)))
    assert train.mode == "train" and train.class_names == ["zero", "one"]
    clip, label = train[0]
    assert clip.shape == (3, 4, 32, 32) and clip.dtype == torch.float32 and label == 0
    train[2]  # the missing video is skipped
    test = build_dataset("test", **common, clip=spec.replace(sampling="segment", views=(2, 3)))
    views, label, index = test[1]
    assert views.shape == (6, 3, 4, 32, 32) and (label, index) == (1, 1)
    assert test[2][0] is None


def test_build_dataset_user_errors(vids, tmp_path):
    pytest.importorskip("xvit.data.transforms")
    ann = tmp_path / "val.txt"
    ann.write_text("h264.mp4 0\nvp9.webm 5\nh264.mp4 7\n")
    root = str(vids["h264.mp4"].parent)
    with pytest.raises(UserError, match="dataset root .*nope does not exist"):
        build_dataset("val", format="list", root=str(tmp_path / "nope"), annotations=str(ann))
    with pytest.raises(UserError, match="annotation file .*absent.txt does not exist"):
        build_dataset("val", format="list", root=root, annotations=str(tmp_path / "absent.txt"))
    with pytest.raises(UserError, match=r"val\.txt:2: label 5 is outside \[0, 2\); 2 of 3"):
        build_dataset("val", format="list", root=root, annotations=str(ann), class_names=["a", "b"])
    with pytest.raises(UserError, match="split 'dev'"):
        build_dataset("dev", format="list", root=root, annotations=str(ann))


def test_build_dataset_folder_format_detected(vids, tmp_path):
    pytest.importorskip("xvit.data.transforms")
    for rel, name in (("cat/a.mp4", "h264.mp4"), ("dog/b.webm", "vp9.webm")):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(vids[name].read_bytes())
    ds = build_dataset("val", root=str(tmp_path), clip=ClipSpec(num_frames=2, crop_size=32))
    assert ds.class_names == ["cat", "dog"] and [s.label for s in ds.samples] == [0, 1]
    assert ds[1][0].shape == (1, 3, 2, 32, 32)
    with pytest.raises(UserError, match="no dataset given"):
        build_dataset("val")
