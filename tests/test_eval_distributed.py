"""``evaluate`` in a 2-process gloo group equals the 1-process result (padding counted once)."""

from __future__ import annotations

import json
import math
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_eval_cli import make_checkpoint, make_data
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from xvit.cli import main
from xvit.engine.eval.evaluate import evaluate

NUM_VIDEOS, NUM_CLASSES, MISSING = 7, 3, (2, 5)  # 7 videos on 2 ranks: the sampler repeats one


class ChannelMeanModel(nn.Module):
    """Toy model: the logits of a clip (B, C, T, H, W) are its channel means (C = classes)."""

    num_frames, img_size = 2, 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3, 4))  # (B, C, T, H, W) -> (B, C)


class ToyViews(Dataset):
    """Video ``i``: 2 views with pseudo-random per-view logits; ``MISSING`` ones are unreadable."""

    def __len__(self) -> int:
        return NUM_VIDEOS

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(i)
        logits = torch.randn(2, NUM_CLASSES, generator=g)  # (V, K)
        views = logits[..., None, None, None].expand(2, NUM_CLASSES, 2, 4, 4).clone()  # (V, C, T, H, W)
        return (None if i in MISSING else views), i % NUM_CLASSES, i


def collate(batch):
    """The ``collate_views`` contract: readable views stacked, unreadable indices listed."""
    ok = [b for b in batch if b[0] is not None]
    return {
        "views": torch.stack([b[0] for b in ok]) if ok else torch.zeros(0, 2, NUM_CLASSES, 2, 4, 4),
        "labels": torch.tensor([b[1] for b in ok], dtype=torch.long),
        "indices": torch.tensor([b[2] for b in ok], dtype=torch.long),
        "missing": [b[2] for b in batch if b[0] is None],
    }


def _summary(res: dict) -> dict:
    return {
        k: (None if isinstance(res[k], float) and math.isnan(res[k]) else res[k])
        for k in ("top1", "top5", "mean_class_acc", "num_videos", "num_missing", "missing")
    } | {"scores": res["scores"].tolist(), "indices": res["indices"].tolist(), "confusion": res["confusion"].tolist()}


def _worker(rank: int, world: int, init_file: str, out_dir: str, ckpt: str) -> None:
    torch.set_num_threads(1)  # two processes on a small shared machine
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ds = ToyViews()
        loader = DataLoader(ds, batch_size=2, sampler=DistributedSampler(ds, shuffle=False), collate_fn=collate)
        seen = [int(i) for b in loader for i in [*b["indices"].tolist(), *b["missing"]]]
        res = evaluate(
            ChannelMeanModel(), loader, num_classes=NUM_CLASSES, device="cpu", distributed=True, progress=False
        )
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump(_summary(res) | {"seen": seen}, f)
        # the `xvit eval` command as torchrun runs it (its environment; the group already exists)
        os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
        code = main(
            [
                "eval",
                "--checkpoint",
                ckpt,
                "--device",
                "cpu",
                "--workers",
                "0",
                "--batch-size",
                "1",
                "--no-progress",
                "--out",
                f"{out_dir}/ddp_eval",
            ]
        )
        assert code == 0
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_two_process_gloo_equals_one_process(tmp_path):
    threads = torch.get_num_threads()
    ds = ToyViews()
    single = evaluate(
        ChannelMeanModel(),
        DataLoader(ds, batch_size=3, collate_fn=collate),
        num_classes=NUM_CLASSES,
        device="cpu",
        progress=False,
    )
    assert single["num_videos"] == NUM_VIDEOS - len(MISSING) and single["missing"] == list(MISSING)
    make_data(tmp_path / "data", [0, 1, 2, 0, 1], bad=1)  # 5 videos: rank 0 gets 3, rank 1 gets 2
    ckpt = make_checkpoint(tmp_path / "ckpt.safetensors", tmp_path / "data", test_views="2x3")
    torch.set_num_threads(1)
    try:
        assert (
            main(
                [
                    "eval",
                    "--checkpoint",
                    str(ckpt),
                    "--workers",
                    "0",
                    "--no-progress",
                    "--out",
                    str(tmp_path / "single_eval"),
                ]
            )
            == 0
        )
    finally:
        torch.set_num_threads(threads)

    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path), str(ckpt)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    seen = ranks[0]["seen"] + ranks[1]["seen"]
    assert len(seen) == 8 and len(set(seen)) == NUM_VIDEOS  # the sampler padded one video twice
    expected = _summary(single)
    for got in ranks:  # every rank holds the metrics of the whole dataset
        got.pop("seen")
        assert got.keys() == expected.keys()
        for key in expected:
            if key == "scores":
                torch.testing.assert_close(torch.tensor(got[key]), torch.tensor(expected[key]))
            else:
                assert got[key] == expected[key], key
    # `xvit eval` on 2 ranks writes the same reports as on 1 process
    for name in ("predictions.json", "confusion.csv"):
        assert (tmp_path / "ddp_eval" / name).read_text() == (tmp_path / "single_eval" / name).read_text()
    ddp, one = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("ddp_eval", "single_eval"))
    assert ddp["num_videos"] == one["num_videos"] == 4 and ddp["missing"] == one["missing"]
    assert ddp["top1"] == one["top1"] and ddp["views"] == "2x3"
