"""The video data pipeline (library only; the commands are in ``xvit.cli``): X-ViT paper §4.

``video`` is the decoder interface (``open_video(path, decoder)``) that the two decoders implement,
``decode`` (PyAV, the default) and ``decode_torchcodec``, both seeking rather than decoding whole
files; ``sampling`` chooses the frames of a clip (dense / segment), ``annotations`` parses list /
Kinetics / SSv2 / folder datasets, ``transforms`` are the clip-consistent augmentations, ``clip``
holds ``ClipSpec`` (the test-time pipeline a checkpoint carries), ``Augment`` and the multi-view
cutting, ``datasets`` turns annotations into ``torch`` datasets that skip unreadable videos,
``synthetic`` writes the built-in temporal benchmark, ``check`` / ``bench`` scan a dataset and
time the loader.
"""

from xvit.data.annotations import (
    FORMATS,
    VideoSample,
    check_labels,
    detect_format,
    label_errors,
    load_annotations,
    parse_folder,
    parse_kinetics_csv,
    parse_list,
    parse_ssv2_json,
    read_class_names,
)
from xvit.data.clip import Augment, ClipSpec, decode_views, parse_view_list, parse_views
from xvit.data.datasets import VideoDataset, build_dataset, collate_views
from xvit.data.decode import VideoReader
from xvit.data.sampling import SAMPLINGS, clip_indices, dense_indices, multi_clip_indices, segment_indices
from xvit.data.video import (
    DECODERS,
    Video,
    VideoDecodeError,
    VideoInfo,
    check_decoder,
    decode_all,
    decode_frames,
    open_video,
    video_info,
)

__all__ = [
    "DECODERS",
    "FORMATS",
    "SAMPLINGS",
    "Augment",
    "ClipSpec",
    "Video",
    "VideoDataset",
    "VideoDecodeError",
    "VideoInfo",
    "VideoReader",
    "VideoSample",
    "build_dataset",
    "check_decoder",
    "check_labels",
    "clip_indices",
    "collate_views",
    "decode_all",
    "decode_frames",
    "decode_views",
    "dense_indices",
    "detect_format",
    "label_errors",
    "load_annotations",
    "multi_clip_indices",
    "open_video",
    "parse_folder",
    "parse_kinetics_csv",
    "parse_list",
    "parse_ssv2_json",
    "parse_view_list",
    "parse_views",
    "read_class_names",
    "segment_indices",
    "video_info",
]
