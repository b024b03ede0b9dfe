"""The in-place mixing (``Attention.mix_kv_``) against the out-of-place reference (``mix_kv``):
same outputs and parameter gradients for every mixing option, fewer bytes kept for backward."""

import json

import pytest
import torch

import xvit
from xvit.bench.mixing import saved_bytes
from xvit.models import layers
from xvit.models.layers import Attention, mix_offsets, shift_, temporal_shift

OPTIONS = [
    dict(mix="kv"),
    dict(mix="k"),
    dict(mix="v"),
    dict(mix="kv", t_w=2, shift_div=8),
    dict(mix="kv", summary_token=True),
    dict(mix="k", summary_token=True, qkv_bias=False),
    dict(mix="kv", mix_blocks="odd", shift_div=8),
    dict(mix="kv", drop_rate=0.1, attn_drop_rate=0.1, drop_path_rate=0.1),
]


def set_inplace(model, enable):
    for m in model.modules():
        if isinstance(m, Attention):
            m.inplace_mix = enable


def run(model, x, target, seed=0):
    """Output and every parameter's gradient of one forward/backward (dropout seeded alike)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    out = model(x)
    torch.nn.functional.cross_entropy(out, target).backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("fused", [False, True], ids=["eager", "sdpa"])
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_inplace_mixing_equals_reference_outputs_and_gradients(opts, fused):
    torch.manual_seed(0)
    model = xvit.create_model("xvit_nano_patch8_32", num_frames=4, num_classes=3, depth=2, **opts)
    model.set_fused_attn(fused)
    x, target = torch.randn(2, 3, 4, 32, 32), torch.tensor([0, 2])
    for train in (True, False):
        model.train(train)
        set_inplace(model, False)
        ref_out, ref_grads = run(model, x, target)
        set_inplace(model, True)
        out, grads = run(model, x, target)
        torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-5)
        assert grads.keys() == ref_grads.keys() and "blocks.0.attn.qkv.weight" in grads
        for name, g in grads.items():
            torch.testing.assert_close(g, ref_grads[name], atol=1e-6, rtol=1e-5, msg=name)
        torch.manual_seed(0)
        with torch.no_grad():  # the plain in-place copies
            torch.testing.assert_close(model(x), ref_out, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("t_w,T", [(1, 5), (2, 5), (2, 1), (1, 2)])
@pytest.mark.parametrize("mix", ["kv", "k", "v"])
def test_mix_kv_inplace_equals_reference_and_its_input_gradient(mix, t_w, T):
    attn = Attention(16, num_heads=2, mix=mix, shift_div=8 if t_w == 2 else 4, t_w=t_w)
    qkv = torch.randn(2, T, 3, 48, dtype=torch.double, requires_grad=True)
    ref = torch.stack(attn.mix_kv(qkv.view(2, T, 3, 3, 16)), dim=3).view(2, T, 3, 48)
    new = attn.mix_kv_(qkv * 1.0)  # a non-leaf, as the Linear's output is
    torch.testing.assert_close(new, ref, atol=0, rtol=0)
    g = torch.randn_like(ref)
    (g_ref,) = torch.autograd.grad(ref, qkv, g)
    (g_new,) = torch.autograd.grad(attn.mix_kv_(qkv * 1.0), qkv, g)
    torch.testing.assert_close(g_new, g_ref, atol=0, rtol=0)


def test_shift_inplace_equals_the_copy_on_a_strided_view():
    x = torch.randn(2, 6, 3, 4, 8)
    for offsets, fold in [(mix_offsets(1), 2), (mix_offsets(2), 2), (mix_offsets(3), 1)]:
        ref = temporal_shift(x[:, :, :, 1:3], offsets, fold)
        y = x.clone()
        shift_(y[:, :, :, 1:3], offsets, fold)
        assert torch.equal(y[:, :, :, 1:3], ref) and torch.equal(y[:, :, :, [0, 3]], x[:, :, :, [0, 3]])


def test_without_autograd_the_inplace_mixing_is_plain_tensor_ops(monkeypatch):
    model = xvit.create_model("xvit_nano_patch8_32", num_frames=4, num_classes=3, depth=2).eval()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        expected = model(x)

    def refuse(*args):
        raise AssertionError("autograd.Function used without autograd")

    monkeypatch.setattr(layers._MixInPlace, "apply", refuse)
    with torch.no_grad():
        assert torch.equal(model(x), expected)
    with torch.inference_mode():
        assert torch.equal(model(x), expected)


def test_inplace_mixing_keeps_no_second_kv_tensor_for_backward():
    torch.manual_seed(0)
    kw = dict(num_frames=4, num_classes=3, depth=2)
    model = xvit.create_model("xvit_nano_patch8_32", **kw)
    frame_vit = xvit.create_model("vit_nano_patch8_32", **kw)
    x = torch.randn(2, 3, 4, 32, 32)
    inplace = saved_bytes(model, x)
    set_inplace(model, False)
    reference = saved_bytes(model, x)
    # the reference keeps one (B, T, N, 2, D) K/V copy per block: 2 * 4 * 17 * 2 * 32 floats
    assert reference - inplace == 2 * (2 * 4 * 17 * 2 * 32 * 4)
    assert inplace < saved_bytes(frame_vit, x) * 1.1  # the rest is the temporal head


def test_bench_mixing_mode_prints_every_figure_with_its_settings(tmp_path, capsys):
    from xvit.cli import main

    out_json = tmp_path / "mixing.json"
    argv = ["bench", "--mixing", "--size", "tiny", "--frames", "2", "--repeats", "1", "--warmup", "0"]
    assert main([*argv, "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "1 thread(s), fp32" in text and "ISA: " in text
    assert "saved-for-backward memory (tiny/16, batch 2, 2 frames" in text
    assert "mixing step per tiny/16 block (batch 1, 2 frames" in text
    assert "floor: one contiguous copy of the same 0.3 MiB" in text  # 2 frames x 197 tokens x 192 floats
    for name in ("xvit/vit infer", "xvit-reference/vit train", "vit#2/vit train_cpu"):
        assert f"  {name} " in text
    doc = json.loads(out_json.read_text())
    assert doc["settings"]["threads"] == 1 and doc["environment"]["cpu_isa"] is not None
    mem = doc["memory_bytes"]
    assert mem["xvit"] < mem["xvit-reference"] and doc["ratios"]["memory"]["xvit"] == mem["xvit"] / mem["vit"]
    assert all(len(v["train_cpu"]) == 1 for v in doc["steps_s"].values())
    assert set(doc["mixing_s"]) == {"reference", "inplace", "copy", "reference_cpu", "inplace_cpu", "copy_cpu"}
    assert doc["ratios"]["mixing_over_copy"]["paired_min"] > 0


def test_bench_mixing_warns_when_its_aa_control_is_outside_two_percent():
    from xvit.bench.mixing import control_warnings

    steps = {"vit#2/vit infer": {"of_medians": 0.979}, "vit#2/vit train": {"of_medians": 1.015}}
    (line,) = control_warnings(steps)
    assert line.startswith("A/A control vit#2/vit infer: 0.979, outside 1.00 +- 0.02") and "2.1%" in line
