"""Annotation files -> ``(samples, class_names)``: list files, Kinetics-400 CSV, SSv2 JSON, folders.

Formats (``load_annotations(format, annotations, root)``):

- ``list``: one ``PATH LABEL`` per line, separated by whitespace or a comma, integer labels,
  blank lines and ``#`` comments ignored, relative paths joined to ``root`` (default: the list
  file's folder). Class names come from an optional file (``read_class_names``); without it the
  classes are ``"0" .. str(max label)``.
- ``kinetics``: the official Kinetics-400 CSV (``label,youtube_id,time_start,time_end,split``;
  test CSVs without ``label`` give label -1). Videos ``{youtube_id}_{start:06d}_{end:06d}.*`` are
  found anywhere one folder deep under ``root`` (``root/{class}/...``, spaces or ``_``, or flat);
  classes are the sorted label names unless given.
- ``ssv2``: the official Something-Something-v2 JSON (``train.json``, ``validation.json``,
  ``test.json``) with its ``labels.json`` (template -> index string), found next to the JSON
  unless given; the class of an entry is its ``template`` without brackets; videos ``{id}.webm``.
- ``folder``: ``root/{class}/*.{mp4,webm,avi,mkv,mov}``, classes = sorted sub-folder names
  (hidden files and folders, e.g. macOS ``._x.mp4``, are skipped).

Label -1 means "unlabelled" (test splits). Out-of-range labels are not parse errors: they are
found by ``label_errors`` (reported by ``xvit check-data``, fatal in dataset construction).
Malformed lines raise ``UserError`` naming the file and line.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xvit.errors import UserError

__all__ = [
    "VideoSample",
    "FORMATS",
    "VIDEO_EXTENSIONS",
    "read_class_names",
    "parse_list",
    "parse_kinetics_csv",
    "parse_ssv2_json",
    "parse_folder",
    "detect_format",
    "load_annotations",
    "label_errors",
    "check_labels",
]

FORMATS = ("list", "kinetics", "ssv2", "folder")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov")
SSV2_LABEL_FILES = ("labels.json", "something-something-v2-labels.json")
UNLABELLED = -1

ClassNames = Sequence[str] | str | os.PathLike | None  # names, or a file of names


@dataclass(frozen=True)
class VideoSample:
    """One video and its class index (-1: unlabelled); ``origin`` is ``file:line`` for messages."""

    path: str
    label: int
    origin: str = field(default="", compare=False)


def _read_text(path: str | os.PathLike, what: str) -> list[str]:
    if not os.path.isfile(path):
        raise UserError(f"{what} {path} does not exist; pass the path of an existing file")
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names by index from a file.

    Text: one name per line (line order = index), or ``INDEX NAME`` / ``INDEX,NAME`` on every
    line (indices 0..K-1 in any order); blank and ``#`` lines ignored. JSON: ``{name: index}``
    (PySlowFast ``classids.json``, SSv2 ``labels.json``; index may be a string) or a list.
    """
    if str(path).endswith(".json"):
        data = _load_json(path, "class-names file")
        if isinstance(data, list):
            return [str(name) for name in data]
        if not isinstance(data, dict):
            raise UserError(f"class-names file {path}: expected a JSON object {{name: index}} or a list")
        pairs = [(int(i), str(name)) for name, i in data.items()]
        return _names_by_index(pairs, str(path))
    lines = [(n, s.strip()) for n, s in enumerate(_read_text(path, "class-names file"), 1)]
    lines = [(n, s) for n, s in lines if s and not s.startswith("#")]
    indexed = [re.fullmatch(r"(\d+)\s*[,\s]\s*(.+)", s) for _, s in lines]
    if lines and all(indexed):
        return _names_by_index([(int(m[1]), m[2].strip()) for m in indexed], str(path))
    return [s for _, s in lines]


def _names_by_index(pairs: list[tuple[int, str]], source: str) -> list[str]:
    indices = sorted(i for i, _ in pairs)
    if indices != list(range(len(pairs))):
        raise UserError(
            f"class-names file {source}: indices must be 0..{len(pairs) - 1}, each once; got {indices[:5]}..."
        )
    return [name for _, name in sorted(pairs)]


def _class_names(class_names: ClassNames) -> list[str] | None:
    if class_names is None:
        return None
    if isinstance(class_names, (str, os.PathLike)):
        return read_class_names(class_names)
    return [str(c) for c in class_names]


_LIST_LINE = re.compile(r"(.*?\S)\s*(?:,|\s)\s*(-?\d+)")


def parse_list(
    path: str | os.PathLike, root: str | os.PathLike | None = None, class_names: ClassNames = None
) -> tuple[list[VideoSample], list[str]]:
    """``PATH LABEL`` lines (space or comma) -> samples; see the module docstring."""
    root = Path(root) if root is not None else Path(path).parent
    samples = []
    for n, line in enumerate(_read_text(path, "annotation file"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _LIST_LINE.fullmatch(line)
        if m is None:
            raise UserError(
                f"{path}:{n}: expected 'PATH LABEL' (space or comma separated, integer label), got {line!r}"
            )
        samples.append(VideoSample(str(root / m[1].rstrip(", ")), int(m[2]), f"{path}:{n}"))
    names = _class_names(class_names)
    if names is None:
        names = [str(i) for i in range(max((s.label for s in samples), default=-1) + 1)]
    return samples, names


def _index_videos(root: Path, depth: int) -> dict[str, list[Path]]:
    """File stem -> video files with that stem, ``depth`` folder levels under ``root`` (1 or 2)."""
    found: dict[str, list[Path]] = {}
    folders = [root]
    for level in range(depth):
        sub = []
        for folder in folders:
            with os.scandir(folder) as entries:
                for e in entries:
                    if e.is_dir() and level + 1 < depth and not e.name.startswith("."):
                        sub.append(Path(e.path))
                    elif e.name.lower().endswith(VIDEO_EXTENSIONS) and not e.name.startswith(".") and e.is_file():
                        found.setdefault(os.path.splitext(e.name)[0], []).append(Path(e.path))
        folders = sub
    return found


def _kinetics_path(index: dict[str, list[Path]], root: Path, label: str, youtube_id: str, start: int, end: int) -> str:
    stem = f"{youtube_id}_{start:06d}_{end:06d}"
    candidates = index.get(stem) or index.get(youtube_id) or []
    folders = {label, label.replace(" ", "_")}
    for c in candidates:
        if c.parent.name in folders:
            return str(c)
    if candidates:
        return str(candidates[0])
    return str(root / label / f"{stem}.mp4" if label else root / f"{stem}.mp4")  # reported missing


def parse_kinetics_csv(
    path: str | os.PathLike, root: str | os.PathLike, class_names: ClassNames = None
) -> tuple[list[VideoSample], list[str]]:
    """Official Kinetics-400 CSV -> samples; class index = position in the sorted class names."""
    lines = _read_text(path, "annotation file")
    rows = list(csv.DictReader(lines))
    need = {"youtube_id", "time_start", "time_end"}
    if not rows or not need <= set(rows[0]):
        raise UserError(
            f"{path}:1: expected a Kinetics CSV header with {sorted(need)} (and 'label'), "
            f"got {lines[0] if lines else '(empty file)'!r}"
        )
    has_label = "label" in rows[0]
    names = _class_names(class_names)
    if names is None:
        names = sorted({r["label"] for r in rows if has_label and r["label"]})
    to_index = {name: i for i, name in enumerate(names)}
    index = _index_videos(Path(root), depth=2) if os.path.isdir(root) else {}
    samples = []
    for n, row in enumerate(rows, 2):
        try:
            start, end = int(float(row["time_start"])), int(float(row["time_end"]))
        except (TypeError, ValueError):
            raise UserError(
                f"{path}:{n}: time_start/time_end must be numbers, got {row['time_start']!r}, {row['time_end']!r}"
            ) from None
        label_name = (row.get("label") or "") if has_label else ""
        if not row["youtube_id"]:
            raise UserError(f"{path}:{n}: empty youtube_id")
        if label_name and label_name not in to_index:
            raise UserError(
                f"{path}:{n}: class {label_name!r} is not among the {len(names)} class "
                f"names; pass the training split's class names"
            )
        label = to_index[label_name] if label_name else UNLABELLED
        file = _kinetics_path(index, Path(root), label_name, row["youtube_id"], start, end)
        samples.append(VideoSample(file, label, f"{path}:{n}"))
    return samples, names


def _load_json(path: str | os.PathLike, what: str):
    text = "\n".join(_read_text(path, what))
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None


def _ssv2_class_names(path: Path, class_names: ClassNames) -> list[str] | None:
    if class_names is not None:
        return _class_names(class_names)
    for name in SSV2_LABEL_FILES:
        if (path.parent / name).is_file():
            return read_class_names(path.parent / name)
    return None


def parse_ssv2_json(
    path: str | os.PathLike, root: str | os.PathLike, class_names: ClassNames = None
) -> tuple[list[VideoSample], list[str]]:
    """Official Something-Something-v2 JSON -> samples (class = template without brackets)."""
    entries = _load_json(path, "annotation file")
    if not isinstance(entries, list):
        raise UserError(f"{path}: expected a JSON list of {{'id': ..., 'template': ...}} entries")
    names = _ssv2_class_names(Path(path), class_names)
    if names is None and any(isinstance(e, dict) and "template" in e for e in entries):
        raise UserError(
            f"{path}: no labels.json next to it; pass the class names "
            f"(--class-names something-something-v2-labels.json)"
        )
    to_index = {name: i for i, name in enumerate(names or [])}
    root, index = Path(root), None
    samples = []
    for n, entry in enumerate(entries):
        where = f"{path}: entry {n}"
        if not isinstance(entry, dict) or not str(entry.get("id", "")).strip():
            raise UserError(f"{where}: expected an object with an 'id', got {str(entry)[:80]!r}")
        label = UNLABELLED
        if "template" in entry:
            template = str(entry["template"]).replace("[", "").replace("]", "")
            if template not in to_index:
                raise UserError(f"{where}: template {template!r} is not in the class names")
            label = to_index[template]
        file = root / f"{entry['id']}.webm"
        if not file.is_file():  # re-encoded copies: any video extension
            index = index if index is not None else (_index_videos(root, 1) if root.is_dir() else {})
            file = (index.get(str(entry["id"])) or [file])[0]
        samples.append(VideoSample(str(file), label, where))
    return samples, list(names or [])


def parse_folder(root: str | os.PathLike, class_names: ClassNames = None) -> tuple[list[VideoSample], list[str]]:
    """``root/{class}/*.{mp4,webm,avi,mkv,mov}`` -> samples; classes are the sorted sub-folders."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset folder {root} does not exist; pass a folder with one sub-folder per class")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = _class_names(class_names) or folders
    to_index = {name: i for i, name in enumerate(names)}
    unknown = [f for f in folders if f not in to_index]
    if unknown:
        raise UserError(f"{root}: folders {unknown[:3]} are not among the {len(names)} class names")
    samples = []
    for folder in folders:
        for file in sorted((root / folder).iterdir()):
            if file.suffix.lower() in VIDEO_EXTENSIONS and not file.name.startswith(".") and file.is_file():
                samples.append(VideoSample(str(file), to_index[folder], str(file)))
    return samples, names


def detect_format(annotations: str | os.PathLike) -> str:
    """Guess the format: a folder, ``.csv`` (Kinetics), ``.json`` (SSv2), else a list file."""
    if os.path.isdir(annotations):
        return "folder"
    suffix = Path(annotations).suffix.lower()
    return {".csv": "kinetics", ".json": "ssv2"}.get(suffix, "list")


def load_annotations(
    format: str | None,
    annotations: str | os.PathLike,
    root: str | os.PathLike | None = None,
    class_names: ClassNames = None,
) -> tuple[list[VideoSample], list[str]]:
    """Parse ``annotations`` in ``format`` (None: ``detect_format``); for ``folder`` the
    annotations path is the dataset folder itself (``root`` may be omitted)."""
    format = format or detect_format(annotations)
    if format == "folder":
        return parse_folder(root if root is not None else annotations, class_names)
    if not os.path.isfile(annotations):
        raise UserError(f"annotation file {annotations} does not exist; pass the {format} annotation file")
    if format != "list" and root is None:
        raise UserError(f"format {format!r} needs the video folder: pass --root / data.root")
    if root is not None and not os.path.isdir(root):
        raise UserError(f"dataset root {root} does not exist; pass the folder holding the videos")
    if format == "list":
        return parse_list(annotations, root, class_names)
    if format == "kinetics":
        return parse_kinetics_csv(annotations, root, class_names)
    if format == "ssv2":
        return parse_ssv2_json(annotations, root, class_names)
    raise UserError(f"unknown annotation format {format!r}; use one of {', '.join(FORMATS)}")


def label_errors(samples: Sequence[VideoSample], num_classes: int, allow_unlabelled: bool = True) -> list[VideoSample]:
    """Samples whose label is outside ``[0, num_classes)`` (-1 allowed if ``allow_unlabelled``)."""
    return [s for s in samples if not (0 <= s.label < num_classes or (allow_unlabelled and s.label == UNLABELLED))]


def check_labels(samples: Sequence[VideoSample], num_classes: int, allow_unlabelled: bool = True) -> None:
    """Raise ``UserError`` naming the first out-of-range label and how many there are."""
    bad = label_errors(samples, num_classes, allow_unlabelled)
    if bad:
        allowed = f"[0, {num_classes})" + (" or -1 (unlabelled)" if allow_unlabelled else "")
        raise UserError(
            f"{bad[0].origin or bad[0].path}: label {bad[0].label} is outside {allowed}; "
            f"{len(bad)} of {len(samples)} samples have such labels "
            f"(check the class names or run `xvit check-data`)"
        )
