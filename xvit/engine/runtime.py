"""Process-level choices every command shares: the device, autocast dtypes, CPU threads, seeds,
and the bare model inside DDP / ``torch.compile`` wrappers."""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from torch import nn

from xvit.errors import UserError

# autocast dtypes by their command-line / config spelling ("none"/"fp32": no autocast)
DTYPES: dict[str, torch.dtype | None] = {"none": None, "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str | None, flag: str = "--device") -> torch.device:
    """``auto``/None -> cuda if available, else cpu; ``cpu``, ``cuda``, ``cuda:N`` checked.

    ``flag`` names the option in the error (``--device``, ``train.device``).
    """
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"{flag} {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{flag} {name}: CUDA is not available on this machine; use {flag} cpu")
    return device


def resolve_dtype(name: str, flag: str = "--amp") -> torch.dtype | None:
    """An autocast dtype from its name (``none``, ``fp32``, ``bf16``, ``fp16``)."""
    if name not in DTYPES:
        raise UserError(f"{flag} {name!r} is unknown; use one of {', '.join(DTYPES)}")
    return DTYPES[name]


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP / ``torch.compile`` wrappers (any nesting)."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def seed_everything(seed: int, *, deterministic: bool = False, threads: int | None = None) -> None:
    """Seed python, numpy and torch; optionally deterministic algorithms; CPU threads."""
    if threads:
        torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
