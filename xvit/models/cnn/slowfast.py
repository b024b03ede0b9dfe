"""SlowFast networks (Feichtenhofer, Fan, Malik, He; ICCV 2019), ResNet-50/101 instantiations.

Two 3D ResNet pathways on one clip of T frames (§3, Table 1):

- **Slow**: every alpha-th frame (T/alpha frames), full width; non-degenerate temporal kernels
  (3x1x1) only in res4 and res5 (§3.4), a 1x7x7 stem, no temporal downsampling.
- **Fast**: all T frames, beta = 1/8 of the channels, 3x1x1 kernels in every block, a 5x7x7 stem,
  no temporal downsampling.
- **Lateral connections** after pool1, res2, res3 and res4 (§3.3): a time-strided convolution
  (k x 1 x 1 kernel, stride alpha, 2*beta*C output channels; "T-conv", the paper's default,
  Table 5a) whose output is concatenated to the Slow pathway's channels.
- Head: global average pooling of each pathway, concatenation, dropout, linear (§3.3).

``slowfast_r50_8x8`` is "SlowFast 8x8, R50" of Table 2: 8 Slow frames with temporal stride 8, so
the input clip is the Fast pathway's 32 frames (alpha = 4; the official 8x8 config uses a
lateral kernel of 7, the 4x16 one 5, as here). The R101 models of Table 2 put the temporal
kernels in the first 6 blocks of res4 only (the official "R101_50_50" configs; the counts of
Table 2, 106 GFLOPs for 8x8 R101, fit only those), and "+NL" adds 3 non-local blocks
(dot-product instantiation) after blocks 6, 13 and 20 of the Slow pathway's res4. Costs at the
test crop of 256 px (§4: "the inference-time spatial size is 256^2"): see the README.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from xvit.models.cnn.base import VideoCNN, register_cnn
from xvit.models.cnn.resnet3d import DEPTHS, ResStage3d, Stem3d, drop_path_rates, stage_dims


class Lateral(nn.Module):
    """Time-strided convolution Fast -> Slow (T-conv): (B, C, T, H, W) -> (B, ratio*C, T/alpha, H, W)."""

    def __init__(self, channels: int, ratio: int, kernel: int, alpha: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(
            channels, ratio * channels, (kernel, 1, 1), stride=(alpha, 1, 1), padding=(kernel // 2, 0, 0), bias=False
        )
        self.bn = nn.BatchNorm3d(ratio * channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


class SlowFast(VideoCNN):
    """Slow and Fast 3D ResNet pathways with time-strided lateral connections."""

    temporal_exchange = "Slow (1/alpha of the frames) + Fast pathway (beta of the channels), lateral T-conv"

    def __init__(
        self,
        *,
        depth: int = 50,
        alpha: int = 4,
        beta_inv: int = 8,
        width: int = 64,
        fusion_kernel: int = 5,
        fusion_ratio: int = 2,
        blocks: Sequence[int] | None = None,
        temporal_blocks: Sequence[int] | None = None,
        nonlocal_at: Sequence[int] = (),
        nonlocal_kind: str = "dot_product",
        drop_path_rate: float = 0.0,
        **base,
    ) -> None:
        """``alpha``: frame-rate ratio Fast / Slow; ``beta_inv``: 1/beta, channel ratio Slow / Fast;
        ``width``: the Slow stem's channels (64); ``blocks``: per stage (default by ``depth``);
        ``temporal_blocks``: how many leading blocks of each stage get the pathway's temporal
        kernel (default all); ``nonlocal_at``: Slow res4 blocks followed by a non-local block."""
        super().__init__(**base)
        blocks = tuple(blocks or DEPTHS[depth])
        temporal_blocks = tuple(temporal_blocks or blocks)
        self.alpha, self.depth = alpha, depth
        fast_width = width // beta_inv
        lateral = [fast_width] + [stage_dims(fast_width, s)[1] for s in range(3)]  # Fast channels before each fusion
        self.slow_stem = Stem3d(3, width, temporal_kernel=1)
        self.fast_stem = Stem3d(3, fast_width, temporal_kernel=5)
        self.laterals = nn.ModuleList(Lateral(c, fusion_ratio, fusion_kernel, alpha) for c in lateral)
        rates = drop_path_rates(drop_path_rate, blocks)
        slow, fast = [], []
        for s, n in enumerate(blocks):
            kts_slow = [3 if s >= 2 and i < temporal_blocks[s] else 1 for i in range(n)]  # §3.4: res4, res5 only
            kts_fast = [3 if i < temporal_blocks[s] else 1 for i in range(n)]
            slow_in = (width if s == 0 else stage_dims(width, s - 1)[1]) + fusion_ratio * lateral[s]
            fast_in = fast_width if s == 0 else stage_dims(fast_width, s - 1)[1]
            stride = 1 if s == 0 else 2
            nl = nonlocal_at if s == 2 else ()
            slow.append(ResStage3d(slow_in, *stage_dims(width, s), n, stride, kts_slow, rates[s], nl, nonlocal_kind))
            fast.append(ResStage3d(fast_in, *stage_dims(fast_width, s), n, stride, kts_fast, rates[s]))
        self.slow_stages, self.fast_stages = nn.ModuleList(slow), nn.ModuleList(fast)
        self.make_head(stage_dims(width, 3)[1] + stage_dims(fast_width, 3)[1])
        self.init_weights()

    def describe(self) -> dict[str, str]:
        out = super().describe()
        out["temporal"] = self.temporal_exchange.replace("alpha", str(self.alpha))
        return out

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, T, H, W) -> Slow (B, 2048, T/alpha, H/32, W/32) and Fast (B, 256, T, H/32, W/32) maps."""
        slow = self.slow_stem(x[:, :, :: self.alpha])  # (B, width, T/alpha, H/4, W/4)
        fast = self.fast_stem(x)  # (B, width/beta_inv, T, H/4, W/4)
        slow = torch.cat([slow, self.laterals[0](fast)], dim=1)  # (B, width + 2*width/beta_inv, T/alpha, ...)
        for s, (slow_stage, fast_stage) in enumerate(zip(self.slow_stages, self.fast_stages)):
            slow, fast = slow_stage(slow), fast_stage(fast)
            if s < 3:
                slow = torch.cat([slow, self.laterals[s + 1](fast)], dim=1)  # fuse Fast into Slow
        return slow, fast

    def forward_head(self, features: tuple[Tensor, Tensor]) -> Tensor:
        """Both pathways' maps -> (B, num_classes): pooled, concatenated, dropout, linear."""
        slow, fast = features
        return self.head(torch.cat([self.pool(slow), self.pool(fast)], dim=1))  # (B, 2048 + 256) -> (B, K)


_R101 = dict(depth=101, temporal_blocks=(3, 4, 6, 3))  # Table 2's R101: temporal kernels in res4 blocks 0-5
_NL = dict(nonlocal_at=(6, 13, 20), nonlocal_kind="dot_product")

register_cnn(
    "slowfast_r50_4x16",
    SlowFast,
    "SlowFast 4x16, R50 (Table 1 of the paper): 4 Slow frames of a 32-frame clip, alpha 8, beta 1/8.",
    alpha=8,
    fusion_kernel=5,
    num_frames=32,
)
register_cnn(
    "slowfast_r50_8x8",
    SlowFast,
    "SlowFast 8x8, R50 (Table 2): 8 Slow frames of a 32-frame clip, alpha 4, beta 1/8.",
    alpha=4,
    fusion_kernel=7,
    num_frames=32,
)
register_cnn(
    "slowfast_r101_nl_8x8",
    SlowFast,
    "SlowFast 8x8, R101+NL: 8 Slow frames of a 32-frame clip, 3 non-local blocks in Slow res4.",
    alpha=4,
    **_R101,
    **_NL,
    num_frames=32,
)
register_cnn(
    "slowfast_r101_nl_16x8",
    SlowFast,
    "SlowFast 16x8, R101+NL (Table 2): 16 Slow frames of a 64-frame clip, 3 non-local blocks in Slow res4.",
    alpha=4,
    **_R101,
    **_NL,
    num_frames=64,
)
register_cnn(
    "slowfast_nano",
    SlowFast,
    "SlowFast at a test size: width 8, beta 1/4, one block per stage, alpha 2, 32 px.",
    alpha=2,
    beta_inv=4,
    width=8,
    blocks=(1, 1, 1, 1),
    nonlocal_at=(0,),
    num_frames=8,
    img_size=32,
)
