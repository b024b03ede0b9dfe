"""One training run: ``Trainer`` owns the model, optimizer, schedule, loaders, logger and
checkpoints of a run and ``fit()`` trains, checkpoints and evaluates it (MAE / DINOv2 style: the
epoch itself is ``xvit.engine.train.loop.train_one_epoch``, evaluation ``xvit.engine.eval.evaluate``).

A run directory holds ``config.yaml`` (the resolved config), ``checkpoints/`` (one step directory
of weights + training state, committed atomically by ``xvit.engine.snapshot``; ``last`` / ``best``
safetensors with their ``CheckpointMeta``), ``tb/`` (TensorBoard), ``metrics.jsonl`` and
``results.json``. Under ``torchrun`` it runs DDP; only rank 0 writes. Unreadable videos go to
the run's skip ledger (``xvit.engine.train.ledger``). A stop signal or the snapshot clock is decided at
step boundaries by ``xvit.engine.train.preempt.StepGate``. Where the run is (``RunState``) and the
checkpoints that save and restore it (``Checkpointer``) are ``xvit.engine.train.state``; the log
lines ``xvit.engine.train.runlog``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from xvit.engine import distributed as xdist
from xvit.engine import snapshot
from xvit.engine.eval.evaluate import evaluate
from xvit.engine.eval.metrics import pair_order_accuracy
from xvit.engine.eval.results import print_run, run_results
from xvit.engine.runtime import seed_everything
from xvit.engine.train import preempt
from xvit.engine.train.loaders import make_train_loader, make_val_loader
from xvit.engine.train.loop import train_one_epoch
from xvit.engine.train.mixup import VideoMixup
from xvit.engine.train.optim import WarmupCosine, build_optimizer, scaled_lr
from xvit.engine.train.prepare import Prepared
from xvit.engine.train.resume import rng_state, set_rng_state
from xvit.engine.train.runlog import RunLogger, log_epoch, log_skips, log_start, log_val
from xvit.engine.train.state import Checkpointer, RunState
from xvit.models.flops import count_params

log = logging.getLogger("xvit.train")


class Trainer:
    """Owns model, optimizer, schedule, loaders and logger of one run; ``fit()`` trains and evaluates it."""

    def __init__(
        self,
        prep: Prepared,
        dist: xdist.DistInfo,
        run_dir: Path,
        signals: preempt.StopSignals | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ):
        """``signals``: the stop requests this process receives (``xvit.engine.train.preempt.catch_stop_signals``);
        ``on_progress(global_step, total_steps)``: called after every optimizer step (a side-by-side job's bar)."""
        cfg, t = prep.cfg, prep.cfg.train
        self.prep, self.cfg, self.dist, self.run_dir = prep, cfg, dist, run_dir
        self.on_progress = on_progress
        self.main = dist.rank == 0
        self.model = prep.model.to(dist.device)
        self.net = xdist.wrap_model(self.model, dist)
        self.global_batch = t.batch_size * dist.world_size * t.accum_steps
        self.lr = scaled_lr(cfg.optim.lr, self.global_batch, cfg.optim.lr_base_batch)
        self.optimizer, self.scheduler, self.scaler = _optimization(prep, self.model, self.lr)
        self.mixer = _mixer(prep)
        self.checkpoints = Checkpointer(
            prep,
            dist,
            run_dir,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            global_batch=self.global_batch,
            lr=self.lr,
        )
        self.state = self.checkpoints.restore(*prep.resume) if prep.resume is not None else RunState()
        if prep.resume is None:  # each rank its own stream (mixup, dropout); the weights were initialised identically
            seed_everything(cfg.seed + dist.rank)
        self.loader, self.sampler, self.train_data = make_train_loader(prep, dist, on_skip=self._on_skip)
        self.val_loader = make_val_loader(prep, dist)
        self._merge_ledgers(gather=False)  # a resumed run opens no video its ledger holds
        if self.state.finished and (run_dir / "results.json").is_file():
            self.state.metrics_bytes = None  # a finished run: fit() only reports it, its log stays whole
        self.logger = RunLogger(
            run_dir,
            enabled=self.main,
            tensorboard=t.tensorboard,
            purge_step=self.scheduler.last_step + 1 if prep.resume else None,  # its own step was logged before it
            truncate_to=self.state.metrics_bytes,
        )
        self.session_start, self.eval_seconds = time.perf_counter(), 0.0
        self.gate = preempt.StepGate(signals, t.ckpt_every_minutes)

    def elapsed(self) -> float:
        """Training seconds of this run so far (evaluations excluded), over all its sessions."""
        return self.state.elapsed_before + time.perf_counter() - self.session_start - self.eval_seconds

    def checkpoint(self, epoch: int, step_in_epoch: int) -> None:
        """Commit one checkpoint unit (``xvit.engine.snapshot.commit``): weights + training state.

        All ranks take part: their RNG states and skip ledgers are gathered; rank 0 writes.
        """
        gathered = xdist.all_gather_object({"rng": rng_state(), "sums": self.state.epoch_sums})
        self._merge_ledgers()
        xdist.on_main(  # a failed save stops all
            lambda: self.checkpoints.write(
                epoch,
                step_in_epoch,
                self.state,
                gathered=gathered,
                elapsed_s=self.elapsed(),
                metrics_bytes=self.logger.tell(),
            )
        )
        self.gate.saved()

    def _on_skip(self, path: str, reason: str) -> None:
        self.state.ledger.add(path, reason, self.state.epoch, "train")

    def _merge_ledgers(self, *, gather: bool = True) -> None:
        """Every rank's ledger becomes the union of all; the training set then skips the training
        videos in it without opening them (in the loader workers started after this, which copy it)."""
        if gather:
            self.state.ledger.merge_ranks()
        mark = getattr(self.prep.train_set, "mark_unreadable", None)
        if mark is not None:
            mark(self.state.ledger.paths("train"))

    def _check_skipped(self) -> None:  # a collective: more than data.max_skipped_fraction unreadable stops all
        self.state.ledger.check_ranks(len(self.prep.train_set), self.cfg.data.max_skipped_fraction)

    def _log_skips(self) -> int:  # the ledger's new entries to metrics.jsonl and the log; how many
        return log_skips(self.logger, self.state.ledger, self.scheduler.last_step, main=self.main)

    # -- the loop -----------------------------------------------------------------------------

    def fit(self) -> dict:
        """Train the remaining epochs (evaluating every ``eval.every``), then the final evaluation."""
        cfg, t, state = self.cfg, self.cfg.train, self.state
        results_path = self.run_dir / "results.json"
        if state.finished and results_path.is_file():
            results = json.loads(results_path.read_text())
            if self.main:
                print(f"{self.run_dir} is already trained ({t.epochs} epochs); its results ({results_path}):")
                print_run(results)
            return results
        if self.main:
            params = count_params(self.model) / 1e6
            log_start(
                self.prep, self.dist, params=params, global_batch=self.global_batch, lr=self.lr, run_dir=self.run_dir
            )
        try:
            if state.eval_pending and self._evaluate_and_checkpoint() is None:
                return self._stopped()
            while state.epoch < t.epochs:
                stats = self._train_epoch()
                if stats["stopped"]:
                    return self._stopped()
                state.epoch, state.step_in_epoch = state.epoch + 1, 0
                state.finished = state.epoch >= t.epochs
                if cfg.eval.every and state.epoch % cfg.eval.every == 0 and not state.finished:
                    if self._evaluate_and_checkpoint() is None:
                        return self._stopped()
                else:
                    self.checkpoint(state.epoch, 0)
                if self.gate.settle().stop:  # a signal during the epoch's last step
                    return self._stopped()
            train_time = self.elapsed()
            res = self.evaluate() if cfg.eval.enabled else {}
            if res is None:
                return self._stopped()
            return self._results(train_time, res, results_path)
        finally:
            self.logger.close()

    def _results(self, train_time: float, res: dict, results_path: Path) -> dict:
        """The run's ``results.json`` (written and printed by rank 0)."""
        run = {
            "run_dir": self.run_dir,
            "epochs": self.cfg.train.epochs,
            "global_step": self.scheduler.last_step,
            "global_batch": self.global_batch,
            "train_time_s": train_time,
            "train_acc": self.state.train_acc,
            "views": self.cfg.eval.views,
            "best_top1": self.state.best_top1,
            "skipped": self.state.ledger.summary(),
        }
        return _write_results(self.prep, self.model, run, res, results_path, main=self.main)

    def _evaluate_and_checkpoint(self) -> dict | None:
        """The evaluation due after an epoch, then the epoch's checkpoint; None when a stop cut the
        evaluation short (the checkpoint then says it is still to run: ``eval_pending``)."""
        res = self.evaluate()
        self.state.eval_pending = res is None
        self.checkpoint(self.state.epoch, 0)
        return res

    def _stopped(self) -> dict:
        return self.gate.stopped(self.cfg.model.name, self.scheduler.last_step, self.run_dir / "checkpoints")

    def _train_epoch(self) -> dict:
        cfg, t, state = self.cfg, self.cfg.train, self.state
        self.sampler.set_epoch(state.epoch)
        self.train_data.set_epoch(state.epoch)
        self.loader.generator.manual_seed(cfg.seed * 100_003 + state.epoch)  # worker seeds: by epoch
        self.sampler.set_start(state.step_in_epoch * t.accum_steps * t.batch_size)
        stats = train_one_epoch(
            self.net,
            self.loader,
            self.optimizer,
            self.scheduler,
            mixer=self.mixer,
            device=self.dist.device,
            epoch=state.epoch,
            steps=self.prep.steps_per_epoch,
            start_step=state.step_in_epoch,
            accum_steps=t.accum_steps,
            clip_grad=cfg.optim.clip_grad,
            amp_dtype=self.prep.amp_dtype,
            scaler=self.scaler,
            on_step=self._on_step,
            progress=t.progress,
            sums=state.epoch_sums,
        )
        state.epoch_sums = None
        if not stats["stopped"]:
            state.train_acc = stats["acc"]
            self._merge_ledgers()
            self._check_skipped()
            new = self._log_skips()
            skipped = {"skipped_new": new, "skipped_train": state.ledger.count("train")}
            self.logger.log("train_epoch", self.scheduler.last_step, {"epoch": state.epoch + 1, **stats, **skipped})
            if self.main:
                log_epoch(state.epoch + 1, t.epochs, stats, skipped=skipped["skipped_train"], new=new)
        return stats

    def _on_step(self, info: dict) -> bool:
        """Per optimizer step: log; checkpoint every ``ckpt_every_steps``, when the snapshot clock
        says so, and on a stop signal (then stop); stop at ``stop_after_steps`` (no checkpoint)."""
        t, step = self.cfg.train, info["global_step"]
        self.state.epoch_sums = info.pop("sums")
        if self.on_progress is not None:
            self.on_progress(step, t.epochs * self.prep.steps_per_epoch)
        xdist.set_progress(f"finished step {info['step_in_epoch']} of epoch {self.state.epoch}, global step {step}")
        self._check_skipped()
        if step % t.log_every_steps == 0:
            self.logger.log("train_step", step, info)
        if t.stop_after_steps is not None and step >= t.stop_after_steps:
            if self.main:
                log.warning("train.stop_after_steps=%d reached: stopping without a checkpoint (debug)", step)
            return True
        decision = self.gate.poll()  # at an epoch's last step the epoch's own checkpoint follows
        mid_epoch = info["step_in_epoch"] < self.prep.steps_per_epoch
        every = t.ckpt_every_steps and step % t.ckpt_every_steps == 0
        if mid_epoch and (every or decision.snapshot or decision.stop):
            self.checkpoint(self.state.epoch, info["step_in_epoch"])
        return bool(decision.stop) and mid_epoch

    def evaluate(self) -> dict | None:
        """Multi-view evaluation on the val split (``xvit.engine.eval.evaluate.evaluate``); keeps best.safetensors.

        None when a stop signal cut it short: nothing logged or kept, the RNG states as before it.
        """
        if self.val_loader is None:
            return {}
        state, start, rng = self.state, time.perf_counter(), rng_state()
        res = evaluate(
            self.net,
            self.gate.until_stop(self.val_loader),
            num_classes=self.prep.num_classes,
            device=self.dist.device,
            amp_dtype=self.prep.amp_dtype,
            distributed=self.dist.world_size > 1,
            progress=self.cfg.train.progress,
        )
        res["time_s"] = time.perf_counter() - start
        self.eval_seconds += res["time_s"]
        if self.gate.stop:
            set_rng_state(rng)  # a loader draws its workers' base seed from the torch RNG
            return None
        for i in res["missing"]:  # epoch: the one just trained (0-based), as for training videos
            reason = self.prep.val_set.failure_reason(i)
            state.ledger.add(str(self.prep.val_set.samples[i].path), reason, max(state.epoch - 1, 0), "val")
        self._log_skips()
        scalars = {k: res[k] for k in ("top1", "top5", "mean_class_acc", "num_videos", "num_missing", "time_s")}
        if self.prep.pairs:  # time-reversed pairs: the order accuracy after every evaluation, not only the last
            scalars["pair_order_acc"] = pair_order_accuracy(res["confusion"], self.prep.pairs)["mean"]
        self.logger.log(
            "val", self.scheduler.last_step, {"epoch": state.epoch, "views": self.cfg.eval.views, **scalars}
        )
        if self.main:
            log_val(self.cfg.eval.views, state.epoch, res, scalars.get("pair_order_acc"))
        if state.best_top1 is None or res["top1"] > state.best_top1:
            state.best_top1 = res["top1"]
            xdist.on_main(lambda: self.checkpoints.save_best(state.epoch))
        return res


def _optimization(
    prep: Prepared, model: nn.Module, lr: float
) -> tuple[torch.optim.Optimizer, WarmupCosine, torch.amp.GradScaler | None]:
    """The optimizer of ``optim.*`` at learning rate ``lr``, its warm-up + cosine schedule (paper §4)
    and the grad scaler of float16 autocast (None for other dtypes)."""
    o = prep.cfg.optim
    optimizer = build_optimizer(
        model,
        name=o.name,
        lr=lr,
        weight_decay=o.weight_decay,
        momentum=o.momentum,
        nesterov=o.nesterov,
        betas=tuple(o.betas),
    )
    scheduler = WarmupCosine(
        optimizer,
        total_steps=prep.steps_per_epoch * prep.cfg.train.epochs,
        warmup_steps=round(o.warmup_epochs * prep.steps_per_epoch),
        min_lr=o.min_lr,
    )
    scaler = torch.amp.GradScaler("cuda") if prep.amp_dtype == torch.float16 else None
    return optimizer, scheduler, scaler


def _mixer(prep: Prepared) -> VideoMixup:
    """Mixup / CutMix and label smoothing of ``train.*``."""
    t = prep.cfg.train
    return VideoMixup(
        prep.num_classes,
        mixup_alpha=t.mixup_alpha,
        cutmix_alpha=t.cutmix_alpha,
        prob=t.mix_prob,
        switch_prob=t.mix_switch_prob,
        label_smoothing=t.label_smoothing,
    )


def _write_results(prep: Prepared, model: nn.Module, run: dict, res: dict, path: Path, *, main: bool) -> dict:
    """``results.json`` of a run from its figures ``run`` and its final evaluation ``res`` (rank 0
    writes and prints it); returns it."""
    results = run_results(
        name=prep.cfg.model.name, model=model, run=run, res=res, class_names=prep.class_names, pairs=prep.pairs
    )
    if main:
        with snapshot.saving(path):
            path.write_text(json.dumps(results, indent=2) + "\n")
        print_run(results)
    return results
