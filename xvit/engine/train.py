"""``train(cfg)``: the training job of ``xvit train`` — one model, or a model and the models it is
compared with (``compare``), each trained and evaluated the same way in ``run_dir/<name>``, then a
side-by-side table (``summary.md`` / ``summary.json``). Under ``torchrun`` every process runs it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from xvit.engine import distributed as xdist
from xvit.engine.config import Config, save_config
from xvit.engine.prepare import cpu_threads, prepare
from xvit.engine.runtime import seed_everything
from xvit.engine.trainer import Trainer, format_duration
from xvit.models.registry import check_model_name


def train(cfg: Config) -> list[dict]:
    """Run the job of ``cfg`` in this process (joining ``torchrun``'s process group if there is one).

    Process-wide torch settings the run changes (threads, deterministic algorithms) are restored
    afterwards, for in-process callers (tests, notebooks).
    """
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    info = xdist.init_distributed(cfg.train.device)
    try:
        return train_all(cfg, info)
    finally:
        xdist.cleanup()
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def check_model_names(cfg: Config) -> None:
    """``UserError`` naming the key (``model.name``, ``compare[i]``) of an unregistered model."""
    check_model_name(cfg.model.name, "model.name")
    for i, name in enumerate(cfg.compare):
        check_model_name(name, f"compare[{i}]")


def train_all(cfg: Config, dist: xdist.DistInfo) -> list[dict]:
    """Train ``cfg.model.name`` then each ``cfg.compare`` model; print a comparison table; return results."""
    check_model_names(cfg)
    names = [cfg.model.name, *cfg.compare]
    if not cfg.compare:
        return [train_model(cfg, dist)]
    results = []
    for name in names:
        sub = dataclasses.replace(
            cfg, run_dir=str(Path(cfg.run_dir) / name), compare=[], model=dataclasses.replace(cfg.model, name=name)
        )
        results.append(train_model(sub, dist, top_config=cfg))
        if results[-1].get("stopped"):  # train.stop_after_steps: the whole job stops, as if killed
            return results
    if dist.rank == 0:
        table = results_table(results)
        print("\n" + table)
        Path(cfg.run_dir, "summary.md").write_text(table + "\n")
        Path(cfg.run_dir, "summary.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def results_table(results: list[dict]) -> str:
    """Markdown table: model, top-1, top-5, mean class accuracy, views, params, train/eval time."""
    rows = [
        "| model | top-1 | top-5 | mean class acc | views | params (M) | train time | eval time |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in results:
        top1, top5, mca = ("-" if r.get(k) is None else f"{r[k]:.1f}" for k in ("top1", "top5", "mean_class_acc"))
        rows.append(
            f"| {r['model']} | {top1} | {top5} | {mca} | {r.get('views', '-')} "
            f"| {r['params_m']:.2f} | {format_duration(r['train_time_s'])} | {format_duration(r.get('eval_time_s'))} |"
        )
    return "\n".join(rows)


def train_model(cfg: Config, dist: xdist.DistInfo, top_config: Config | None = None) -> dict:
    """Prepare (all checks), create the run directory, train, evaluate; return the run's results."""
    seed_everything(cfg.seed, deterministic=cfg.train.deterministic, threads=cpu_threads(cfg, dist))
    prep = prepare(cfg, dist)
    run_dir = Path(cfg.run_dir).expanduser()
    if dist.rank == 0:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        if top_config is not None:
            save_config(top_config, run_dir.parent / "config.yaml")
    xdist.barrier()
    return Trainer(prep, dist, run_dir).fit()
