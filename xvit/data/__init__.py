"""The video data pipeline: decoding, frame sampling, annotations, datasets (SPEC §6).

``decode`` reads frames with PyAV (seeking, not whole-file decoding), ``sampling`` chooses the
frames of a clip (dense / segment), ``annotations`` parses list / Kinetics / SSv2 / folder
datasets, ``datasets`` turns them into ``torch`` datasets that skip unreadable videos.
Clip transforms live in ``xvit.data.transforms``, the synthetic benchmark in
``xvit.data.synthetic``; ``xvit check-data`` / ``xvit bench-data`` are ``check`` / ``bench``.
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
from xvit.data.datasets import VideoDataset, build_dataset, collate_views
from xvit.data.decode import VideoDecodeError, VideoInfo, VideoReader, decode_all, decode_frames, open_video, video_info
from xvit.data.sampling import SAMPLINGS, clip_indices, dense_indices, multi_clip_indices, segment_indices

__all__ = [
    "FORMATS", "SAMPLINGS", "VideoDataset", "VideoDecodeError", "VideoInfo", "VideoReader", "VideoSample",
    "build_dataset", "check_labels", "clip_indices", "collate_views", "decode_all", "decode_frames",
    "dense_indices", "detect_format", "label_errors", "load_annotations", "multi_clip_indices", "open_video",
    "parse_folder", "parse_kinetics_csv", "parse_list", "parse_ssv2_json", "read_class_names",
    "segment_indices", "video_info",
]
