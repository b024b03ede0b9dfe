"""The temporal attention head trains at every width (paper §3.4): it learns a small task as fast
as temporal average pooling, and it starts as average pooling (a signal-preserving init)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import xvit
from xvit.engine.train.optim import WarmupCosine, build_optimizer

T, S, K, STEPS, BATCH = 4, 32, 4, 200, 16


def _clips(n_per_class: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright square on a noisy dark background, moving right, moving left (a time-reversed
    pair), or still (small / large): ``(N, 3, T, S, S)`` floats and ``(N,)`` labels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(K).repeat_interleave(n_per_class)
    x = torch.randn(len(y), 3, T, S, S, generator=g) * 0.2 - 1.0
    for i, c in enumerate(y.tolist()):
        sz = 6 if c != 3 else 12
        r, q0 = (int(v) for v in torch.randint(0, S - sz, (2,), generator=g))
        col = torch.rand(3, 1, 1, generator=g) + 1.0
        for t in range(T):
            p = t / (T - 1)
            q = round((S - sz) * (p if c == 0 else 1 - p)) if c < 2 else q0
            x[i, :, t, r : r + sz, q : q + sz] += col
    return x, y


def _train(head: str, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> float:
    """Train nano X-ViT (width 32, where 0.02-std linears have the smallest gain); return the
    train accuracy over the last 50 steps."""
    torch.manual_seed(seed)
    model = xvit.create_model("xvit_nano_patch8_32", num_frames=T, num_classes=K, img_size=S, head=head)
    opt = build_optimizer(model, name="adamw", lr=1e-3, weight_decay=0.05)
    sched = WarmupCosine(opt, total_steps=STEPS, warmup_steps=20, min_lr=1e-5)
    g = torch.Generator().manual_seed(seed + 1)
    accs = []
    for _ in range(STEPS):
        idx = torch.randint(0, len(y), (BATCH,), generator=g)
        logits = model(x[idx])
        loss = F.cross_entropy(logits, y[idx], label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        accs.append((logits.argmax(-1) == y[idx]).float().mean().item())
    return sum(accs[-50:]) / 50


@pytest.fixture(scope="module")
def data():
    return _clips(100)


def test_attention_head_learns_as_fast_as_average_pooling(data):
    x, y = data
    avg, attn = _train("avg", x, y), _train("attn", x, y)
    assert avg > 0.5, f"the task should be learnable by average pooling ({avg:.2f})"
    assert attn >= avg - 0.1, f"the attention head learns much slower than average pooling: {attn:.2f} vs {avg:.2f}"
    assert attn > 1.5 / K, f"the attention head is near chance: {attn:.2f}"


def test_head_starts_as_average_pooling():
    """The zero CLS token has a zero query (uniform attention) and a zero value; the value and
    output projections are the identity, so the CLS output is the sum of the frames over T + 1."""
    torch.manual_seed(0)
    head = xvit.create_model("xvit_nano_patch8_32", num_frames=T, num_classes=K, head="attn").head
    cls = F.layer_norm(torch.randn(2, T, 32), (32,))
    blk = head.temporal_encoder[0]
    x = torch.cat([head.cls_token.expand(2, -1, -1), cls], 1).unsqueeze(1)  # (2, 1, 1+T, D)
    with torch.no_grad():
        out = blk.attn(blk.norm1(x))[:, 0, 0]  # (2, D)
    torch.testing.assert_close(out, blk.norm1(cls).sum(1) / (T + 1), atol=1e-5, rtol=1e-4)
    assert math.isclose(head.mlp_head[1].weight.std().item(), 32**-0.5, rel_tol=0.25)
