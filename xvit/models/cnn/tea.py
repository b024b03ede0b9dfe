"""TEA: Temporal Excitation and Aggregation (Li, Ji, Shi, Zhang, Kang, Wang; CVPR 2020), ResNet-50.

A 2D network applied to every frame (frames in the batch, TSN-style; temporal average of the
per-frame logits' features at the end) whose bottlenecks are TEA blocks (§3, Fig. 2): the
backbone is Res2Net-50 26w x 4s (Gao et al. 2019, the 2D architecture MTA is built on).

- **ME, motion excitation** (§3.1, Eqs. 1-4), after the first 1x1 convolution of a bottleneck:
  ``X^r = BN(conv_red(X))`` (1x1, C -> C/16); ``M(t) = conv_trans(X^r(t+1)) - X^r(t)`` with a
  channel-wise 3x3 ``conv_trans`` and ``M(T) = 0``; ``M^s = BN(conv_exp(GAP(M)))`` (1x1, C/16 -> C);
  ``A = 2 sigmoid(M^s) - 1``; output ``X + X * A`` (the residual form of §3.1).
- **MTA, multiple temporal aggregation** (§3.2, Eq. 5), in place of the 3x3 convolution: the C
  channels split into 4 fragments; fragments pass, in turn, a channel-wise temporal convolution
  (kernel 3) and a 3x3 spatial convolution, each (but the first) after adding the previous
  fragment's output; one fragment passes unchanged; the four are concatenated. Fragments are
  ordered as in Res2Net (the unchanged one last, average-pooled in a strided block), so Res2Net's
  ImageNet weights apply as they are.

At init the temporal kernels are identities (centre tap 1) and ME's last BN has zero scale
(``A = 0``), so a TEA initialised from an ImageNet Res2Net-50 (timm's ``res2net50_26w_4s``
state dict, ``load_image_weights``) computes the image model's features on every frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn

from xvit.models.cnn.base import VideoCNN, register_cnn
from xvit.models.cnn.resnet3d import drop_path_rates


def temporal_conv(x: Tensor, conv: nn.Conv3d, T: int) -> Tensor:
    """Channel-wise temporal convolution of per-frame maps: (B*T, C, H, W) -> (B*T, C, H, W)."""
    BT, C, H, W = x.shape
    y = conv(x.view(BT // T, T, C, H, W).transpose(1, 2))  # (B, C, T, H, W)
    return y.transpose(1, 2).reshape(BT, C, H, W)


class MotionExcitation(nn.Module):
    """TEA's ME module (§3.1) on (B*T, C, H, W) feature maps of clips of ``num_frames``."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        r = max(1, channels // reduction)
        self.conv_red = nn.Conv2d(channels, r, 1, bias=False)
        self.bn_red = nn.BatchNorm2d(r)
        self.conv_trans = nn.Conv2d(r, r, 3, padding=1, groups=r, bias=False)
        self.conv_exp = nn.Conv2d(r, channels, 1, bias=False)
        self.bn_exp = nn.BatchNorm2d(channels)

    def init_weights(self) -> None:
        nn.init.zeros_(self.bn_exp.weight)  # A = 2 sigmoid(0) - 1 = 0: the module starts as an identity

    def forward(self, x: Tensor, T: int) -> Tensor:
        BT, C, H, W = x.shape
        red = self.bn_red(self.conv_red(x))  # (BT, r, H, W)
        moved = self.conv_trans(red)  # (BT, r, H, W)
        red, moved = red.view(BT // T, T, -1, H, W), moved.view(BT // T, T, -1, H, W)
        motion = F.pad(moved[:, 1:] - red[:, :-1], (0, 0, 0, 0, 0, 0, 0, 1))  # (B, T, r, H, W); M(T) = 0
        pooled = motion.mean((3, 4)).reshape(BT, -1, 1, 1)  # (BT, r, 1, 1)
        attention = 2 * torch.sigmoid(self.bn_exp(self.conv_exp(pooled))) - 1  # (BT, C, 1, 1)
        return x + x * attention


class TEABlock(nn.Module):
    """Res2Net bottleneck (``scale`` fragments of ``width`` channels) with ME and MTA; timm's
    Res2Net parameter names (``conv1``, ``bn1``, ``convs.i``, ``bns.i``, ``conv3``, ``bn3``)."""

    expansion = 4

    def __init__(
        self, in_ch: int, planes: int, stride: int = 1, base_width: int = 26, scale: int = 4, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        width = int(math.floor(planes * base_width / 64))
        out_ch = planes * self.expansion
        self.width, self.scale, self.first = width, scale, stride != 1 or in_ch != out_ch
        self.conv1 = nn.Conv2d(in_ch, width * scale, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.me = MotionExcitation(width * scale)
        n = scale - 1
        self.tconvs = nn.ModuleList(
            nn.Conv3d(width, width, (3, 1, 1), padding=(1, 0, 0), groups=width, bias=False) for _ in range(n)
        )
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, stride, 1, bias=False) for _ in range(n))
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(n))
        self.pool = nn.AvgPool2d(3, stride, 1) if self.first else nn.Identity()  # Res2Net's 'stage' block
        self.conv3 = nn.Conv2d(width * scale, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if self.first:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def init_weights(self) -> None:
        nn.init.zeros_(self.bn3.weight)
        for conv in self.tconvs:  # identity temporal kernels: at init, MTA is Res2Net's hierarchical 3x3
            nn.init.zeros_(conv.weight)
            nn.init.ones_(conv.weight[:, :, 1])

    def forward(self, x: Tensor, T: int) -> Tensor:
        """(B*T, in_ch, H, W) -> (B*T, 4*planes, H/stride, W/stride)."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.me(self.relu(self.bn1(self.conv1(x))), T)  # (BT, width*scale, H, W)
        parts = torch.split(out, self.width, dim=1)  # scale x (BT, width, H, W)
        outs, prev = [], None
        for i, (tconv, conv, bn) in enumerate(zip(self.tconvs, self.convs, self.bns)):
            sp = parts[i] if prev is None or self.first else parts[i] + prev  # Eq. 5: add the previous output
            prev = self.relu(bn(conv(temporal_conv(sp, tconv, T))))
            outs.append(prev)
        outs.append(self.pool(parts[-1]))  # the fragment that passes unchanged
        out = self.bn3(self.conv3(torch.cat(outs, dim=1)))
        return self.relu(self.drop_path(out) + shortcut)


class TEA(VideoCNN):
    """Res2Net-50 with TEA blocks, applied to every frame; logits of the time-averaged features."""

    temporal_exchange = "motion excitation (feature differences) + multiple temporal aggregation in every block"
    image_weights = "a timm res2net50_26w_4s state dict"

    def __init__(
        self,
        *,
        blocks: Sequence[int] = (3, 4, 6, 3),
        width: int = 64,
        base_width: int = 26,
        scale: int = 4,
        drop_path_rate: float = 0.0,
        **base,
    ) -> None:
        super().__init__(**base)
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        rates = drop_path_rates(drop_path_rate, blocks)
        in_ch = width
        for s, n in enumerate(blocks):
            planes = width * 2**s
            stage = [
                TEABlock(
                    in_ch if i == 0 else planes * 4, planes, 2 if s and i == 0 else 1, base_width, scale, rates[s][i]
                )
                for i in range(n)
            ]
            setattr(self, f"layer{s + 1}", nn.ModuleList(stage))
            in_ch = planes * 4
        self.make_head(in_ch)
        self.init_weights()

    def image_key(self, name: str) -> str | None:
        return None if name.startswith("head.") else name

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, T, H, W) -> per-frame maps (B, 2048, T, H/32, W/32)."""
        B, C, T, H, W = x.shape
        x = x.transpose(1, 2).reshape(B * T, C, H, W)  # (BT, 3, H, W)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (BT, 64, H/4, W/4)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                x = block(x, T)
        return x.view(B, T, *x.shape[1:]).transpose(1, 2)  # (B, 2048, T, H/32, W/32)


register_cnn(
    "tea_r50",
    TEA,
    "TEA ResNet-50 (Res2Net-50 26w x 4s with ME and MTA), 8 frames (16 for its Kinetics results).",
    num_frames=8,
)
register_cnn(
    "tea_nano",
    TEA,
    "TEA at a test size: width 16, one block per stage, 32 px.",
    blocks=(1, 1, 1, 1),
    width=16,
    num_frames=8,
    img_size=32,
)
