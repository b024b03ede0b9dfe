"""Unit tests of the training parts that need no data: config, schedule, weight-decay groups, mixup."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from xvit.engine.config import Config, config_from_dict, load_config, parse_overrides, save_config, shipped_configs
from xvit.engine.train.mixup import VideoMixup, cutmix_box, smooth_one_hot, soft_cross_entropy
from xvit.engine.train.optim import WarmupCosine, build_optimizer, lr_factor, param_groups, scaled_lr
from xvit.engine.train.prepare import build_model
from xvit.errors import UserError

# ------------------------------------------------------------------------------------------ config


def test_override_parsing_yaml_values():
    out = parse_overrides(
        [
            "optim.lr=0.01",
            "data.hflip=false",
            "data.short_side_range=[256, 320]",
            "model.options.head=avg",
            "model.pretrained=null",
            "run_dir=runs/x",
        ]
    )
    assert out == {
        "optim": {"lr": 0.01},
        "data": {"hflip": False, "short_side_range": [256, 320]},
        "model": {"options": {"head": "avg"}, "pretrained": None},
        "run_dir": "runs/x",
    }


def test_load_default_config_with_overrides():
    cfg = load_config(None, ["optim.lr=0.5", "train.epochs=3", "model.options.shift_div=4", "optim.lr_base_batch=null"])
    assert cfg.data.format == "synthetic" and cfg.model.name == "xvit_micro_patch8_64"
    assert cfg.optim.lr == 0.5 and cfg.train.epochs == 3 and cfg.optim.lr_base_batch is None
    assert cfg.model.options["shift_div"] == 4
    assert isinstance(cfg.optim.lr, float)  # YAML int accepted for a float field
    assert load_config(None, ["optim.lr=2e-3"]).optim.lr == 2e-3  # YAML 1.1 reads 2e-3 as a string
    # a whole value replaces, a longer key changes one entry
    assert load_config(None, ["model.options={}"]).model.options == {}
    both = load_config(None, ["model.options={shift_div: 8}", "model.options.head=attn"]).model.options
    assert both == {"shift_div": 8, "head": "attn"}


def test_another_family_on_the_main_job_s_config_is_told_how_to_clear_its_options():
    # the main job's shift_div is X-ViT's; TimeSformer takes none: one line saying what to do
    switch = ["model.name=timesformer_nano_patch8_32", "model.pretrained=null"]
    with pytest.raises(UserError, match=r"rejected model.options \{'shift_div': 8\}.*model.options=\{\}"):
        build_model(load_config(None, switch), num_classes=14, pretrained=None)
    assert build_model(load_config(None, [*switch, "model.options={}"]), num_classes=14, pretrained=None)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.epoch=3", "did you mean 'train.epochs'"),
        ("optim.weight_decy=0.1", "did you mean 'optim.weight_decay'"),
        ("trian.epochs=3", "did you mean 'train'"),
        ("rundir=x", "did you mean 'run_dir'"),
    ],
)
def test_unknown_override_key_suggests(override, expected):
    with pytest.raises(UserError, match=expected):
        load_config(None, [override])


def test_unknown_yaml_key_and_bad_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("base: synthetic\ndata:\n  num_frame: 16\n")
    with pytest.raises(UserError, match="unknown config key 'data.num_frame'; did you mean 'data.num_frames'"):
        load_config(str(path))
    with pytest.raises(UserError, match="'train.epochs' expects int, got 'abc'"):
        load_config(None, ["train.epochs=abc"])
    with pytest.raises(UserError, match="optim.name='adam' .*did you mean 'adamw'"):
        load_config(None, ["optim.name=adam"])
    with pytest.raises(UserError, match="eval.views"):
        load_config(None, ["eval.views=3"])
    with pytest.raises(UserError, match="not of the form key.sub=value"):
        load_config(None, ["train.epochs"])
    with pytest.raises(UserError, match="did you mean 'synthetic'"):
        load_config("synthetc")


def test_base_inheritance_and_resolved_roundtrip(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: ssv2_xvit_b16_8x\ntrain:\n  epochs: 2\n")
    cfg = load_config(str(path), ["data.num_frames=16"])
    assert cfg.train.epochs == 2 and cfg.data.num_frames == 16 and cfg.data.format == "ssv2"
    assert cfg.data.hflip is False and cfg.optim.weight_decay == 1e-4
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(str(tmp_path / "resolved.yaml"))
    assert again == cfg
    assert config_from_dict(yaml.safe_load((tmp_path / "resolved.yaml").read_text())) == cfg


@pytest.mark.parametrize("name", shipped_configs())
def test_shipped_configs_load(name):
    from xvit.models import list_models

    cfg = load_config(name)
    assert isinstance(cfg, Config)
    assert cfg.model.name in list_models() and all(m in list_models() for m in cfg.compare)


def test_recipes_follow_spec():
    k400, ssv2 = load_config("k400_xvit_b16_8x"), load_config("ssv2_xvit_b16_8x")
    for cfg in (k400, ssv2):
        assert (cfg.optim.name, cfg.optim.lr, cfg.optim.lr_base_batch, cfg.optim.momentum) == ("sgd", 0.03, 64, 0.9)
        assert cfg.optim.nesterov and cfg.optim.warmup_epochs == 5 and cfg.train.label_smoothing == 0.3
        assert cfg.data.mean == cfg.data.std == [0.5, 0.5, 0.5] and cfg.model.options.get("shift_div")
    assert (k400.train.epochs, k400.optim.weight_decay, k400.train.mixup_alpha, k400.eval.views) == (
        30,
        1e-5,
        0.4,
        "1x3",
    )
    assert (ssv2.train.epochs, ssv2.optim.weight_decay, ssv2.eval.views, ssv2.data.hflip) == (35, 1e-4, "2x3", False)
    assert ssv2.data.random_erasing == 0.5 and k400.data.sampling == "dense" and ssv2.data.sampling == "segment"
    assert load_config("ssv2_xvit_b16_32x").data.num_frames == 32


# ------------------------------------------------------------------------------------------ schedule


def test_lr_schedule_warmup_then_cosine():
    total, warm = 100, 10
    f = [lr_factor(s, total_steps=total, warmup_steps=warm, min_factor=0.0) for s in range(total + 1)]
    assert f[0] == pytest.approx(0.1) and f[4] == pytest.approx(0.5) and f[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(f[:warm], f[1:warm]))  # linear increase
    assert f[10] == pytest.approx(1.0) and f[55] == pytest.approx(0.5) and f[100] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(f[warm:], f[warm + 1 :]))  # monotone cosine decay
    assert f[30] == pytest.approx(0.5 * (1 + math.cos(math.pi * 20 / 90)))
    assert lr_factor(100, total_steps=100, warmup_steps=0, min_factor=0.1) == pytest.approx(0.1)


def test_scheduler_sets_group_lrs_and_resumes():
    model = nn.Linear(4, 2)
    opt = build_optimizer(model, name="sgd", lr=0.2, weight_decay=1e-4)
    sched = WarmupCosine(opt, total_steps=20, warmup_steps=4, min_lr=0.0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.05])
    for _ in range(7):
        sched.step()
    lr7 = opt.param_groups[0]["lr"]
    assert lr7 == pytest.approx(0.2 * lr_factor(7, total_steps=20, warmup_steps=4))
    opt2 = build_optimizer(model, name="sgd", lr=0.2, weight_decay=1e-4)
    sched2 = WarmupCosine(opt2, total_steps=20, warmup_steps=4)
    sched2.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(lr7)
    assert scaled_lr(0.03, 256, 64) == pytest.approx(0.12) and scaled_lr(0.03, 256, None) == 0.03


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, 8))
        self.temporal = nn.Module()
        self.temporal.embed = nn.Parameter(torch.zeros(1, 4, 1, 8))
        self.proj = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def no_weight_decay(self):
        return {"cls_token", "pos_embed", "temporal"}


def test_weight_decay_groups():
    model = _Toy()
    groups = {g["name"]: g for g in param_groups(model, 0.05)}
    named = {id(p): n for n, p in model.named_parameters()}
    assert sorted(named[id(p)] for p in groups["decay"]["params"]) == ["head.weight", "proj.weight"]
    assert sorted(named[id(p)] for p in groups["no_decay"]["params"]) == [
        "cls_token",
        "head.bias",
        "norm.bias",
        "norm.weight",
        "pos_embed",
        "proj.bias",
        "temporal.embed",
    ]
    assert groups["decay"]["weight_decay"] == 0.05 and groups["no_decay"]["weight_decay"] == 0.0
    opt = build_optimizer(model, name="adamw", lr=1e-3, weight_decay=0.05)
    assert isinstance(opt, torch.optim.AdamW) and [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]


def test_weight_decay_groups_of_real_model():
    import xvit

    model = xvit.create_model("xvit_nano_patch8_32", num_frames=4, num_classes=5)
    no_decay = {
        n
        for g in param_groups(model, 0.1)
        if g["name"] == "no_decay"
        for n, p in model.named_parameters()
        if any(p is q for q in g["params"])
    }
    for name in model.no_weight_decay():
        assert name in no_decay or any(n.startswith(name + ".") for n in no_decay), name
    assert all(p.ndim > 1 for g in param_groups(model, 0.1) if g["name"] == "decay" for p in g["params"])


# ------------------------------------------------------------------------------------------ mixup


def test_smooth_targets_and_loss():
    t = smooth_one_hot(torch.tensor([0, 2]), 4, 0.2)
    assert torch.allclose(t.sum(1), torch.ones(2))
    assert t[0, 0] == pytest.approx(0.85) and t[0, 1] == pytest.approx(0.05)
    logits = torch.randn(2, 4)
    ref = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2]), label_smoothing=0.2)
    assert soft_cross_entropy(logits, t) == pytest.approx(ref.item(), abs=1e-6)


@pytest.mark.parametrize("mixup, cutmix", [(0.4, 0.0), (0.0, 1.0), (0.8, 1.0), (0.0, 0.0)])
def test_video_mixup_shapes_and_targets(mixup, cutmix):
    np.random.seed(0)
    x = torch.randn(6, 3, 4, 16, 16)  # (B, C, T, H, W)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    mixer = VideoMixup(5, mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=0.1)
    for _ in range(5):
        out, targets = mixer(x, y)
        assert out.shape == x.shape and targets.shape == (6, 5)
        assert torch.allclose(targets.sum(1), torch.ones(6), atol=1e-6)
        assert (targets >= 0).all()
    if mixup == cutmix == 0:
        assert out is x and torch.allclose(targets, smooth_one_hot(y, 5, 0.1))


def test_cutmix_box_same_on_every_frame_and_channel():
    np.random.seed(3)
    x = torch.zeros(2, 3, 5, 32, 32)
    x[1] = 1.0  # clip 0 gets a box of ones from its partner (clip 1), and vice versa
    mixer = VideoMixup(2, cutmix_alpha=1.0)
    out, targets = mixer(x, torch.tensor([0, 1]))
    pasted = out[0]  # (C, T, H, W)
    mask = pasted[0, 0]  # (H, W) of frame 0, channel 0
    assert 0 < mask.mean() < 1
    assert torch.equal(pasted, mask.expand_as(pasted))  # the same box over C and all T
    lam = 1 - mask.mean().item()  # area actually kept
    assert targets[0, 0].item() == pytest.approx(lam, abs=1e-6) and targets[0, 1].item() == pytest.approx(
        1 - lam, abs=1e-6
    )
    y0, y1, x0, x1 = cutmix_box(32, 32, 0.75, np.random.default_rng(0))
    assert 0 <= y0 <= y1 <= 32 and 0 <= x0 <= x1 <= 32
