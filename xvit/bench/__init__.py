"""``xvit bench``: inference and training cost of several models side by side, supplement
Table 1 (X-ViT's videos/s against TimeSformer's and ViViT's).

For every model and frame count: inference videos/s and latency at each batch size, training
clips/s, peak memory, parameters and GFLOPs (multiply-adds) per view. The parts, in the order
they run: ``spec`` (the models by alias, the settings, the schedule), ``peers`` (HF
transformers' TimeSformer and ViViT, optional), ``memory`` (per-phase peak RSS on the CPU),
``runner`` (one worker process per model, interleaved repeats), ``stats`` (medians, spread,
paired ratios) and ``report`` (environment, tables, plot). The command is ``xvit.cli.bench``.
This package's ``__init__`` imports no torch.
"""

from xvit.bench.spec import ALIASES, DEFAULT_MODELS, PEERS, BenchConfig, ModelSpec, Schedule

__all__ = ["ALIASES", "DEFAULT_MODELS", "PEERS", "BenchConfig", "ModelSpec", "Schedule"]
