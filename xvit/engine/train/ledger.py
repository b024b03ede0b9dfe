"""The skip ledger: every video a run could not read, counted and listed once per path and split.

A training video that cannot be read is replaced by another one (``xvit.data.datasets``), and an
unreadable validation video is left out of the accuracies; the ledger makes both visible. Items of
the training loader carry the ``(path, reason)`` of the videos skipped to produce them (in
whichever worker process), the trainer adds them here, the ranks' ledgers are merged at every
checkpoint and epoch end (``xvit.engine.distributed.all_gather_object``), and the entries go to
``metrics.jsonl`` (kind ``skip``), the epoch log line, the checkpoint's state and ``results.json``.
``data.max_skipped_fraction`` stops a run whose unreadable training videos are more than that
fraction of the training set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from xvit.engine import distributed as xdist
from xvit.errors import UserError


@dataclass(frozen=True)
class Skip:
    """One unreadable video: where, why, when it was first met (0-based epoch) and in which split."""

    path: str
    reason: str
    epoch: int
    split: str  # train | val


class SkipLedger:
    """Skipped videos, once per ``(split, path)``, in the order they were first met."""

    def __init__(self, entries: list[dict] | None = None):
        self.entries: dict[tuple[str, str], Skip] = {}
        self.logged: set[tuple[str, str]] = set()  # written to metrics.jsonl already
        for e in entries or []:
            self.add(e["path"], e["reason"], int(e["epoch"]), e["split"])
        self.logged = set(self.entries)

    def add(self, path: str, reason: str, epoch: int, split: str) -> bool:
        """Record a skip; False when this path was already recorded for ``split``."""
        key = (split, str(path))
        if key in self.entries:
            return False
        self.entries[key] = Skip(str(path), str(reason).replace("\n", " "), int(epoch), split)
        return True

    def merge(self, entries: list[dict]) -> None:
        for e in entries:
            self.add(e["path"], e["reason"], int(e["epoch"]), e["split"])

    def merge_ranks(self) -> None:
        """Under DDP: every rank's ledger becomes the union of all (in rank order); a collective."""
        if xdist.world_size() > 1:
            for entries in xdist.all_gather_object(self.to_list()):
                self.merge(entries)

    def check_ranks(self, dataset_size: int, max_fraction: float) -> None:
        """``check_fraction`` on every rank alike (a collective): the ranks' counts are summed first."""
        if xdist.all_reduce_sum(self.count("train")) > max_fraction * dataset_size:  # an upper bound: paths repeat
            self.merge_ranks()
            self.check_fraction(dataset_size, max_fraction)

    def paths(self, split: str) -> list[str]:
        """The videos of ``split`` recorded as unreadable."""
        return [s.path for s in self.entries.values() if s.split == split]

    def count(self, split: str | None = None) -> int:
        return sum(1 for s in self.entries.values() if split is None or s.split == split)

    def to_list(self) -> list[dict]:
        return [asdict(s) for s in self.entries.values()]

    def take_unlogged(self) -> list[dict]:
        """The entries not yet written to ``metrics.jsonl`` (marked written now)."""
        new = [asdict(s) for k, s in self.entries.items() if k not in self.logged]
        self.logged.update(self.entries)
        return new

    def summary(self) -> dict:
        """What ``results.json`` reports: counts per split and every entry."""
        return {"train": self.count("train"), "val": self.count("val"), "videos": self.to_list()}

    def check_fraction(self, dataset_size: int, max_fraction: float) -> None:
        """``UserError`` when more than ``max_fraction`` of the training set could not be read."""
        bad = self.count("train")
        if bad <= max_fraction * dataset_size:
            return
        first = next(s for s in self.entries.values() if s.split == "train")
        raise UserError(
            f"{bad} of the {dataset_size} training videos ({100.0 * bad / dataset_size:.1f}%) could not be read, "
            f"more than data.max_skipped_fraction={max_fraction:g} (first: {first.path}: {first.reason}); "
            "fix or remove them (`xvit check-data` lists them), or raise data.max_skipped_fraction to train "
            "on the rest"
        )
