"""I3D ResNet with non-local blocks (Wang, Girshick, Gupta, He; "Non-local Neural Networks", CVPR
2018), the ResNet-101 model of its Kinetics results (Table 2g, Table 3: 77.7% top-1 on 128 frames).

The network of §4 and Table 1, for a clip of T frames at 224 px (or 256 at test):

- conv1 5x7x7, stride 2 in time and space ("we inflate conv1 to 5x7x7"); pool1 3x3x3 max,
  stride 2 (T/4 frames after it); res2; pool2 3x1x1 max, stride 2 in time; res3..res5 at T/8.
- I3D_3x1x1 (§4): the first 1x1 kernel of a bottleneck inflated to 3x1x1 in every other
  residual block ("we only inflate one kernel for every 2 residual blocks"); which blocks follows
  the official code (res2 all, res3 0 and 2, res4 the even ones, res5 the middle one), which
  gives the 1.2x parameters and 1.5x FLOPs of Table 2e over the C2D baseline (43.2M, 34.2B).
- 5 embedded-Gaussian non-local blocks (Table 2c/2f): for ResNet-50 after blocks 1 and 3 of res3
  and 1, 3, 5 of res4 ("3 to res4 and 2 to res3, to every other residual block"); for ResNet-101
  "the corresponding residual blocks", as the official code spreads them: res3 blocks 1 and 3,
  res4 blocks 6, 13, 20.
- Head: global average pooling, dropout 0.5 (§4.1), linear.

``inflate=False`` and ``nonlocal_blocks=False`` give the paper's C2D baseline and plain I3D.
ImageNet init: a torchvision ResNet-50/101 state dict, inflated (§4: "each of the t planes ...
initialized by the pre-trained k x k weights, rescaled by 1/t").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from xvit.models.cnn.base import VideoCNN, register_cnn
from xvit.models.cnn.resnet3d import DEPTHS, ResStage3d, Stem3d, drop_path_rates, stage_dims

NONLOCAL_AT = {50: ((1, 3), (1, 3, 5)), 101: ((1, 3), (6, 13, 20))}  # res3, res4 blocks followed by a NL block


def inflated_blocks(stage: int, n: int) -> list[int]:
    """Temporal kernel (3 or 1) of each block's first conv in ``stage`` (0 = res2) of ``n`` blocks."""
    if stage == 0:
        return [3] * n
    if stage == 3:
        return [3 if i % 2 else 1 for i in range(n)]  # res5: the middle block
    return [1 if i % 2 else 3 for i in range(n)]  # res3, res4: blocks 0, 2, 4, ...


class I3DNonLocal(VideoCNN):
    """Inflated 3D ResNet (I3D_3x1x1) with space-time non-local blocks."""

    temporal_exchange = "3x1x1 inflated kernels in every other block + space-time non-local blocks"

    def __init__(
        self,
        *,
        depth: int = 101,
        width: int = 64,
        blocks: Sequence[int] | None = None,
        inflate: bool = True,
        nonlocal_blocks: bool = True,
        nonlocal_at: Sequence[Sequence[int]] | None = None,
        nonlocal_kind: str = "softmax",
        drop_path_rate: float = 0.0,
        **base,
    ) -> None:
        """``inflate``: 3x1x1 kernels (I3D) or 2D ones (C2D); ``nonlocal_at``: (res3, res4) block
        indices followed by a non-local block (default: the paper's 5 blocks for ``depth``)."""
        super().__init__(**base)
        blocks = tuple(blocks or DEPTHS[depth])
        self.depth, self.inflated = depth, inflate
        where = (nonlocal_at or NONLOCAL_AT[depth]) if nonlocal_blocks else ((), ())
        self.stem = Stem3d(3, width, 5 if inflate else 1, 2, 3, 2)  # conv1 5x7x7 /2, pool1 3x3x3 /2
        rates = drop_path_rates(drop_path_rate, blocks)
        stages = []
        for s, n in enumerate(blocks):
            kts = inflated_blocks(s, n) if inflate else [1] * n
            in_ch = width if s == 0 else stage_dims(width, s - 1)[1]
            nl = where[s - 1] if s in (1, 2) else ()
            stages.append(
                ResStage3d(in_ch, *stage_dims(width, s), n, 1 if s == 0 else 2, kts, rates[s], nl, nonlocal_kind)
            )
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.make_head(stage_dims(width, 3)[1])
        self.init_weights()

    def describe(self) -> dict[str, str]:
        out = super().describe()
        nl = sum(len(stage.nonlocal_blocks) for stage in (self.layer2, self.layer3))
        kernels = "3x1x1 inflated kernels in every other block" if self.inflated else "2D kernels (C2D)"
        out["temporal"] = f"{kernels}, {nl} space-time non-local blocks" if nl else kernels
        return out

    def image_key(self, name: str) -> str | None:
        """torchvision's ResNet names: ``stem.conv1`` -> ``conv1``, ``layer1.blocks.0`` -> ``layer1.0``."""
        if ".nonlocal_blocks." in name or name.startswith("head."):
            return None
        return name.removeprefix("stem.").replace(".blocks.", ".")

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, T, H, W) -> (B, 2048, T/8, H/32, W/32)."""
        x = self.layer1(self.stem(x))  # (B, 256, T/4, H/4, W/4)
        x = F.max_pool3d(x, (3, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0))  # pool2: (B, 256, T/8, H/4, W/4)
        return self.layer4(self.layer3(self.layer2(x)))


register_cnn(
    "i3d_nl_r101",
    I3DNonLocal,
    "I3D ResNet-101 with 5 non-local blocks (Wang et al. 2018), 32 frames (128 for its Kinetics results).",
    depth=101,
    num_frames=32,
)
register_cnn(
    "i3d_nl_r50",
    I3DNonLocal,
    "I3D ResNet-50 with 5 non-local blocks (Wang et al. 2018), 32 frames.",
    depth=50,
    num_frames=32,
)
register_cnn(
    "i3d_nl_nano",
    I3DNonLocal,
    "I3D-NL at a test size: width 8, one block per stage, a non-local block in res3 and res4, 32 px.",
    width=8,
    blocks=(1, 1, 1, 1),
    nonlocal_at=((0,), (0,)),
    num_frames=8,
    img_size=32,
)
