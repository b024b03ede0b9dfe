"""Training engine: one epoch of mixed-precision, gradient-accumulated, (distributed) training.

``train_one_epoch(...) -> dict`` in the MAE / DINOv2 style: it knows nothing about configs, files or
run directories; the caller (``xvit.engine.train.trainer``) passes a callback for step logging and
checkpoints. Evaluation is ``xvit.engine.eval.evaluate.evaluate``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from xvit.engine import distributed as xdist
from xvit.engine.train.mixup import VideoMixup, soft_cross_entropy
from xvit.errors import UserError
from xvit.progress import progress_bar


def _no_sync(model: nn.Module, sync: bool):
    """DDP: skip the gradient all-reduce on accumulation micro-steps."""
    if not sync and isinstance(model, DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    *,
    mixer: VideoMixup,
    device: torch.device,
    epoch: int,
    steps: int,
    start_step: int = 0,
    accum_steps: int = 1,
    clip_grad: float | None = None,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    on_step: Callable[[dict], bool | None] | None = None,
    progress: bool = True,
    sums: dict | None = None,
) -> dict:
    """Train optimizer steps ``start_step .. steps-1`` of ``epoch``; return averaged metrics.

    ``loader`` yields ``(clips (B, C, T, H, W), labels (B,))`` starting at batch ``start_step * accum_steps``
    (a resumed run's sampler skips the batches already seen). After every optimizer step
    ``on_step(info)`` is called with ``epoch``, ``step_in_epoch`` (steps done in this epoch),
    ``global_step``, ``loss``, ``acc``, ``lr``, ``grad_norm``, ``clips_per_s`` and ``sums`` (the epoch's
    running sums: ``loss``, ``acc``, ``n`` micro-batches); it returns True to stop now. ``sums``
    continues the sums of a resumed epoch, so its averages cover the whole epoch.

    Returns ``loss`` (mean soft-target cross-entropy), ``acc`` (train top-1 % against the unmixed labels),
    ``lr``, ``clips_per_s`` (all processes), ``time_s``, ``steps`` (done in this call) and ``stopped``;
    loss/acc are averaged over processes.
    """
    model.train()
    world = xdist.world_size()
    bar = progress_bar(
        total=steps, initial=start_step, desc=f"epoch {epoch}", disable=not (progress and xdist.is_main()), leave=True
    )
    sums = dict(sums) if sums else {"loss": 0.0, "acc": 0.0, "n": 0}
    step, micro, clips, stopped = start_step, 0, 0, False
    t0 = last_t = time.perf_counter()
    last_clips = 0
    optimizer.zero_grad(set_to_none=True)
    # a loader may hold a few batches more than steps * accum_steps (an incomplete accumulation): skip them
    for clip, labels in itertools.islice(loader, (steps - start_step) * accum_steps):
        clip, labels = clip.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        sync = (micro + 1) % accum_steps == 0
        loss_value, acc = _micro_step(
            model,
            clip,
            labels,
            mixer,
            sync=sync,
            amp_dtype=amp_dtype,
            scaler=scaler,
            accum_steps=accum_steps,
            where=f"epoch {epoch} step {step}",
        )
        sums.update(loss=sums["loss"] + loss_value, acc=sums["acc"] + acc, n=sums["n"] + 1)
        micro += 1
        clips += clip.shape[0] * world
        if not sync:
            continue
        grad_norm = _optimizer_step(model, optimizer, scaler, clip_grad)
        scheduler.step()
        step += 1
        now = time.perf_counter()
        rate = (clips - last_clips) / max(now - last_t, 1e-9)
        last_t, last_clips = now, clips
        lr = optimizer.param_groups[0]["lr"]
        bar.update(1)
        bar.set_postfix(loss=f"{sums['loss'] / sums['n']:.4f}", lr=f"{lr:.2e}", clips_s=f"{rate:.1f}")
        if on_step is not None:
            info = {"epoch": epoch, "step_in_epoch": step, "global_step": scheduler.last_step, "loss": loss_value}
            info.update(acc=sums["acc"] / sums["n"], lr=lr, grad_norm=grad_norm, clips_per_s=rate, sums=dict(sums))
            if on_step(info):
                stopped = True
                break
    bar.close()
    elapsed = time.perf_counter() - t0
    return _epoch_stats(sums, optimizer, clips=clips, elapsed=elapsed, steps=step - start_step, stopped=stopped)


def _epoch_stats(
    sums: dict, optimizer: torch.optim.Optimizer, *, clips: int, elapsed: float, steps: int, stopped: bool
) -> dict:
    """What ``train_one_epoch`` returns: loss and accuracy averaged over processes."""
    n = max(sums["n"], 1)
    return {
        "loss": float(xdist.all_reduce_mean(sums["loss"] / n)),
        "acc": float(xdist.all_reduce_mean(sums["acc"] / n)),
        "lr": optimizer.param_groups[0]["lr"],
        "clips_per_s": clips / max(elapsed, 1e-9),
        "time_s": elapsed,
        "steps": steps,
        "stopped": stopped,
    }


def _micro_step(
    model: nn.Module,
    clip: torch.Tensor,
    labels: torch.Tensor,
    mixer: VideoMixup,
    *,
    sync: bool,
    amp_dtype: torch.dtype | None,
    scaler: torch.amp.GradScaler | None,
    accum_steps: int,
    where: str,
) -> tuple[float, float]:
    """Mix, forward, loss and backward of one micro-batch; return (loss, top-1 % against the unmixed labels)."""
    mixed, targets = mixer(clip, labels)  # (B, C, T, H, W), (B, K)
    with _no_sync(model, sync):  # DDP: forward and backward without the all-reduce unless sync
        with torch.autocast(clip.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(mixed)  # (B, K)
            loss = soft_cross_entropy(logits, targets)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise UserError(
                f"training loss became {loss_value} at {where}; lower optim.lr, "
                "set optim.clip_grad (e.g. 1.0) or train.amp=none"
            )
        (scaler.scale(loss / accum_steps) if scaler is not None else loss / accum_steps).backward()
    return loss_value, (logits.argmax(-1) == labels).float().mean().item() * 100.0


def _optimizer_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None, clip_grad: float | None
) -> float:
    """Unscale, clip, step, zero; return the global gradient norm before clipping (nan if not computed)."""
    grad_norm = float("nan")
    if clip_grad is not None:
        if scaler is not None:
            scaler.unscale_(optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad))
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm
