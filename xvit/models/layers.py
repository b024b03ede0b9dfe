"""Layers shared by every model: the space-time mixing attention (paper §3.2-3.3), the block,
and the two temporal aggregation heads (§3.4).

Token tensors are ``(B, T, N, D)``: batch, frames, tokens per frame (CLS included), channels.
Attention always runs *within* the ``N`` axis of one frame; the mixing step is what lets a frame
see its neighbours, at no FLOP cost. Models that attend over other token groupings (joint
space-time, TimeSformer's temporal attention) reshape their tokens into this layout first.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

MIX_TARGETS = ("kv", "k", "v")
MIX_PARTS = {"kv": slice(1, 3), "k": slice(1, 2), "v": slice(2, 3)}  # index into (q, k, v)


def mix_offsets(t_w: int) -> tuple[int, ...]:
    """Frame offsets of the mixed channel groups for temporal window ``t_w``.

    Group 0 comes from t+1, group 1 from t-1 (paper §3.2, Eq. 4); ``t_w = 2`` adds t+2, t-2, and so on.
    """
    if t_w < 1:
        raise ValueError(f"temporal window t_w must be >= 1, got {t_w}")
    return tuple(o for w in range(1, t_w + 1) for o in (w, -w))


def temporal_shift(x: Tensor, offsets: Sequence[int], fold: int) -> Tensor:
    """Channel group ``i`` of frame ``t`` is taken from frame ``t + offsets[i]``.

    ``x`` is ``(B, T, ...)`` with channels last; group ``i`` is channels ``[i*fold, (i+1)*fold)``
    and channels past ``len(offsets) * fold`` stay in place. Frames outside ``[0, T)`` read as
    zeros (zero padding, not circular). One output allocation, each element written once; the
    backward is the opposite shift, also one pass (see ``_TemporalShift``). Without autograd
    (inference, ``torch.export`` under ``no_grad``) it is the plain copy, so an exported graph
    holds ordinary slicing ops and no autograd function.
    """
    if len(offsets) * fold > x.shape[-1]:
        raise ValueError(f"{len(offsets)} groups of {fold} channels exceed the {x.shape[-1]} channels")
    if not (torch.is_grad_enabled() and x.requires_grad):
        return _shift(x, tuple(offsets), fold)
    return _TemporalShift.apply(x, tuple(offsets), fold)


def _shift(x: Tensor, offsets: tuple[int, ...], fold: int) -> Tensor:
    """The copy behind ``temporal_shift``: (B, T, ..., C) -> (B, T, ..., C)."""
    T = x.shape[1]
    out = torch.empty_like(x)
    for i, off in enumerate(offsets):
        c0, c1 = i * fold, (i + 1) * fold
        n = max(T - abs(off), 0)  # frames that have a source inside the clip (none if |off| >= T)
        src, dst = (slice(off, T), slice(0, n)) if off >= 0 else (slice(0, n), slice(-off, T))
        pad = slice(n, T) if off >= 0 else slice(0, min(-off, T))
        if n > 0:
            out[:, dst, ..., c0:c1] = x[:, src, ..., c0:c1]
        out[:, pad, ..., c0:c1] = 0
    used = len(offsets) * fold
    out[..., used:] = x[..., used:]
    return out


def shift_cat(x: Tensor, offsets: Sequence[int], fold: int) -> Tensor:
    """``temporal_shift`` written as slices and one concatenation, for export: (B, T, ..., C) -> same.

    Group ``i`` is ``x``'s channel group shifted by ``offsets[i]`` frames along T, its vacated end
    filled with zeros (zero padding, as ``_shift``); the groups and the unshifted channels are
    concatenated along the channel axis. Written without slice assignments, so a traced graph holds
    Slice/Concat and no scatter op (``_shift``'s assignments become ONNX ScatterND). The exporter
    selects it (``export_form``); training and eager inference keep the in-place or one-copy paths.
    """
    T = x.shape[1]
    groups = []
    for i, off in enumerate(offsets):
        g = x[..., i * fold : (i + 1) * fold]  # (B, T, ..., fold)
        n = max(T - abs(off), 0)  # frames that have a source inside the clip
        zeros = torch.zeros_like(g[:, : T - n])  # (B, T - n, ..., fold): the padded end
        if n == 0:
            groups.append(zeros)
        elif off >= 0:
            groups.append(torch.cat([g[:, off:], zeros], dim=1))  # frame t reads t + off
        else:
            groups.append(torch.cat([zeros, g[:, :n]], dim=1))  # frame t reads t - |off|
    used = len(offsets) * fold
    return torch.cat([*groups, x[..., used:]], dim=-1)  # (B, T, ..., C)


class _TemporalShift(torch.autograd.Function):
    """The zero-padded shift as one autograd op. Its gradient is the opposite shift (one pass);
    autograd through ``_shift``'s slice assignments would clone the gradient once per slice,
    which made X-ViT's training step several % slower than the frame ViT's."""

    @staticmethod
    def forward(ctx, x: Tensor, offsets: tuple[int, ...], fold: int) -> Tensor:
        ctx.offsets, ctx.fold = offsets, fold
        return _shift(x, offsets, fold)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        return _TemporalShift.apply(grad, tuple(-o for o in ctx.offsets), ctx.fold), None, None


def shift_(x: Tensor, offsets: Sequence[int], fold: int) -> Tensor:
    """``temporal_shift`` in place: (B, T, ..., C) -> ``x``, same zero padding.

    Only the shifted channel groups are written, one frame at a time in the order that reads a
    frame before it is overwritten (ascending for offsets > 0, descending for < 0); works on
    strided views such as the K/V part of a qkv tensor. Plain tensor ops, no autograd.
    """
    T = x.shape[1]
    for i, off in enumerate(offsets):
        g = x[..., i * fold : (i + 1) * fold]  # (B, T, ..., fold) view
        n = max(T - abs(off), 0)  # frames that have a source inside the clip
        for t in range(n) if off > 0 else range(T - 1, T - 1 - n, -1):
            g[:, t].copy_(g[:, t + off])
        g[:, slice(n, T) if off > 0 else slice(0, min(-off, T))].zero_()
    return x


class _MixInPlace(torch.autograd.Function):
    """The mixing step written into the qkv projection's output (B, T, N, 3D) in place.

    The Linear saves its input and weight for backward, not its output, so overwriting the
    output loses nothing autograd needs, and no second K/V tensor stays alive for backward.
    The gradient is the opposite shift, applied in place to the incoming gradient: that is the
    private tensor built by the backward of ``unbind`` (a stack) behind the ``view`` that follows.
    """

    @staticmethod
    def forward(ctx, qkv: Tensor, offsets: tuple[int, ...], fold: int, parts: slice) -> Tensor:
        ctx.offsets, ctx.fold, ctx.parts = offsets, fold, parts
        shift_(_parts(qkv, parts), offsets, fold)
        ctx.mark_dirty(qkv)
        return qkv

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        grad = grad.contiguous()
        shift_(_parts(grad, ctx.parts), tuple(-o for o in ctx.offsets), ctx.fold)
        return grad, None, None, None


def _parts(qkv: Tensor, parts: slice) -> Tensor:
    """(B, T, N, 3D) -> the (B, T, N, p, D) view of the parts (0 q, 1 k, 2 v) in ``parts``."""
    return qkv.view(*qkv.shape[:-1], 3, qkv.shape[-1] // 3)[..., parts, :]


def resize_temporal_embed(embed: Tensor, num_frames: int) -> Tensor:
    """Linear interpolation of a (1, T0, 1, D) or (1, T0, D) temporal embedding to ``num_frames``."""
    T0 = embed.shape[1]
    if T0 == num_frames:
        return embed
    flat = embed.reshape(1, T0, -1).transpose(1, 2)  # (1, D', T0)
    if T0 == 1:
        out = flat.expand(-1, -1, num_frames)
    else:
        out = F.interpolate(flat, size=num_frames, mode="linear", align_corners=True)  # (1, D', T)
    return out.transpose(1, 2).reshape(1, num_frames, *embed.shape[2:])


class Attention(nn.Module):
    """Multi-head self-attention within each frame, with optional space-time mixing of K/V.

    ``mix`` picks what is mixed across frames (``"kv"``, ``"k"``, ``"v"`` or ``None``): a fraction
    ``len(mix_offsets(t_w)) / shift_div`` of the channels (head-major flattening) comes from the
    neighbouring frames, zero-padded at the clip ends. Q is never mixed. With ``summary_token``
    the mean token of each frame's (normed) input is projected with the same K/V weights and
    the T summaries are appended to every frame's keys and values (paper §3.3, R = 1).
    ``fused_attn`` selects ``F.scaled_dot_product_attention``; the eager path is the reference.
    ``inplace_mix`` writes the mixed channels into the qkv projection's output in place
    (``mix_kv_``); ``False`` selects the out-of-place reference (``mix_kv``), which is also what
    runs under ``torch.compile`` tracing. Both give the same outputs and gradients. ``export_form``
    (set by the exporter, ``VideoModel.set_export_form``) computes the mixing as slices and
    concatenation (``shift_cat``), which a traced graph holds without scatter ops.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        mix: str | None = None,
        shift_div: int = 4,
        t_w: int = 1,
        summary_token: bool = False,
        fused_attn: bool = True,
        inplace_mix: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if mix is not None and mix not in MIX_TARGETS:
            raise ValueError(f"mix must be one of {MIX_TARGETS} or None, got {mix!r}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.mix = mix
        self.offsets = mix_offsets(t_w)
        self.fold = dim // shift_div
        if mix is not None and len(self.offsets) * self.fold > dim:
            raise ValueError(f"t_w={t_w} needs {2 * t_w} folds of dim/{shift_div}; more than {dim} channels")
        self.summary_token = summary_token
        self.fused_attn = fused_attn
        self.inplace_mix = inplace_mix
        self.export_form = False  # the mixing as slices + concatenation (shift_cat), for export
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def mix_kv(self, qkv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The space-time mixing step: (B, T, N, 3, D) -> q, k, v each (B, T, N, D).

        K and/or V (per ``mix``) take channel groups from neighbouring frames; Q is untouched.
        """
        q, k, v = qkv.unbind(3)  # each (B, T, N, D)
        if self.mix is None or self.fold == 0:
            return q, k, v
        shift = shift_cat if self.export_form else temporal_shift
        if self.mix == "kv":
            k, v = shift(qkv[:, :, :, 1:], self.offsets, self.fold).unbind(3)  # (B, T, N, 2, D)
        elif self.mix == "k":
            k = shift(k, self.offsets, self.fold)
        else:
            v = shift(v, self.offsets, self.fold)
        return q, k, v

    def mix_kv_(self, qkv: Tensor) -> Tensor:
        """The mixing step in place on the qkv projection's output (B, T, N, 3D); returns it.

        With autograd recording, one ``_MixInPlace`` op (backward: the opposite shift, in place);
        otherwise plain in-place copies. Only the shifted channel groups are written.
        """
        if self.mix is None or self.fold == 0:
            return qkv
        parts = MIX_PARTS[self.mix]
        if torch.is_grad_enabled() and qkv.requires_grad:
            return _MixInPlace.apply(qkv, self.offsets, self.fold, parts)
        shift_(_parts(qkv, parts), self.offsets, self.fold)
        return qkv

    def summary_kv(self, x: Tensor) -> Tensor:
        """Keys/values of the per-frame summary tokens: (B, T, N, D) -> (2, B, heads, T, hd)."""
        B, T, N, D = x.shape
        s = x.mean(dim=2)  # (B, T, D)
        bias = self.qkv.bias[D:] if self.qkv.bias is not None else None
        kv = F.linear(s, self.qkv.weight[D:], bias)  # (B, T, 2D)
        return kv.view(B, T, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)

    def forward(self, x: Tensor) -> Tensor:
        B, T, N, D = x.shape
        qkv = self.qkv(x)  # (B, T, N, 3D)
        if self.inplace_mix and not self.export_form and not torch.compiler.is_compiling():
            q, k, v = self.mix_kv_(qkv).view(B, T, N, 3, D).unbind(3)  # each (B, T, N, D)
        else:
            q, k, v = self.mix_kv(qkv.view(B, T, N, 3, D))  # the out-of-place reference
        q, k, v = (
            t.reshape(B * T, N, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v)
        )  # (BT, h, N, hd)
        if self.summary_token:
            ks, vs = self.summary_kv(x)  # each (B, h, T, hd)
            ks = ks.unsqueeze(1).expand(B, T, -1, -1, -1).reshape(B * T, self.num_heads, T, self.head_dim)
            vs = vs.unsqueeze(1).expand(B, T, -1, -1, -1).reshape(B * T, self.num_heads, T, self.head_dim)
            k, v = torch.cat([k, ks], dim=2), torch.cat([v, vs], dim=2)  # (BT, h, N+T, hd)
        if self.fused_attn:
            drop = self.attn_drop.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # (BT, h, N, hd)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)  # (BT, h, N, N')
            out = self.attn_drop(attn.softmax(dim=-1)) @ v  # (BT, h, N, hd)
        out = out.transpose(1, 2).reshape(B, T, N, D)  # (B, T, N, D)
        return self.proj_drop(self.proj(out))


class Block(nn.Module):
    """Pre-norm transformer block on (B, T, N, D) tokens; timm's parameter names."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: type[nn.Module] | partial = partial(nn.LayerNorm, eps=1e-6),
        attn_layer: type[nn.Module] | partial = Attention,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = attn_layer(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TemporalAttentionHead(nn.Module):
    """Temporal attention aggregation (paper §3.4, the default head).

    A zero-initialised CLS is prepended to the T per-frame CLS tokens, ``depth`` light transformer
    blocks (qkv without bias, LayerNorm eps 1e-5, MLP ratio 4, as the reference code) mix them,
    and the CLS goes through ``LayerNorm -> Linear(D, D) -> GELU -> Dropout -> Linear(D, K)``.
    Parameter names follow the reference code's ``consensus`` module so its weights load as is.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_classes: int,
        depth: int = 1,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        fused_attn: bool = True,
    ) -> None:
        super().__init__()
        self.drop = nn.Dropout(drop_rate)  # the reference drops the per-frame CLS before the head
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        attn_layer = partial(Attention, fused_attn=fused_attn)
        self.temporal_encoder = nn.Sequential(
            *[
                Block(
                    dim,
                    num_heads,
                    qkv_bias=False,
                    attn_drop=attn_drop_rate,
                    norm_layer=nn.LayerNorm,
                    attn_layer=attn_layer,
                )
                for _ in range(depth)
            ]
        )
        self.mlp_head = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, dim),
            nn.GELU(),
            nn.Dropout(drop_rate),
            nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity(),
        )

    def reset(self, num_classes: int) -> None:
        self.mlp_head[4] = nn.Linear(self.mlp_head[1].out_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        """The final ``Linear(D, num_classes)``."""
        return self.mlp_head[4]

    @torch.no_grad()
    def init_weights(self) -> None:
        """Signal-preserving init, applied after the generic trunc-normal(0.02) one (init only:
        loaded weights, e.g. the reference checkpoints, are unaffected).

        The head's CLS token sees the frames only through the attention's value and output
        projections, and reaches the logits through two more linears. At std 0.02 each has a gain
        of 0.02 * sqrt(D): 0.55 at ViT-B's 768, but 0.2 at 96 and 0.11 at 32, so at small widths
        the input-dependent part of the CLS starts ~25x smaller than the constants that AdamW
        moves by ~lr per step (biases, the CLS token); the LayerNorms after it then normalise
        the frames away, the model collapses to a constant prediction and the backbone's
        gradient vanishes (the "stall at width 96"). Here the value and output projections start
        as the identity, so that with the zero CLS token (zero query: uniform attention) the head
        starts as temporal average pooling of the frame tokens followed by its MLP, and
        ``mlp_head[1]`` starts at unit gain (std 1/sqrt(D)).
        """
        for blk in self.temporal_encoder:
            dim = blk.attn.proj.in_features
            blk.attn.qkv.weight[2 * dim :].copy_(torch.eye(dim))  # value projection
            blk.attn.proj.weight.copy_(torch.eye(dim))
        fc = self.mlp_head[1]
        trunc_normal_(fc.weight, std=fc.in_features**-0.5)

    def forward(self, cls: Tensor) -> Tensor:
        """(B, T, D) normed per-frame CLS tokens -> (B, num_classes)."""
        B, T, D = cls.shape
        x = torch.cat([self.cls_token.expand(B, -1, -1), self.drop(cls)], dim=1)  # (B, 1+T, D)
        x = self.temporal_encoder(x.unsqueeze(1))  # (B, 1, 1+T, D): one "frame" of 1+T tokens
        return self.mlp_head(x[:, 0, 0])  # (B, num_classes)


def build_head(
    kind: str, dim: int, num_heads: int, num_classes: int, depth: int, drop_rate: float, fused_attn: bool
) -> nn.Module:
    """``"attn"`` (temporal attention aggregation) or ``"avg"`` (temporal average pooling)."""
    if kind == "attn":
        return TemporalAttentionHead(
            dim, num_heads, num_classes, depth=depth, drop_rate=drop_rate, fused_attn=fused_attn
        )
    if kind == "avg":
        return TemporalAvgHead(dim, num_classes, drop_rate=drop_rate)
    raise ValueError(f"head must be 'attn' or 'avg', got {kind!r}")


class LinearHead(nn.Module):
    """Dropout + linear classifier on one video-level token (TimeSformer, joint space-time)."""

    def __init__(self, dim: int, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.dim = dim
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.dim, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        """The final ``Linear(D, num_classes)``."""
        return self.fc

    def forward(self, cls: Tensor) -> Tensor:
        """(B, D) -> (B, num_classes)."""
        return self.fc(self.drop(cls))


class TemporalAvgHead(LinearHead):
    """Temporal average pooling (TSM/TSN): per-frame CLS -> classifier, averaged over T."""

    def forward(self, cls: Tensor) -> Tensor:
        """(B, T, D) normed per-frame CLS tokens -> (B, num_classes)."""
        return super().forward(cls).mean(dim=1)
