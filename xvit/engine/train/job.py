"""``train(cfg)``: the training job of ``xvit train`` — one model, or a model and the models it is
compared with (``compare``), each trained and evaluated the same way in ``run_dir/<name>``, then a
side-by-side table (``summary.md`` / ``summary.json``); on a CPU the compared models may train at the
same time, each in a process of its own (``train.parallel``, ``xvit.engine.train.side_by_side``).
Under ``torchrun`` every process runs it.
While a model trains, ``train.stop_signals`` stop the job after a snapshot (``xvit.engine.train.preempt``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from xvit.engine import distributed as xdist
from xvit.engine.config import Config, save_config
from xvit.engine.eval.summary import write_summary
from xvit.engine.runtime import seed_everything
from xvit.engine.snapshot import remove_leftovers
from xvit.engine.train import preempt, side_by_side
from xvit.engine.train.prepare import cpu_threads, prepare
from xvit.engine.train.trainer import Trainer
from xvit.errors import PeerFailure, Stopped
from xvit.models.registry import check_model_name

log = logging.getLogger("xvit.train")


def train(cfg: Config) -> list[dict]:
    """Run the job of ``cfg`` in this process (joining ``torchrun``'s process group if there is one).

    Process-wide torch settings the run changes (threads, deterministic algorithms) are restored
    afterwards, for in-process callers (tests, notebooks).
    A collective that fails under DDP (a rank died or hung for ``train.dist_timeout_s``) becomes
    a ``PeerFailure`` (a ``UserError``) naming that rank; the process group is then left as it is (destroying a broken
    group can block) and the process exits. A stop signal (``train.stop_signals``) ends the job with
    ``xvit.errors.Stopped`` once the run's snapshot is written.
    """
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    info = xdist.init_distributed(cfg.train.device, timeout_s=cfg.train.dist_timeout_s)
    broken, signals = False, preempt.StopSignals()
    try:
        return train_all(cfg, info, signals)
    except Exception as err:
        if not xdist.is_peer_failure(err):
            raise
        broken = True
        raise PeerFailure(xdist.peer_failure(err, cfg.train.dist_timeout_s)) from None
    finally:
        if not broken:
            xdist.cleanup()
        signals.restore()  # after a stop they stayed ignored through the teardown above
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def check_model_names(cfg: Config) -> None:
    """``UserError`` naming the key (``model.name``, ``compare[i]``) of an unregistered model."""
    check_model_name(cfg.model.name, "model.name")
    for i, name in enumerate(cfg.compare):
        check_model_name(name, f"compare[{i}]")


def train_all(cfg: Config, dist: xdist.DistInfo, signals: preempt.StopSignals | None = None) -> list[dict]:
    """Train ``cfg.model.name`` then each ``cfg.compare`` model (or all at once: ``train.parallel``);
    write and print the summary; return the results.

    A compared model is trained exactly as the main one (data, recipe, seed, budget) but built with
    its family's defaults: ``model.options`` (head, mixing, ...) belong to ``model.name`` only, so
    a frame-ViT baseline stays a frame ViT. A stop signal ends the job with ``Stopped`` (after the
    run's snapshot); ``train.stop_after_steps`` ends it with a result that has ``stopped``.
    """
    check_model_names(cfg)
    signals = signals or preempt.StopSignals()
    if not cfg.compare:
        return _raise_if_signalled([train_model(cfg, dist, signals=signals)], cfg, dist)
    subs = per_model_configs(cfg)
    if side_by_side.wanted(cfg, dist, len(subs)):
        results = _raise_if_signalled(side_by_side.run(cfg, subs, dist, signals), cfg, dist)
    else:
        results = []
        for sub in subs:
            results += _raise_if_signalled([train_model(sub, dist, top_config=cfg, signals=signals)], cfg, dist)
            if results[-1].get("stopped"):
                break
    if any(r.get("stopped") for r in results):  # train.stop_after_steps: the whole job stops, as if killed
        return results
    if dist.rank == 0:
        out = Path(cfg.run_dir).expanduser()
        print("\n" + write_summary(out, results))
        print(f"summary: {out / 'summary.md'}, {out / 'summary.json'}, {out / 'summary.png'}")
    return results


def per_model_configs(cfg: Config) -> list[Config]:
    """The config of each model of the job, trained in ``run_dir/<name>``: ``model.name`` with
    ``model.options``, then each ``compare`` model with its family's defaults."""
    subs = []
    for i, name in enumerate([cfg.model.name, *cfg.compare]):
        model = dataclasses.replace(cfg.model, name=name, options=dict(cfg.model.options) if i == 0 else {})
        subs.append(dataclasses.replace(cfg, run_dir=str(Path(cfg.run_dir) / name), compare=[], model=model))
    return subs


def _raise_if_signalled(results: list[dict], cfg: Config, dist: xdist.DistInfo) -> list[dict]:
    """``Stopped`` with the line that says where each stopped model's snapshot is and how to continue
    (rank 0's), if a stop signal ended a run of ``results``; else ``results``."""
    stopped = [r for r in results if r.get("signal")]
    if not stopped:
        return results
    config = Path(cfg.run_dir).expanduser() / "config.yaml"
    where = "; ".join(
        f"after global step {r['global_step']} of {r['model']}; snapshot {r['snapshot'] or 'none yet'}" for r in stopped
    )
    raise Stopped(
        f"xvit train: stopped by {preempt.signal_name(stopped[0]['signal'])} {where}; to continue, run the same "
        f"command again (or: xvit train --config {config} --resume)"
        if dist.rank == 0
        else ""
    )


def train_model(
    cfg: Config,
    dist: xdist.DistInfo,
    top_config: Config | None = None,
    signals: preempt.StopSignals | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Prepare (all checks), create the run directory, train, evaluate; return the run's results.

    The stop signals are caught while the model trains (``signals`` records them); before that,
    during the checks and the data preparation, a signal ends the process as it always did.
    ``on_progress(global_step, total_steps)`` is called after every optimizer step.
    """
    seed_everything(cfg.seed, deterministic=cfg.train.deterministic, threads=cpu_threads(cfg, dist))
    prep = prepare(cfg, dist)
    run_dir = Path(cfg.run_dir).expanduser()
    if dist.rank == 0:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        removed = remove_leftovers(run_dir / "checkpoints")  # what saves interrupted by a kill left
        if removed:
            log.info("removed %d leftovers of interrupted checkpoint saves: %s", len(removed), ", ".join(removed))
        save_config(cfg, run_dir / "config.yaml")
        if top_config is not None:
            save_config(top_config, run_dir.parent / "config.yaml")
    xdist.barrier()
    signals = signals or preempt.StopSignals()
    with preempt.catch_stop_signals(signals, cfg.train.stop_signals):
        trainer = Trainer(prep, dist, run_dir, signals, on_progress)
        return trainer.fit()
