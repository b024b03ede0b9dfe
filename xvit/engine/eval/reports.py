"""The reports of an evaluation: ``metrics.json``, the confusion matrix (CSV + PNG), per-video
predictions (CSV + JSON), and the views study's table and plot (supplement Fig. 1)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor


def json_float(x: float | None, digits: int = 4) -> float | None:
    """A float for JSON: NaN -> None (JSON has no NaN), rounded to ``digits`` decimals."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), digits)


def predictions(res: dict, class_names: list[str], paths: list[str], topk: int = 5) -> list[dict]:
    """One dict per evaluated video: index, path, label, predicted, correct and the top-k."""
    k = min(topk, res["scores"].shape[1]) if len(res["scores"]) else 0
    out = []
    if k == 0:
        return out
    probs, classes = res["scores"].topk(k, dim=1)  # (N, k), (N, k)
    for i, y, p, c in zip(res["indices"].tolist(), res["labels"].tolist(), probs.tolist(), classes.tolist()):
        out.append(
            {
                "index": i,
                "path": paths[i],
                "label": y,
                "label_name": class_names[y] if y >= 0 else None,
                "predicted": c[0],
                "predicted_name": class_names[c[0]],
                "correct": c[0] == y if y >= 0 else None,
                "topk": [{"class": class_names[cj], "index": cj, "prob": round(pj, 6)} for cj, pj in zip(c, p)],
            }
        )
    return out


def write_reports(out_dir: Path, res: dict, *, class_names: list[str], paths: list[str], info: dict) -> None:
    """``metrics.json``, ``confusion.csv``/``.png`` and ``predictions.csv``/``.json`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    per_class = res["per_class_acc"].tolist()
    metrics = {
        **info,
        "top1": json_float(res["top1"]),
        "top5": json_float(res["top5"]),
        "mean_class_acc": json_float(res["mean_class_acc"]),
        "num_videos": res["num_videos"],
        "num_missing": res["num_missing"],
        "missing": [{"index": i, "path": paths[i]} for i in res["missing"]],
        "num_classes": len(class_names),
        "num_classes_present": res["num_classes_present"],
        "per_class_acc": {name: json_float(a) for name, a in zip(class_names, per_class)},
        "pair_order_acc": json_float(res.get("pair_order_acc")),
        "seconds": json_float(res.get("seconds")),
        "notes": "accuracies in percent over the readable videos (unreadable ones are listed in 'missing', "
        "not counted); mean_class_acc averages the classes present in the labels; "
        "scores are softmax averaged over the views",
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    with open(out_dir / "confusion.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label \\ predicted", *class_names])
        for name, row in zip(class_names, res["confusion"].tolist()):
            w.writerow([name, *row])
    plot_confusion(
        out_dir / "confusion.png",
        res["confusion"],
        class_names,
        title=f"{info.get('model') or ''} {info.get('views', '')}: top-1 {res['top1']:.2f}%",
    )
    preds = predictions(res, class_names, paths)
    (out_dir / "predictions.json").write_text(json.dumps(preds, indent=1) + "\n")
    k = len(preds[0]["topk"]) if preds else 0
    with open(out_dir / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "index",
                "path",
                "label",
                "label_name",
                "predicted",
                "predicted_name",
                "correct",
                *[c for j in range(1, k + 1) for c in (f"top{j}_class", f"top{j}_prob")],
            ]
        )
        for p in preds:
            topk = [v for t in p["topk"] for v in (t["class"], f"{t['prob']:.6f}")]
            correct = "" if p["correct"] is None else int(p["correct"])
            w.writerow(
                [
                    p["index"],
                    p["path"],
                    p["label"],
                    p["label_name"],
                    p["predicted"],
                    p["predicted_name"],
                    correct,
                    *topk,
                ]
            )


def plot_confusion(path: Path, confusion: Tensor, class_names: list[str], title: str = "") -> None:
    """Row-normalised confusion matrix as a PNG (class names on the axes up to 50 classes)."""
    k = confusion.shape[0]
    rows = confusion.double().sum(1, keepdim=True).clamp(min=1)
    norm = (confusion.double() / rows).numpy()  # (K, K) fraction of each true class
    side = min(4 + 0.22 * k, 24) if k <= 50 else 10
    fig = Figure(figsize=(side + 1.5, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if k <= 20:  # counts in the cells
        for (i, j), n in np.ndenumerate(confusion.numpy()):
            if n:
                ax.text(
                    j, i, str(n), ha="center", va="center", fontsize=7, color="white" if norm[i, j] > 0.5 else "black"
                )
    if k <= 50:
        ax.set_xticks(range(k), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(k), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title.strip())
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_views_table(out_dir: Path, rows: list[dict], title: str = "") -> None:
    """The views study: ``views.csv``, ``views.md`` and ``views.png`` (top-1 vs temporal clips)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cols = [
        "views",
        "num_clips",
        "num_crops",
        "num_views",
        "top1",
        "top5",
        "mean_class_acc",
        "num_videos",
        "num_missing",
        "seconds",
    ]
    with open(out_dir / "views.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: (f"{r[c]:.2f}" if isinstance(r[c], float) else r[c]) for c in cols})
    lines = [
        "| clips x crops | views | top-1 (%) | top-5 (%) | mean class acc (%) | videos | unreadable |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['views']} | {r['num_views']} | {r['top1']:.2f} | {r['top5']:.2f} | "
            f"{r['mean_class_acc']:.2f} | {r['num_videos']} | {r['num_missing']} |"
        )
    (out_dir / "views.md").write_text((f"{title}\n\n" if title else "") + "\n".join(lines) + "\n")
    fig = Figure(figsize=(5.5, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for s in sorted({r["num_crops"] for r in rows}):
        pts = sorted((r["num_clips"], r["top1"]) for r in rows if r["num_crops"] == s)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{s} spatial crop(s)")
    ax.set_xlabel("temporal clips")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_xticks(sorted({r["num_clips"] for r in rows}))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "views.png", dpi=100)
