"""What one training run reports (``results.json``): accuracy, pair order accuracy, per-class and
per-pair tables, the confusion matrix, train accuracy and throughput, and what the model is."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from xvit.engine.eval.metrics import pair_order_accuracy
from xvit.engine.eval.reports import json_float
from xvit.models.flops import count_params


def _num(x: float | None) -> float | None:
    return json_float(x, digits=2)


def format_duration(seconds: float | None) -> str:
    """``95`` -> ``"1m 35s"``; None -> ``"-"``."""
    if seconds is None:
        return "-"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes}m {sec:02d}s" if minutes else f"{sec}s"


def run_results(
    *,
    name: str,
    model: nn.Module,
    run: dict,
    res: dict,
    class_names: Sequence[str],
    pairs: Sequence[tuple[int, int]] = (),
) -> dict:
    """The ``results.json`` of a run.

    ``run``: ``run_dir``, ``epochs``, ``global_step``, ``global_batch``, ``train_time_s``,
    ``train_acc`` (last epoch, against the unmixed labels), ``views``, ``best_top1``, ``skipped``
    (``xvit.engine.train.ledger.SkipLedger.summary``);
    ``res``: ``xvit.engine.eval.evaluate.evaluate``'s dict ({} when evaluation is off); ``pairs``:
    label pairs that are time reversals of each other (pair order accuracy).
    """
    steps, batch, seconds = run["global_step"], run["global_batch"], run["train_time_s"]
    out = {
        "model": name,
        "describe": model.describe(),
        "options": dict(getattr(model, "model_config", {}).get("options", {})),
        "run_dir": str(run["run_dir"]),
        "epochs": run["epochs"],
        "global_step": steps,
        "params_m": round(count_params(model) / 1e6, 3),
        "train_time_s": round(seconds, 1),
        "train_clips_per_s": round(steps * batch / seconds, 1) if seconds > 0 else None,
        "train_acc": _num(run.get("train_acc")),
        "views": run["views"] if res else None,
        "best_top1": run.get("best_top1"),
        "skipped": run.get("skipped"),  # the skip ledger: {"train": n, "val": m, "videos": [...]}
    }
    for key in ("top1", "top5", "mean_class_acc"):
        out[key] = _num(res.get(key))
    out["num_videos"], out["num_missing"] = res.get("num_videos"), res.get("num_missing")
    out["eval_time_s"] = round(res["time_s"], 1) if res else None
    if not res:
        return out
    per_class = torch.as_tensor(res["per_class_acc"]).tolist()
    out["per_class_acc"] = {n: _num(a) for n, a in zip(class_names, per_class)}
    out["confusion"] = res["confusion"].tolist()
    out["class_names"] = list(class_names)
    if pairs:
        order = pair_order_accuracy(res["confusion"], pairs)
        out["pair_order_acc"] = _num(order["mean"])
        out["pairs"] = [
            {
                "pair": f"{class_names[a]} / {class_names[b]}",
                "order_acc": _num(acc),
                "videos": n,
                "acc": [out["per_class_acc"][class_names[a]], out["per_class_acc"][class_names[b]]],
            }
            for (a, b), acc, n in zip(pairs, order["pairs"], order["counts"])
        ]
    return out


def print_run(r: dict) -> None:
    """One line: the run's headline numbers."""
    if r.get("top1") is None:
        print(f"{r['model']}: trained {r['epochs']} epochs in {format_duration(r['train_time_s'])} -> {r['run_dir']}")
        return
    order = f"  pair order {r['pair_order_acc']:.1f}%" if r.get("pair_order_acc") is not None else ""
    print(
        f"{r['model']}: top-1 {r['top1']:.2f}%  top-5 {r['top5']:.2f}%  mean class acc {r['mean_class_acc']:.2f}%"
        f"{order} ({r['views']} views, {r['num_videos']} videos); "
        f"trained in {format_duration(r['train_time_s'])} -> {r['run_dir']}"
    )
