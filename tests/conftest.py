"""Test-wide settings: tiny models run fastest on one thread, and subprocesses (DDP workers,
CLI runs) inherit the setting instead of oversubscribing the machine's cores."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)
