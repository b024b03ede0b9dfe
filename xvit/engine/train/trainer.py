"""One training run: ``Trainer`` owns the model, optimizer, schedule, loaders, logger and
checkpoints of a run and ``fit()`` trains, checkpoints and evaluates it (MAE / DINOv2 style: the
epoch itself is ``xvit.engine.train.loop.train_one_epoch``, evaluation ``xvit.engine.eval.evaluate``).

A run directory holds ``config.yaml`` (the resolved config), ``checkpoints/`` (one step directory
of weights + training state, committed atomically by ``xvit.engine.snapshot``; ``last`` / ``best``
safetensors with their ``CheckpointMeta``), ``tb/`` (TensorBoard), ``metrics.jsonl`` and
``results.json``. Under ``torchrun`` it runs DDP; only rank 0 writes. Unreadable videos go to
the run's skip ledger (``xvit.engine.train.ledger``). A stop signal or the snapshot clock is decided at
step boundaries by ``xvit.engine.train.preempt.StepGate``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from xvit.engine import distributed as xdist
from xvit.engine import snapshot
from xvit.engine.checkpoint import CheckpointMeta, save_model, write_model
from xvit.engine.eval.evaluate import evaluate
from xvit.engine.eval.results import print_run, run_results
from xvit.engine.runtime import seed_everything
from xvit.engine.train import preempt
from xvit.engine.train.ledger import SkipLedger
from xvit.engine.train.loaders import make_train_loader, make_val_loader
from xvit.engine.train.loop import train_one_epoch
from xvit.engine.train.mixup import VideoMixup
from xvit.engine.train.optim import WarmupCosine, build_optimizer, scaled_lr
from xvit.engine.train.prepare import Prepared
from xvit.engine.train.resume import load_state, make_state, rng_state, set_rng_state
from xvit.engine.train.runlog import RunLogger
from xvit.errors import UserError
from xvit.models.flops import count_params

log = logging.getLogger("xvit.train")


# ----------------------------------------------------------------------------------------------
# the training loop


class Trainer:
    """Owns model, optimizer, schedule, loaders and logger of one run; ``fit()`` trains and evaluates it."""

    def __init__(self, prep: Prepared, dist: xdist.DistInfo, run_dir: Path, signals: preempt.StopSignals | None = None):
        """``signals``: the stop requests this process receives (``xvit.engine.train.preempt.catch_stop_signals``)."""
        cfg, t, o = prep.cfg, prep.cfg.train, prep.cfg.optim
        self.prep, self.cfg, self.dist, self.run_dir = prep, cfg, dist, run_dir
        self.main = dist.rank == 0
        self.model = prep.model.to(dist.device)
        self.net = self.model
        if dist.world_size > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None
            )
        self.global_batch = t.batch_size * dist.world_size * t.accum_steps
        self.lr = scaled_lr(o.lr, self.global_batch, o.lr_base_batch)
        self.optimizer = build_optimizer(
            self.model,
            name=o.name,
            lr=self.lr,
            weight_decay=o.weight_decay,
            momentum=o.momentum,
            nesterov=o.nesterov,
            betas=tuple(o.betas),
        )
        self.total_steps = prep.steps_per_epoch * t.epochs
        self.scheduler = WarmupCosine(
            self.optimizer,
            total_steps=self.total_steps,
            warmup_steps=round(o.warmup_epochs * prep.steps_per_epoch),
            min_lr=o.min_lr,
        )
        self.scaler = torch.amp.GradScaler("cuda") if prep.amp_dtype == torch.float16 else None
        self.mixer = VideoMixup(
            prep.num_classes,
            mixup_alpha=t.mixup_alpha,
            cutmix_alpha=t.cutmix_alpha,
            prob=t.mix_prob,
            switch_prob=t.mix_switch_prob,
            label_smoothing=t.label_smoothing,
        )
        self.ledger = SkipLedger()
        self.loader, self.sampler, self.train_data = make_train_loader(prep, dist, on_skip=self._on_skip)
        self.val_loader = make_val_loader(prep, dist)
        self.epoch, self.step_in_epoch, self.best_top1, self.elapsed_before = 0, 0, None, 0.0
        self.train_acc: float | None = None  # train top-1 of the last finished epoch
        self.finished = False
        self.metrics_bytes: int | None = 0  # metrics.jsonl as the resumed checkpoint saw it (0: a fresh start)
        self.epoch_sums: dict | None = None  # this rank's running loss / acc sums of the epoch in progress
        self.eval_pending = False  # a stop cut short the evaluation after the last epoch: run it first
        if prep.resume is not None:
            self._restore(*prep.resume)
        else:  # each rank its own stream (mixup, dropout); the weights were initialised identically
            seed_everything(cfg.seed + dist.rank)
        if self.finished and (run_dir / "results.json").is_file():
            self.metrics_bytes = None  # a finished run: fit() only reports it, its log stays whole
        self.logger = RunLogger(
            run_dir,
            enabled=self.main,
            tensorboard=t.tensorboard,
            purge_step=self.scheduler.last_step + 1 if prep.resume else None,  # its own step was logged before it
            truncate_to=self.metrics_bytes,
        )
        self.session_start, self.eval_seconds = time.perf_counter(), 0.0
        self.gate = preempt.StepGate(signals, t.ckpt_every_minutes)

    # -- checkpoints -------------------------------------------------------------------------

    def _meta(self, epoch: int) -> CheckpointMeta:
        data = self.prep.data
        return CheckpointMeta(
            model=self.model.model_config,
            clip=self.cfg.clip_spec(self.prep.class_names),
            data={"format": data["format"], "root": data["root"], "val_annotations": data["val_annotations"]},
            train={
                "epoch": epoch,
                "step": self.scheduler.last_step,
                "run_dir": str(self.run_dir),
                "global_batch": self.global_batch,
                "lr": self.lr,
                "config": self.cfg.to_dict(),
            },
        )

    def elapsed(self) -> float:
        """Training seconds of this run so far (evaluations excluded), over all its sessions."""
        return self.elapsed_before + time.perf_counter() - self.session_start - self.eval_seconds

    def checkpoint(self, epoch: int, step_in_epoch: int) -> None:
        """Commit one checkpoint unit (``xvit.engine.snapshot.commit``): weights + training state.

        All ranks take part: their RNG states and skip ledgers are gathered; rank 0 writes.
        """
        gathered = xdist.all_gather_object({"rng": rng_state(), "sums": self.epoch_sums})
        self._merge_ledgers()
        xdist.on_main(lambda: self._write_checkpoint(epoch, step_in_epoch, gathered))  # a failed save stops all
        self.gate.saved()

    def _write_checkpoint(self, epoch: int, step_in_epoch: int, gathered: list[dict]) -> None:
        folder = self.run_dir / "checkpoints"
        meta = self._meta(epoch)
        state = make_state(
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            epoch=epoch,
            step_in_epoch=step_in_epoch,
            global_step=self.scheduler.last_step,
            best_top1=self.best_top1,
            rng=[g["rng"] for g in gathered],
            world_size=self.dist.world_size,
            global_batch=self.global_batch,
            finished=self.finished,
            elapsed_s=self.elapsed(),
            train_acc=self.train_acc,
            skipped=self.ledger.to_list(),
            metrics_bytes=self.logger.tell(),
            epoch_sums=[g["sums"] for g in gathered],
            eval_pending=self.eval_pending,
        )
        snapshot.commit(folder, self.scheduler.last_step, lambda p: write_model(p, self.model, meta), state)
        if self.cfg.train.keep_epoch_ckpts and step_in_epoch == 0:
            with snapshot.saving(path := folder / f"epoch_{epoch:03d}.safetensors"):
                save_model(path, self.model, meta)

    def _restore(self, weights: Path, state_path: Path) -> None:
        """Load weights, optimizer, schedule, scaler, position, ledger and RNG states from a checkpoint."""
        try:
            self.model.load_state_dict(load_file(str(weights), device=str(self.dist.device)), strict=True)
        except (RuntimeError, OSError) as err:
            first = str(err).strip().splitlines()[0]
            raise UserError(
                f"resume checkpoint {weights}: its weights do not fit the model its metadata describes "
                f"({first[:160]}); the file was changed after xvit wrote it: delete {weights.parent} to resume "
                "from an older checkpoint, or start afresh with train.resume=never and a new run_dir"
            ) from None
        state = load_state(state_path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        self.best_top1 = None if state["best_top1"] < 0 else float(state["best_top1"])
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        self.train_acc = None if state.get("train_acc", -1.0) < 0 else float(state["train_acc"])
        self.ledger = SkipLedger(state.get("skipped"))
        sums = state.get("epoch_sums") or []
        self.epoch_sums = dict(sums[self.dist.rank]) if len(sums) == self.dist.world_size else None
        self.metrics_bytes = None if state.get("metrics_bytes", -1) < 0 else int(state["metrics_bytes"])
        self.eval_pending = bool(state.get("eval_pending", False))
        self.finished = self.epoch >= self.cfg.train.epochs  # train.epochs may have been raised since
        if len(state["rng"]) == self.dist.world_size:
            set_rng_state(state["rng"][self.dist.rank])
        else:
            log.warning(
                "checkpoint from %d processes, now %d: random streams re-seeded (not bit-exact)",
                len(state["rng"]),
                self.dist.world_size,
            )
            seed_everything(self.cfg.seed + self.dist.rank + 1000 * self.scheduler.last_step)
        if self.main:
            log.info(
                "resumed %s at epoch %d, step %d of the epoch (global step %d)",
                weights,
                self.epoch,
                self.step_in_epoch,
                self.scheduler.last_step,
            )

    # -- the skip ledger ------------------------------------------------------------------------

    def _on_skip(self, path: str, reason: str) -> None:
        self.ledger.add(path, reason, self.epoch, "train")

    def _merge_ledgers(self) -> None:
        """Every rank's ledger becomes the union of all (in rank order)."""
        if self.dist.world_size > 1:
            for entries in xdist.all_gather_object(self.ledger.to_list()):
                self.ledger.merge(entries)

    def _check_skipped(self) -> None:
        """Stop (on every rank alike) when more than ``data.max_skipped_fraction`` of the training set is unreadable."""
        size, fraction = len(self.prep.train_set), self.cfg.data.max_skipped_fraction
        if xdist.all_reduce_sum(self.ledger.count("train")) > fraction * size:  # an upper bound: paths may repeat
            self._merge_ledgers()
            self.ledger.check_fraction(size, fraction)

    def _log_skips(self) -> int:
        """Write the ledger's new entries to metrics.jsonl (kind ``skip``); return how many."""
        new = self.ledger.take_unlogged()
        for entry in new:
            self.logger.log("skip", self.scheduler.last_step, entry)
            if self.main:
                log.warning(
                    "skipped %s video %s (epoch %d): %s", entry["split"], entry["path"], entry["epoch"], entry["reason"]
                )
        return len(new)

    # -- the loop -----------------------------------------------------------------------------

    def fit(self) -> dict:
        """Train the remaining epochs (evaluating every ``eval.every``), then the final evaluation."""
        cfg, t = self.cfg, self.cfg.train
        results_path = self.run_dir / "results.json"
        if self.finished and results_path.is_file():
            results = json.loads(results_path.read_text())
            if self.main:
                print(f"{self.run_dir} is already trained ({t.epochs} epochs); its results ({results_path}):")
                print_run(results)
            return results
        self._log_start()
        try:
            if self.eval_pending and self._evaluate_and_checkpoint() is None:
                return self._stopped()
            while self.epoch < t.epochs:
                stats = self._train_epoch()
                if stats["stopped"]:
                    return self._stopped()
                self.epoch, self.step_in_epoch = self.epoch + 1, 0
                self.finished = self.epoch >= t.epochs
                if cfg.eval.every and self.epoch % cfg.eval.every == 0 and not self.finished:
                    if self._evaluate_and_checkpoint() is None:
                        return self._stopped()
                else:
                    self.checkpoint(self.epoch, 0)
                if self.gate.settle().stop:  # a signal during the epoch's last step
                    return self._stopped()
            train_time = self.elapsed()
            res = self.evaluate() if cfg.eval.enabled else {}
            if res is None:
                return self._stopped()
            run = {
                "run_dir": self.run_dir,
                "epochs": t.epochs,
                "global_step": self.scheduler.last_step,
                "global_batch": self.global_batch,
                "train_time_s": train_time,
                "train_acc": self.train_acc,
                "views": cfg.eval.views,
                "best_top1": self.best_top1,
                "skipped": self.ledger.summary(),
            }
            results = run_results(
                name=cfg.model.name,
                model=self.model,
                run=run,
                res=res,
                class_names=self.prep.class_names,
                pairs=self.prep.pairs,
            )
            if self.main:
                with snapshot.saving(results_path):
                    results_path.write_text(json.dumps(results, indent=2) + "\n")
                print_run(results)
            return results
        finally:
            self.logger.close()

    def _evaluate_and_checkpoint(self) -> dict | None:
        """The evaluation due after an epoch, then the epoch's checkpoint; None when a stop cut the
        evaluation short (the checkpoint then says it is still to run: ``eval_pending``)."""
        res = self.evaluate()
        self.eval_pending = res is None
        self.checkpoint(self.epoch, 0)
        return res

    def _stopped(self) -> dict:
        return self.gate.stopped(self.cfg.model.name, self.scheduler.last_step, self.run_dir / "checkpoints")

    def _train_epoch(self) -> dict:
        cfg, t = self.cfg, self.cfg.train
        self.sampler.set_epoch(self.epoch)
        self.train_data.set_epoch(self.epoch)
        self.loader.generator.manual_seed(self.cfg.seed * 100_003 + self.epoch)  # worker seeds: by epoch
        self.sampler.set_start(self.step_in_epoch * t.accum_steps * t.batch_size)
        stats = train_one_epoch(
            self.net,
            self.loader,
            self.optimizer,
            self.scheduler,
            mixer=self.mixer,
            device=self.dist.device,
            epoch=self.epoch,
            steps=self.prep.steps_per_epoch,
            start_step=self.step_in_epoch,
            accum_steps=t.accum_steps,
            clip_grad=cfg.optim.clip_grad,
            amp_dtype=self.prep.amp_dtype,
            scaler=self.scaler,
            on_step=self._on_step,
            progress=t.progress,
            sums=self.epoch_sums,
        )
        self.epoch_sums = None
        if not stats["stopped"]:
            self.train_acc = stats["acc"]
            self._merge_ledgers()
            self._check_skipped()
            new = self._log_skips()
            skipped = {"skipped_new": new, "skipped_train": self.ledger.count("train")}
            self.logger.log("train_epoch", self.scheduler.last_step, {"epoch": self.epoch + 1, **stats, **skipped})
            if self.main:
                log.info(
                    "epoch %d/%d: loss %.4f, train acc %.1f%%, lr %.2e, %.1f clips/s, %.0f s, "
                    "%d unreadable training videos skipped (%d new)",
                    self.epoch + 1,
                    t.epochs,
                    stats["loss"],
                    stats["acc"],
                    stats["lr"],
                    stats["clips_per_s"],
                    stats["time_s"],
                    skipped["skipped_train"],
                    new,
                )
        return stats

    def _on_step(self, info: dict) -> bool:
        """Per optimizer step: log; checkpoint every ``ckpt_every_steps``, when the snapshot clock
        says so, and on a stop signal (then stop); stop at ``stop_after_steps`` (no checkpoint)."""
        t, step = self.cfg.train, info["global_step"]
        self.epoch_sums = info.pop("sums")
        xdist.set_progress(f"finished step {info['step_in_epoch']} of epoch {self.epoch}, global step {step}")
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
            self.checkpoint(self.epoch, info["step_in_epoch"])
        return bool(decision.stop) and mid_epoch

    def evaluate(self) -> dict | None:
        """Multi-view evaluation on the val split (``xvit.engine.eval.evaluate.evaluate``); keeps best.safetensors.

        None when a stop signal cut it short: nothing logged or kept, the RNG states as before it.
        """
        if self.val_loader is None:
            return {}
        start, rng = time.perf_counter(), rng_state()
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
            self.ledger.add(str(self.prep.val_set.samples[i].path), reason, max(self.epoch - 1, 0), "val")
        self._log_skips()
        scalars = {k: res[k] for k in ("top1", "top5", "mean_class_acc", "num_videos", "num_missing", "time_s")}
        self.logger.log("val", self.scheduler.last_step, {"epoch": self.epoch, "views": self.cfg.eval.views, **scalars})
        if self.main:
            log.info(
                "val (%s views) after epoch %d: top-1 %.2f%%, top-5 %.2f%%, mean class acc %.2f%% on %d videos "
                "(%d unreadable), %.0f s",
                self.cfg.eval.views,
                self.epoch,
                res["top1"],
                res["top5"],
                res["mean_class_acc"],
                res["num_videos"],
                res["num_missing"],
                res["time_s"],
            )
        if self.best_top1 is None or res["top1"] > self.best_top1:
            self.best_top1 = res["top1"]
            best = self.run_dir / "checkpoints" / "best.safetensors"
            xdist.on_main(lambda: self._save_best(best))
        return res

    def _save_best(self, path: Path) -> None:
        with snapshot.saving(path):
            save_model(path, self.model, self._meta(self.epoch))

    def _log_start(self) -> None:
        if not self.main:
            return
        cfg, p = self.cfg, self.prep
        params = count_params(self.model) / 1e6
        scaled = (
            f" (optim.lr={cfg.optim.lr} x {self.global_batch}/{cfg.optim.lr_base_batch})"
            if cfg.optim.lr_base_batch
            else ""
        )
        log.info(
            "training %s (%.2fM params) on %d train / %s val videos, %d classes -> %s",
            cfg.model.name,
            params,
            len(p.train_set),
            len(p.val_set) if p.val_set is not None else "no",
            p.num_classes,
            self.run_dir,
        )
        log.info(
            "%d epochs x %d steps, global batch %d (%d x %d processes x %d accum), %s lr %.3g%s, "
            "warm-up %g epochs + cosine, device %s, amp %s",
            cfg.train.epochs,
            p.steps_per_epoch,
            self.global_batch,
            cfg.train.batch_size,
            self.dist.world_size,
            cfg.train.accum_steps,
            cfg.optim.name,
            self.lr,
            scaled,
            cfg.optim.warmup_epochs,
            self.dist.device,
            p.amp_dtype or "off (float32)",
        )
