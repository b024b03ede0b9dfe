"""The space-time mixing step on hand-built tensors (paper §3.2), the identical-frames property
against a timm ViT with the same weights, the summary token, and TSM-ViT's shift."""

import pytest
import timm
import torch

import xvit
from xvit.models.layers import Attention, mix_offsets, temporal_shift

B, T, N, D = 2, 5, 3, 16


def coded(B=B, T=T, N=N, D=D):
    """x[b, t, n, c] = 1000*(t+1) + c + 0.01*n: every value names its frame, token and channel."""
    t = torch.arange(T).view(1, T, 1, 1) + 1
    n = torch.arange(N).view(1, 1, N, 1)
    c = torch.arange(D).view(1, 1, 1, D)
    return (1000.0 * t + c + 0.01 * n).expand(B, T, N, D).clone()


def src_frame(v):
    """Frame index encoded in a coded value (0 for padding)."""
    return torch.div(v, 1000, rounding_mode="floor") - 1


def test_shift_channels_come_from_t_plus_1_then_t_minus_1_zero_padded():
    x = coded()
    fold = D // 4
    y = temporal_shift(x, mix_offsets(1), fold)
    for t in range(T):
        # channels [0, fold) from t+1, zero at the last frame
        if t + 1 < T:
            assert torch.equal(y[:, t, :, :fold], x[:, t + 1, :, :fold])
        else:
            assert not y[:, t, :, :fold].any()
        # channels [fold, 2 fold) from t-1, zero at the first frame
        if t >= 1:
            assert torch.equal(y[:, t, :, fold : 2 * fold], x[:, t - 1, :, fold : 2 * fold])
        else:
            assert not y[:, t, :, fold : 2 * fold].any()
        # the rest from t itself
        assert torch.equal(y[:, t, :, 2 * fold :], x[:, t, :, 2 * fold :])
    # every token is mixed alike, CLS (token 0) included
    assert torch.equal(src_frame(y[0, 1, 0, :fold]), torch.full((fold,), 2.0))


def test_t_w_2_adds_folds_from_t_plus_minus_2():
    x = coded()
    fold = D // 8
    y = temporal_shift(x, mix_offsets(2), fold)
    assert mix_offsets(2) == (1, -1, 2, -2)
    t = 2
    expected = [t + 1, t - 1, t + 2, t - 2]
    for i, s in enumerate(expected):
        assert torch.equal(y[:, t, :, i * fold : (i + 1) * fold], x[:, s, :, i * fold : (i + 1) * fold])
    assert not y[:, 3, :, 2 * fold : 3 * fold].any()  # t+2 = 5 is outside the clip
    assert not y[:, 1, :, 3 * fold : 4 * fold].any()  # t-2 = -1 is outside the clip
    assert torch.equal(y[:, t, :, 4 * fold :], x[:, t, :, 4 * fold :])


def test_shift_shorter_clip_than_offset_is_all_padding():
    x = coded(T=1)
    y = temporal_shift(x, mix_offsets(1), D // 4)
    assert not y[..., : D // 2].any() and torch.equal(y[..., D // 2 :], x[..., D // 2 :])


@pytest.mark.parametrize("mix", ["kv", "k", "v"])
def test_attention_mixes_only_k_and_or_v_never_q(mix):
    attn = Attention(D, num_heads=2, mix=mix, shift_div=4)
    qkv = torch.stack([coded(), coded() + 0.5, coded() + 0.25], dim=3)  # (B, T, N, 3, D)
    q, k, v = attn.mix_kv(qkv)
    assert torch.equal(q, qkv[:, :, :, 0])
    shifted = {i: temporal_shift(qkv[:, :, :, i], mix_offsets(1), D // 4) for i in (1, 2)}
    assert torch.equal(k, shifted[1] if "k" in mix else qkv[:, :, :, 1])
    assert torch.equal(v, shifted[2] if "v" in mix else qkv[:, :, :, 2])


def test_head_major_channel_order():
    # fold = D/4 = 4 channels = the first 4 channels of head 0 (head_dim 8): c = h*head_dim + j
    attn = Attention(D, num_heads=2, mix="kv", shift_div=4)
    qkv = torch.stack([coded()] * 3, dim=3)
    _, k, _ = attn.mix_kv(qkv)
    k_heads = k.view(B, T, N, 2, 8)  # (B, T, N, heads, head_dim)
    assert torch.equal(src_frame(k_heads[0, 2, 0, 0, :4]), torch.full((4,), 3.0))  # from t+1
    assert torch.equal(src_frame(k_heads[0, 2, 0, 0, 4:]), torch.full((4,), 1.0))  # from t-1
    assert torch.equal(src_frame(k_heads[0, 2, 0, 1]), torch.full((8,), 2.0))  # head 1 unmixed


@pytest.mark.parametrize(
    "spec,expected",
    [("all", [0, 1, 2, 3]), ("first_half", [0, 1]), ("odd", [1, 3]), ("even", [0, 2]), ([0, -1], [0, 3]), ("none", [])],
)
def test_mixing_only_in_chosen_blocks(spec, expected):
    m = xvit.create_model("xvit_nano_patch8_32", num_frames=4, num_classes=3, depth=4, mix_blocks=spec)
    assert [i for i, b in enumerate(m.blocks) if b.attn.mix] == expected
    # a block that does not mix is a plain per-frame attention: frames do not interact
    x = torch.randn(1, 4, 5, 32)
    plain = m.blocks[1]
    if 1 not in expected:
        y = plain(x)
        y_single = plain(x[:, 2:3])
        torch.testing.assert_close(y[:, 2:3], y_single)


def timm_vit(depth=2, dim=32, heads=2, img=32, patch=8):
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=img,
        patch_size=patch,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        num_classes=0,
    ).eval()


@pytest.mark.parametrize("depth,frames,equal,differ", [(2, 6, [2, 3], [0, 5]), (12, 26, [12, 13], [0, 25])])
def test_identical_frames_match_image_vit_out_of_the_paddings_reach(tmp_path, depth, frames, equal, differ):
    vit = timm_vit(depth=depth)
    path = tmp_path / "vit.pth"
    torch.save(vit.state_dict(), path)
    model = xvit.create_model(
        "xvit_nano_patch8_32", num_frames=frames, num_classes=3, depth=depth, pretrained=str(path)
    ).eval()
    assert not model.temp_embed.any()
    frame = torch.randn(1, 3, 32, 32)
    clip = frame.unsqueeze(2).expand(1, 3, frames, 32, 32)
    with torch.no_grad():
        ref = vit.forward_features(frame)[0]  # (1+N, D)
        ours = model.forward_features(clip)[0]  # (T, 1+N, D)
    for t in equal:
        torch.testing.assert_close(ours[t], ref, atol=1e-5, rtol=0)
    for t in differ:
        assert (ours[t] - ref).abs().max() > 1e-2


def manual_attention(attn, x, summary):
    """Independent einsum derivation of one mixing attention layer (with summary tokens)."""
    Bx, Tx, Nx, Dx = x.shape
    h, hd = attn.num_heads, Dx // attn.num_heads
    w, b = attn.qkv.weight, attn.qkv.bias
    q, k, v = (x @ w[i * Dx : (i + 1) * Dx].T + b[i * Dx : (i + 1) * Dx] for i in range(3))
    k, v = (temporal_shift(t, mix_offsets(1), Dx // 4) for t in (k, v))
    if summary:
        s = x.mean(2, keepdim=True)  # (B, T, 1, D)
        ks, vs = (s @ w[i * Dx : (i + 1) * Dx].T + b[i * Dx : (i + 1) * Dx] for i in (1, 2))  # (B, T, 1, D)
        k = torch.cat([k, ks.transpose(1, 2).expand(Bx, Tx, Tx, Dx)], dim=2)  # every frame gets all T summaries
        v = torch.cat([v, vs.transpose(1, 2).expand(Bx, Tx, Tx, Dx)], dim=2)
    split = lambda t: t.reshape(Bx, Tx, t.shape[2], h, hd)  # noqa: E731
    logits = torch.einsum("btnhd,btmhd->bthnm", split(q), split(k)) / hd**0.5
    out = torch.einsum("bthnm,btmhd->btnhd", logits.softmax(-1), split(v)).reshape(Bx, Tx, Nx, Dx)
    return attn.proj(out)


@pytest.mark.parametrize("summary", [False, True])
@pytest.mark.parametrize("fused", [False, True])
def test_attention_matches_manual_derivation(summary, fused):
    torch.manual_seed(1)
    attn = Attention(D, num_heads=2, mix="kv", shift_div=4, summary_token=summary, fused_attn=fused).eval()
    x = torch.randn(B, T, N, D)
    torch.testing.assert_close(attn(x), manual_attention(attn, x, summary), atol=1e-5, rtol=1e-5)


def test_removing_summary_keys_recovers_the_plain_model():
    torch.manual_seed(0)
    with_summary = xvit.create_model("xvit_nano_patch8_32", num_frames=4, num_classes=3, summary_token=True).eval()
    plain = xvit.create_model("xvit_nano_patch8_32", num_frames=4, num_classes=3).eval()
    plain.load_state_dict(with_summary.state_dict())  # the summary tokens add no parameters
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        f_summary = with_summary.forward_features(x)
        for blk in with_summary.blocks:
            blk.attn.summary_token = False  # drop the appended keys/values
        f_removed = with_summary.forward_features(x)
        assert torch.equal(with_summary(x), plain(x))
    assert torch.equal(f_removed, plain.forward_features(x))
    assert (f_summary - f_removed).abs().max() > 1e-2


def test_tsm_vit_shifts_tokens_before_every_block():
    torch.manual_seed(0)
    m = xvit.create_model("tsm_vit_nano_patch8_32", num_frames=4, num_classes=3).eval()
    inputs = []
    for blk in m.blocks:
        blk.register_forward_pre_hook(lambda mod, args: inputs.append(args[0]))
    outputs = []
    m.pos_drop.register_forward_hook(lambda mod, args, out: outputs.append(out))
    for blk in m.blocks:
        blk.register_forward_hook(lambda mod, args, out: outputs.append(out))
    with torch.no_grad():
        m(torch.randn(2, 3, 4, 32, 32))
    fold = 32 // 8
    for before, seen in zip(outputs[:-1], inputs):
        assert torch.equal(seen[:, :-1, :, :fold], before[:, 1:, :, :fold])  # from t+1
        assert torch.equal(seen[:, 1:, :, fold : 2 * fold], before[:, :-1, :, fold : 2 * fold])  # from t-1
        assert not seen[:, -1, :, :fold].any() and not seen[:, 0, :, fold : 2 * fold].any()  # zero padded
        assert torch.equal(seen[..., 2 * fold :], before[..., 2 * fold :])


def test_timesformer_at_init_equals_frame_vit_on_identical_frames(tmp_path):
    torch.manual_seed(0)
    vit = xvit.create_model("vit_nano_patch8_32", num_frames=4, num_classes=3).eval()
    path = tmp_path / "vit.pth"
    torch.save({k: v for k, v in vit.state_dict().items() if not k.startswith("head.")}, path)
    ts = xvit.create_model("timesformer_nano_patch8_32", num_frames=4, num_classes=3, pretrained=str(path)).eval()
    ts.head.fc.load_state_dict(vit.head.fc.state_dict())
    frame = torch.randn(2, 3, 1, 32, 32)
    same = frame.expand(2, 3, 4, 32, 32)
    general = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ts(same), vit(same), atol=1e-5, rtol=1e-5)
        assert (ts(general) - vit(general)).abs().max() > 1e-4


@pytest.mark.parametrize("t_w", [1, 2])
def test_shift_gradient_is_the_opposite_shift(t_w):
    x = torch.randn(2, 5, 3, 8, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: temporal_shift(t, mix_offsets(t_w), 2), (x,))
    assert torch.autograd.gradgradcheck(lambda t: temporal_shift(t, mix_offsets(t_w), 2), (x,))
