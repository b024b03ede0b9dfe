"""An exported ONNX model run by onnxruntime, usable wherever xvit takes a model.

``OnnxModel(path)`` opens a file written by ``xvit export --format onnx`` (fp32, or int8 with
``--quantize int8``) and reads back what the export stored in its ``metadata_props``
(``EXPORT_KEYS``): the ``ClipSpec`` (frames, sampling, crop, short side, mean, std, views, class
names), the ``create_model`` arguments, the checkpoint's evaluation data and the quantization.
It is an ``nn.Module`` whose ``forward`` runs the onnxruntime session on CPU, so the decoding,
views and score averaging of ``xvit.engine.eval.predict`` and ``xvit.engine.eval.evaluate`` apply to it
unchanged.

onnx and onnxruntime are the optional extra ``xvit[export]``; without them a ``UserError`` says
what to install.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from xvit.data.clip import ClipSpec
from xvit.engine.checkpoint import CheckpointMeta
from xvit.errors import UserError

# metadata_props keys written by the export (values are JSON, or plain text for the two *_io keys)
CLIP_KEY = "xvit.clip"  # ClipSpec.to_dict(): the test-time pipeline and the class names
MODEL_KEY = "xvit.model"  # create_model arguments of the exported model
INPUT_KEY = "xvit.input"  # the input in words (name, layout, dtype, normalisation)
OUTPUT_KEY = "xvit.output"  # the output in words
DATA_KEY = "xvit.data"  # the checkpoint's evaluation data (format, root, val_annotations), for xvit eval --model
QUANT_KEY = "xvit.quantization"  # int8 exports only: how the file was quantized, in words
EXPORT_KEYS = (CLIP_KEY, MODEL_KEY, INPUT_KEY, OUTPUT_KEY, DATA_KEY, QUANT_KEY)


def require(module: str) -> ModuleType:
    """Import an optional dependency of the ``export`` extra, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise UserError(
            f"{module} is not installed ({err}); install the export extra: pip install 'xvit[export]'"
        ) from None


class OnnxModel(nn.Module):
    """onnxruntime (CPU) session of an xvit ONNX export: ``(B, C, T, H, W)`` float32 -> ``(B, K)`` logits.

    ``threads``: onnxruntime intra-op threads (default: ``torch.get_num_threads()``, so the two
    runtimes are compared on the same cores).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        ort = require("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise UserError(f"ONNX model {path} not found; write one with xvit export --format onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # no busy-waiting between runs: the threads that decode the next video need those cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types for bad files
            raise UserError(f"{path} is not a loadable ONNX model ({err})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if CLIP_KEY not in props:
            raise UserError(f"{path} has no xvit clip spec in its metadata; export the checkpoint with xvit export")
        self.path = path
        self.clip = ClipSpec.from_dict(json.loads(props[CLIP_KEY]))
        self.config: dict[str, Any] = json.loads(props.get(MODEL_KEY, "{}"))
        self.data: dict[str, Any] = json.loads(props.get(DATA_KEY, "{}"))
        self.quantization: str | None = props.get(QUANT_KEY)  # None: fp32
        self.input_name = self.session.get_inputs()[0].name
        self.num_frames = self.clip.num_frames  # what check_clip_shape compares the views with
        self.img_size = self.clip.crop_size
        self.num_classes = int(self.session.get_outputs()[0].shape[-1])

    @property
    def name(self) -> str | None:
        return self.config.get("name")

    @property
    def meta(self) -> CheckpointMeta:
        """What the file says about itself as a checkpoint's ``CheckpointMeta`` (model, clip, data)."""
        return CheckpointMeta(model=self.config, clip=self.clip, data=self.data)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, K) float32 logits, computed by onnxruntime on CPU."""
        feed = {self.input_name: x.detach().to("cpu", torch.float32).contiguous().numpy()}
        return torch.from_numpy(self.session.run(None, feed)[0])  # (B, K)
