"""What ``xvit bench`` measures (supplement Table 1): the models by alias, the settings every
worker process gets, and the schedule of timed phases."""

from __future__ import annotations

from dataclasses import dataclass, field

# alias -> (family, model options): X-ViT with the frame ViT's head isolates the mixing step.
ALIASES: dict[str, tuple[str, dict]] = {
    "xvit": ("xvit", {}),
    "xvit-avg": ("xvit", {"head": "avg"}),
    "vit": ("vit", {}),
    "tsm": ("tsm_vit", {}),
    "timesformer": ("timesformer", {}),
    "joint": ("joint", {}),
}
PEERS = ("hf-timesformer", "hf-vivit")
DEFAULT_MODELS = ["xvit", "xvit-avg", "vit", "tsm", "timesformer", "joint"]
# the names of ``xvit.engine.runtime.DTYPES`` the bench takes; fp32: no autocast
DTYPE_NAMES = ("fp32", "bf16", "fp16")
PEER_INSTALL = "pip install 'xvit[bench]'  (or: pip install 'transformers>=4.40')"


@dataclass
class ModelSpec:
    """One benchmarked model: ``label`` (alias or name), ``family`` ("xvit" or "hf"), registry
    ``name`` (or the peer's alias), extra ``create_model`` options and its own input size
    (``img_size``; None: the ``BenchConfig``'s)."""

    label: str
    family: str
    name: str
    options: dict = field(default_factory=dict)
    img_size: int | None = None

    def size(self, cfg: BenchConfig) -> int:
        """The input size this model is measured at."""
        return self.img_size or cfg.img_size


@dataclass
class BenchConfig:
    """Everything a worker needs to build and run its model (picklable)."""

    device: str = "cpu"
    dtype: str = "fp32"
    compile: bool = False
    sdpa: bool = True
    threads: int = 1
    img_size: int = 224
    size: str = "base"  # ViT size of the peers
    patch: int = 16
    classes: int = 400
    vivit_tubelet: int = 1  # temporal tubelet of HF ViViT (1: same tokens as ours; 2: ViViT's default)
    seed: int = 0
    keep_heap: bool = True  # CPU workers keep freed memory resident (``xvit.bench.memory.keep_freed_memory``)


@dataclass
class Schedule:
    """Which phases run and how often: every frame count, inference at each batch size and one
    training step size; ``warmup`` untimed passes, then ``repeats`` timed ones of ``iters`` each,
    every phase preceded by ``settle`` untimed iterations in the same call. The first pass
    measures peak memory."""

    frames: list[int]
    batch_sizes: list[int]
    train_batch_size: int
    repeats: int = 3
    warmup: int = 1
    iters: int = 1
    settle: int = 1
    infer: bool = True
    train: bool = True

    def keys(self) -> list[tuple[str, int]]:
        """The phases, ``(kind, batch)``: inference at each batch size, then the training step."""
        keys = [("infer", b) for b in self.batch_sizes] if self.infer else []
        return keys + ([("train", self.train_batch_size)] if self.train else [])

    def settings(self) -> dict:
        """The schedule's part of the JSON ``settings``."""
        names = ("frames", "batch_sizes", "train_batch_size", "repeats", "warmup", "iters", "settle")
        return {k: getattr(self, k) for k in names}
