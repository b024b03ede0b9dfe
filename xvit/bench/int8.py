"""``xvit bench-deploy --accuracy CKPT``: what int8 quantization costs in accuracy, measured for real.

The checkpoint is exported by the real command path (``xvit.engine.deploy.export.export_checkpoint``,
checks included): fp32 ONNX, and ONNX with ``quantize="int8"`` (and ``"uint8"`` if asked). The
checkpoint in PyTorch and the files (run by onnxruntime) are then evaluated on the checkpoint's
own val set with its test views (``xvit.engine.eval.evaluate.evaluate_checkpoint``, as ``xvit eval`` does):
top-1, top-5, pair order accuracy where the classes hold time-reversed pairs, and the fraction of
videos whose predicted class is the PyTorch model's.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from xvit.engine.checkpoint import load_checkpoint
from xvit.engine.deploy.export import export_checkpoint
from xvit.engine.deploy.onnx_model import OnnxModel
from xvit.engine.eval.evaluate import evaluate_checkpoint
from xvit.errors import UserError

EAGER = "PyTorch eager"


def int8_accuracy(
    checkpoint: str | Path, work: Path, *, quantize: tuple[str, ...] = ("int8",), workers: int = 0, batch_size: int = 8
) -> dict:
    """Export ``checkpoint`` into ``work`` (fp32, and each of ``quantize``) and evaluate them and the
    checkpoint; the JSON document (rows: PyTorch, fp32, then the quantized files)."""
    ckpt = Path(checkpoint)
    model, meta = load_checkpoint(ckpt)
    exports = {"onnxruntime fp32": export_checkpoint(ckpt, "onnx", work / f"{ckpt.stem}.onnx")}
    for q in quantize:
        exports[f"onnxruntime {q}"] = export_checkpoint(ckpt, "onnx", work / f"{ckpt.stem}.{q}.onnx", quantize=q)
    failed = [r.path.name for r in exports.values() if not r.passed]
    if failed:
        raise UserError(f"the export check failed for {', '.join(failed)}; run xvit export on {ckpt} to see it")
    models = {EAGER: model, **{label: OnnxModel(r.path) for label, r in exports.items()}}
    rows, reference = [], None
    for label, m in models.items():
        res, _, info = evaluate_checkpoint(
            m, meta, ckpt, meta.clip.views, device=torch.device("cpu"), batch_size=batch_size, workers=workers,
            progress=False,
        )  # fmt: skip
        preds = res["scores"].argmax(dim=1)  # (N,) in dataset order
        reference = preds if reference is None else reference
        row = {k: float(res[k]) for k in ("top1", "top5")}
        row["pair_order_acc"] = float(res["pair_order_acc"]) if "pair_order_acc" in res else None
        row["same_prediction"] = 100.0 * float((preds == reference).float().mean())
        exp = exports.get(label)
        row["size_bytes"] = (exp.path if exp else ckpt).stat().st_size
        rows.append({"runtime": label, **row, "num_videos": res["num_videos"], "seconds": round(res["seconds"], 1)})
    return {
        "checkpoint": str(ckpt),
        "model": meta.name,
        "data": info["annotations"] or info["root"],
        "views": info["views"],
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "checks": {
            label: {"max_diff": r.max_quantized_diff or r.max_diff, "max_prob_diff": r.max_prob_diff}
            for label, r in exports.items()
        },
        "rows": rows,
    }


def format_accuracy(doc: dict) -> str:
    """The evaluation of the three as a markdown table, and int8's cost against fp32 in a line."""
    lines = [
        f"{doc['model']} ({doc['checkpoint']}) on {doc['data']}: {doc['rows'][0]['num_videos']} videos, "
        f"{doc['views']} views, {doc['threads']} threads",
        "",
        "| runtime | file (MiB) | top-1 | top-5 | pair order acc | predictions equal to PyTorch's | eval (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in doc["rows"]:
        order = "—" if r["pair_order_acc"] is None else f"{r['pair_order_acc']:.2f}"
        lines.append(
            f"| {r['runtime']} | {r['size_bytes'] / 2**20:.2f} | {r['top1']:.2f} | {r['top5']:.2f} | {order} | "
            f"{r['same_prediction']:.1f}% | {r['seconds']:.1f} |"
        )
    lines.append("")
    fp32 = doc["rows"][1]
    for q in doc["rows"][2:]:
        cost = f"{q['runtime'].split()[-1]} - fp32: top-1 {q['top1'] - fp32['top1']:+.2f} points"
        if fp32["pair_order_acc"] is not None:
            cost += f", pair order {q['pair_order_acc'] - fp32['pair_order_acc']:+.2f} points"
        lines.append(cost)
    return "\n".join(lines)
