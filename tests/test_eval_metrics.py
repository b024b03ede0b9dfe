"""Metrics of multi-view testing against hand-computed numbers (xvit.metrics, xvit.engine.eval.evaluate.evaluate)."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

from xvit.engine.eval import metrics
from xvit.engine.eval.evaluate import evaluate
from xvit.engine.eval.metrics import (
    ScoreAccumulator,
    aggregate_views,
    confusion_matrix,
    mean_class_accuracy,
    per_class_accuracy,
    topk_accuracy,
)
from xvit.errors import UserError

LOG2 = math.log(2.0)


def test_aggregate_views_averages_softmax_not_logits():
    # video 0: view 0 uniform (1/3 each), view 1 logits (log 2, 0, 0) -> (1/2, 1/4, 1/4)
    logits = torch.tensor(
        [[[0.0, 0.0, 0.0], [LOG2, 0.0, 0.0]], [[0.0, 0.0, 100.0], [0.0, 0.0, 100.0]]]
    )  # (B=2, V=2, K=3)
    scores = aggregate_views(logits)
    assert scores.shape == (2, 3) and scores.dtype == torch.float32
    torch.testing.assert_close(scores[0], torch.tensor([5 / 12, 7 / 24, 7 / 24]))
    torch.testing.assert_close(scores[1], torch.tensor([0.0, 0.0, 1.0]))
    # averaging logits instead would give softmax(log2/2, 0, 0) = (0.4142, 0.2929, 0.2929): not the same
    assert abs(scores[0, 0].item() - 0.4142) > 1e-3
    assert aggregate_views(logits.bfloat16()).dtype == torch.float32


def test_topk_accuracy_hand_computed():
    scores = torch.tensor(
        [
            [0.5, 0.2, 0.1, 0.1, 0.05, 0.05],  # label 0: top-1 hit
            [0.1, 0.5, 0.2, 0.1, 0.05, 0.05],  # label 2: 2nd -> top-5 hit only
            [0.3, 0.25, 0.2, 0.1, 0.1, 0.05],  # label 5: 6th -> miss
            [0.1, 0.1, 0.1, 0.1, 0.1, 0.5],  # label 5: top-1 hit
        ]
    )
    acc = topk_accuracy(scores, torch.tensor([0, 2, 5, 5]), ks=(1, 2, 5))
    assert acc == pytest.approx({"top1": 50.0, "top2": 75.0, "top5": 75.0})


def test_topk_clamped_when_fewer_classes_than_k(caplog, monkeypatch):
    monkeypatch.setattr(metrics, "_WARNED", set())  # warned once per process: forget earlier warnings
    scores = torch.tensor([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    with caplog.at_level(logging.WARNING, logger="xvit.engine.eval.metrics"):
        acc = topk_accuracy(scores, torch.tensor([0, 0]))
    assert acc == pytest.approx({"top1": 50.0, "top5": 100.0})
    assert "clamped" in caplog.text
    assert math.isnan(topk_accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))["top1"])


def test_confusion_and_per_class_accuracy_with_absent_class(caplog):
    labels = torch.tensor([0, 0, 0, 1, 1, 3])  # class 2 never appears
    preds = torch.tensor([0, 1, 0, 1, 1, 2])
    conf = confusion_matrix(preds, labels, 4)
    expected = torch.tensor([[2, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]])
    assert torch.equal(conf, expected)
    per_class = per_class_accuracy(conf)
    assert per_class[:2].tolist() == pytest.approx([200 / 3, 100.0])
    assert math.isnan(per_class[2]) and per_class[3] == 0.0
    with caplog.at_level(logging.INFO, logger="xvit.engine.eval.metrics"):
        # mean over the 3 present classes: (66.67 + 100 + 0) / 3, class 2 excluded (not a 0)
        assert mean_class_accuracy(conf) == pytest.approx((200 / 3 + 100.0 + 0.0) / 3)
    assert "3 of 4 classes" in caplog.text
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.tensor([4]), torch.tensor([0]), 4)


def test_accumulator_counts_duplicates_once_and_keeps_missing():
    acc = ScoreAccumulator(num_classes=3)
    acc.update(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]]), torch.tensor([0, 2]), torch.tensor([4, 1]))
    # index 4 again (sampler padding), with other scores: the first one is kept, counted once
    acc.update(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([0]), torch.tensor([4]))
    acc.add_missing([2, 7])
    res = acc.compute()
    assert res["num_videos"] == 2 and len(acc) == 2
    assert res["indices"].tolist() == [1, 4] and res["labels"].tolist() == [2, 0]
    assert res["top1"] == pytest.approx(50.0) and res["top5"] == pytest.approx(100.0)
    assert res["num_missing"] == 2 and res["missing"] == [2, 7]
    torch.testing.assert_close(res["scores"][1], torch.tensor([0.7, 0.2, 0.1]))
    acc.gather()  # no process group: a no-op


class ChannelMeanModel(nn.Module):
    """Toy model: the logits of a clip (B, C, T, H, W) are its channel means, so C = classes."""

    num_frames, img_size = 2, 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3, 4))  # (B, C, T, H, W) -> (B, C)


def _views(view_logits: list[list[list[float]]]) -> torch.Tensor:
    """Clips (B, V, C=K, T=2, H=4, W=4) whose channel means are the given per-view logits."""
    t = torch.tensor(view_logits, dtype=torch.float32)  # (B, V, K)
    return t[..., None, None, None].expand(*t.shape, 2, 4, 4).clone()


def test_evaluate_toy_model_hand_computed():
    # 3 classes, 2 views per video; dataset of 5 videos, index 3 unreadable, index 0 repeated (padding)
    batches = [
        {
            "views": _views(
                [
                    [[LOG2, 0, 0], [0, 0, 0]],  # idx 0, label 0: (5/12, 7/24, 7/24) -> 0 ok
                    [[0, 0, 0], [0, 5, 0]],
                ]
            ),  # idx 1, label 2: -> 1 wrong (2nd)
            "labels": torch.tensor([0, 2]),
            "indices": torch.tensor([0, 1]),
            "missing": [],
        },
        {
            "views": _views([[[0, 0, 4], [0, 0, 4]]]),  # idx 2, label 2 -> 2 ok
            "labels": torch.tensor([2]),
            "indices": torch.tensor([2]),
            "missing": [3],
        },
        {
            "views": _views(
                [
                    [[0, 9, 0], [0, 9, 0]],  # idx 4, label 0 -> 1 wrong (2nd/3rd tie)
                    [[0, 0, 9], [0, 0, 9]],
                ]
            ),  # idx 0 again, other scores: ignored
            "labels": torch.tensor([0, 0]),
            "indices": torch.tensor([4, 0]),
            "missing": [],
        },
    ]
    model = ChannelMeanModel().train()
    res = evaluate(model, batches, num_classes=3, device="cpu", progress=False, chunk_size=3)
    assert model.training  # mode restored
    assert res["num_videos"] == 4 and res["num_missing"] == 1 and res["missing"] == [3]
    assert res["indices"].tolist() == [0, 1, 2, 4]
    torch.testing.assert_close(res["scores"][0], torch.tensor([5 / 12, 7 / 24, 7 / 24]))
    assert res["top1"] == pytest.approx(50.0)
    assert res["top5"] == pytest.approx(100.0)  # k clamped to 3 classes
    # class 0: videos 0 (ok), 4 (wrong) -> 50%; class 1 absent; class 2: 1 (wrong), 2 (ok) -> 50%
    assert res["per_class_acc"][0].item() == pytest.approx(50.0)
    assert math.isnan(res["per_class_acc"][1]) and res["num_classes_present"] == 2
    assert res["mean_class_acc"] == pytest.approx(50.0)
    assert torch.equal(res["confusion"], torch.tensor([[1, 1, 0], [0, 0, 0], [0, 1, 1]]))


def test_evaluate_rejects_clips_of_the_wrong_length():
    batch = {
        "views": torch.zeros(1, 1, 3, 5, 4, 4),
        "labels": torch.tensor([0]),
        "indices": torch.tensor([0]),
        "missing": [],
    }
    with pytest.raises(UserError, match="5 frames.*num_frames=2"):
        evaluate(ChannelMeanModel(), [batch], num_classes=3, device="cpu", progress=False)
