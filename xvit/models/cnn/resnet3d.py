"""3D ResNet parts shared by SlowFast and I3D-NL: the bottleneck with a temporal first kernel, a
stage of them with optional non-local blocks, the stem, and the embedded-Gaussian non-local block.

- ``Bottleneck3d``: 1x1x1 (or ``t x 1 x 1``) -> 1x3x3 -> 1x1x1 convolutions with BatchNorm and a
  projection shortcut; the temporal kernel sits in the first 1x1 convolution, as in I3D_3x1x1
  (Wang et al., CVPR 2018, §4 "we inflate the first 1x1 kernel to 3x1x1") and in SlowFast's
  pathways (Feichtenhofer et al., ICCV 2019, Table 1: the underlined ``3 x 1^2`` kernels). The
  spatial stride is on the 3x3 convolution (torchvision's ResNet v1.5, also the official
  non-local code's ``STRIDE_1X1 False``). Parameter names are torchvision's (``conv1``..``bn3``,
  ``downsample.0/1``), so ImageNet ResNets inflate into it by name.
- ``NonLocal3d``: Wang et al. Eqs. (1)-(3) and (6), Fig. 2: ``theta``, ``phi``, ``g`` are 1x1x1
  convolutions to half the channels (§3.3), ``phi`` and ``g`` see the input max-pooled 2x2 in
  space (§3.3, "subsampling ... by 1/4"), ``y = softmax(theta^T phi) g`` (embedded Gaussian; the
  dot-product instantiation divides by the number of positions instead), ``z = BN(W_z y) + x``
  with the BN's scale initialised at zero (§4.1), so a new block is an identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn


class Bottleneck3d(nn.Module):
    """ResNet bottleneck on (B, C, T, H, W) with a ``temporal_kernel x 1 x 1`` first convolution."""

    def __init__(
        self,
        in_ch: int,
        inner: int,
        out_ch: int,
        stride: int = 1,
        temporal_kernel: int = 1,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        kt = temporal_kernel
        self.conv1 = nn.Conv3d(in_ch, inner, (kt, 1, 1), padding=(kt // 2, 0, 0), bias=False)
        self.bn1 = nn.BatchNorm3d(inner)
        self.conv2 = nn.Conv3d(inner, inner, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False)
        self.bn2 = nn.BatchNorm3d(inner)
        self.conv3 = nn.Conv3d(inner, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv3d(in_ch, out_ch, 1, stride=(1, stride, stride), bias=False), nn.BatchNorm3d(out_ch)
            )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def init_weights(self) -> None:
        nn.init.zeros_(self.bn3.weight)  # the residual branch starts at zero (Goyal et al. 2017)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_ch, T, H, W) -> (B, out_ch, T, H/stride, W/stride)."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(self.drop_path(out) + shortcut)


class NonLocal3d(nn.Module):
    """Space-time non-local block (embedded Gaussian by default) with its residual connection."""

    def __init__(self, dim: int, inner: int | None = None, instantiation: str = "softmax", fused_attn: bool = True):
        """``instantiation``: ``"softmax"`` (embedded Gaussian, Eq. 3; the NL paper's default) or
        ``"dot_product"`` (Eq. 4, normalised by the number of positions; SlowFast's +NL models)."""
        super().__init__()
        if instantiation not in ("softmax", "dot_product"):
            raise ValueError(f"non-local instantiation must be 'softmax' or 'dot_product', got {instantiation!r}")
        inner = inner or dim // 2
        self.instantiation, self.fused_attn, self.inner = instantiation, fused_attn, inner
        self.theta = nn.Conv3d(dim, inner, 1)
        self.phi = nn.Conv3d(dim, inner, 1)
        self.g = nn.Conv3d(dim, inner, 1)
        self.out = nn.Conv3d(inner, dim, 1)
        self.bn = nn.BatchNorm3d(dim)
        self.init_weights()

    def init_weights(self) -> None:
        nn.init.zeros_(self.bn.weight)  # §4.1: the block starts as an identity mapping

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, C, T, H, W)."""
        B, C, T, H, W = x.shape
        pooled = F.max_pool3d(x, (1, 2, 2)) if min(H, W) >= 2 else x  # (B, C, T, H/2, W/2): phi, g subsampled
        q = self.theta(x).flatten(2).transpose(1, 2)  # (B, N, Ci), N = T*H*W
        k = self.phi(pooled).flatten(2).transpose(1, 2)  # (B, M, Ci), M = N/4
        v = self.g(pooled).flatten(2).transpose(1, 2)  # (B, M, Ci)
        if self.instantiation == "dot_product":
            y = (q @ k.transpose(1, 2)) / k.shape[1] @ v  # (B, N, M) @ (B, M, Ci) -> (B, N, Ci)
        elif self.fused_attn:
            y = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)
        else:  # theta^T phi scaled by 1/sqrt(Ci) (as the official code), softmax over the M positions
            attn = (q @ k.transpose(1, 2)) * self.inner**-0.5  # (B, N, M)
            y = attn.softmax(dim=-1) @ v  # (B, N, Ci)
        y = y.transpose(1, 2).reshape(B, self.inner, T, H, W)  # (B, Ci, T, H, W)
        return x + self.bn(self.out(y))


class ResStage3d(nn.Module):
    """``depth`` bottlenecks (the first one strided) with non-local blocks after chosen ones."""

    def __init__(
        self,
        in_ch: int,
        inner: int,
        out_ch: int,
        depth: int,
        stride: int,
        temporal_kernels: Sequence[int],
        drop_paths: Sequence[float],
        nonlocal_at: Sequence[int] = (),
        nonlocal_kind: str = "softmax",
    ) -> None:
        """``temporal_kernels``: per block; ``nonlocal_at``: block indices followed by a non-local block."""
        super().__init__()
        self.blocks = nn.ModuleList(
            Bottleneck3d(in_ch if i == 0 else out_ch, inner, out_ch, stride if i == 0 else 1, kt, dp)
            for i, (kt, dp) in enumerate(zip(temporal_kernels, drop_paths, strict=True))
        )
        if any(not 0 <= i < depth for i in nonlocal_at) or len(self.blocks) != depth:
            raise ValueError(f"non-local positions {list(nonlocal_at)} outside a {depth}-block stage")
        self.nonlocal_blocks = nn.ModuleDict(
            {str(i): NonLocal3d(out_ch, out_ch // 2, nonlocal_kind) for i in sorted(nonlocal_at)}
        )

    def forward(self, x: Tensor) -> Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x)
            if str(i) in self.nonlocal_blocks:
                x = self.nonlocal_blocks[str(i)](x)
        return x


class Stem3d(nn.Module):
    """``conv1`` (t x 7 x 7, 2x spatial stride), BN, ReLU, 3x3 max pooling (2x spatial stride)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        temporal_kernel: int = 1,
        temporal_stride: int = 1,
        pool_temporal_kernel: int = 1,
        pool_temporal_stride: int = 1,
    ) -> None:
        super().__init__()
        kt, kp = temporal_kernel, pool_temporal_kernel
        self.conv1 = nn.Conv3d(
            in_ch, out_ch, (kt, 7, 7), stride=(temporal_stride, 2, 2), padding=(kt // 2, 3, 3), bias=False
        )
        self.bn1 = nn.BatchNorm3d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool3d((kp, 3, 3), stride=(pool_temporal_stride, 2, 2), padding=(kp // 2, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, T, H, W) -> (B, out_ch, T / strides, H/4, W/4)."""
        return self.pool(self.relu(self.bn1(self.conv1(x))))


def stage_dims(width: int, stage: int) -> tuple[int, int]:
    """(inner, out) channels of ResNet stage ``stage`` (0 = res2) for base ``width`` (64 in ResNets)."""
    return width * 2**stage, 4 * width * 2**stage


def drop_path_rates(rate: float, blocks: Sequence[int]) -> list[list[float]]:
    """Stochastic depth rising linearly from 0 to ``rate`` over all blocks, split per stage."""
    total = sum(blocks)
    flat = [rate * i / max(total - 1, 1) for i in range(total)]
    out, start = [], 0
    for n in blocks:
        out.append(flat[start : start + n])
        start += n
    return out


DEPTHS: dict[int, tuple[int, int, int, int]] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
