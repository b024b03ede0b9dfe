"""bLVNet-TAM (Fan, Chen, Kuehne, Pistoia, Cox; "More Is Less: Learning Efficient Video
Representations by Big-Little Network and Depthwise Temporal Aggregation", NeurIPS 2019).

A 2D big-little ResNet (bL-ResNet, Chen et al. ICLR 2019, alpha = 2, beta = 4) over a clip of
2F frames taken as F pairs (§3.1): in every big-little module the **big** branch (full width,
half resolution) sees the odd frame of each pair and the **little** branch (1/alpha of the
channels, ~1/beta of the blocks, full resolution) the even one; their outputs are summed (the
big one upsampled) and a fusion block makes the pair's feature, shared by both frames. So the
network sees 2F frames for about the cost of F.

**TAM, temporal aggregation module** (§3.2): ``y_t = ReLU(sum_{j=-r..r} w_j * x_{t+j})`` with a
channel-wise weight vector ``w_j`` per offset (r = 1, three depthwise 1x1 convolutions and
zero-padded shifts in time); one before every big-little module and in every block of the last
stage, which runs on the F fused frames only (as the official code places them). Head: global
average pooling over frames and space, dropout, linear.

``blvnet_tam_r101`` with 48 input frames is "bLVNet-TAM-101, 24x2", the model of the paper's
Kinetics-400 result (73.5% top-1, the row cited by the X-ViT paper's Table 5 with 3x3 views and
840 GFLOPs per video). bL-ResNet-101's stages have (4, 8, 18, 3) blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn

from xvit.models.cnn.base import VideoCNN, register_cnn

LAYERS = {50: (3, 4, 6, 3), 101: (4, 8, 18, 3)}  # bL-ResNet's blocks per stage


class TAM(nn.Module):
    """Depthwise temporal aggregation over the ``T`` frames of each clip (per-frame maps in the batch)."""

    def __init__(self, channels: int, r: int = 1) -> None:
        super().__init__()
        self.offsets = tuple(range(-r, r + 1))
        self.weights = nn.ModuleList(
            nn.Conv2d(channels, channels, 1, groups=channels, bias=False) for _ in self.offsets
        )

    def forward(self, x: Tensor, T: int) -> Tensor:
        """(B*T, C, H, W) -> (B*T, C, H, W): frame t gets sum_j w_j * x_{t+j} (zero outside the clip)."""
        BT, C, H, W = x.shape
        out = 0
        for j, conv in zip(self.offsets, self.weights):
            y = conv(x).view(BT // T, T, C, H, W)  # (B, T, C, H, W)
            if j > 0:  # frame t takes frame t+j
                y = F.pad(y[:, j:], (0, 0, 0, 0, 0, 0, 0, j))
            elif j < 0:
                y = F.pad(y[:, :j], (0, 0, 0, 0, 0, 0, -j, 0))
            out = out + y
        return torch.relu(out).view(BT, C, H, W)


class Bottleneck(nn.Module):
    """ResNet bottleneck (``out_ch`` = 4 x the inner width), optional TAM on its input, stride on
    the 3x3; an average-pool + 1x1 projection shortcut, as bL-ResNet's."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        last_relu: bool = True,
        tam: bool = False,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        inner = out_ch // 4
        self.tam = TAM(in_ch) if tam else None
        self.conv1 = nn.Conv2d(in_ch, inner, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, inner, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(inner)
        self.conv3 = nn.Conv2d(inner, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.last_relu = last_relu
        shortcut: list[nn.Module] = [nn.AvgPool2d(3, 2, 1)] if stride != 1 else []
        if in_ch != out_ch:
            shortcut += [nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch)]
        self.downsample = nn.Sequential(*shortcut) if shortcut else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def init_weights(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: Tensor, T: int = 1) -> Tensor:
        shortcut = x
        if self.tam is not None:
            x = self.tam(x, T)
        if self.downsample is not None:
            shortcut = self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.drop_path(self.bn3(self.conv3(out))) + shortcut
        return self.relu(out) if self.last_relu else out


def chain(in_ch: int, out_ch: int, n: int, stride: int = 1, last_relu: bool = True, **kw) -> nn.ModuleList:
    return nn.ModuleList(
        Bottleneck(in_ch if i == 0 else out_ch, out_ch, stride if i == 0 else 1, last_relu or i < n - 1, **kw)
        for i in range(n)
    )


def run(blocks: nn.ModuleList, x: Tensor, T: int = 1) -> Tensor:
    for block in blocks:
        x = block(x, T)
    return x


def pairs(x: Tensor, T: int) -> tuple[Tensor, Tensor]:
    """(B*T, C, H, W) -> the big branch's frames 1, 3, 5.. and the little branch's 0, 2, 4.., each (B*T/2, C, H, W)."""
    BT, C, H, W = x.shape
    x = x.view(BT // T, T // 2, 2, C, H, W)  # (B, T/2, 2, C, H, W)
    return x[:, :, 1].reshape(-1, C, H, W), x[:, :, 0].reshape(-1, C, H, W)


def to_both(x: Tensor) -> Tensor:
    """A pair's fused map (B*T/2, C, H, W) given to both of its frames: (B*T, C, H, W)."""
    return x.unsqueeze(1).expand(-1, 2, -1, -1, -1).reshape(-1, *x.shape[1:])


class BigLittle(nn.Module):
    """A big-little module: TAM, big branch (half resolution) + little branch, fusion block."""

    def __init__(self, in_ch: int, out_ch: int, n: int, alpha: int, beta: int, stride: int, rates: Sequence[float]):
        super().__init__()
        self.tam = TAM(in_ch)
        self.big = chain(in_ch, out_ch, n - 1, 2, last_relu=False, drop_path=rates[0])
        self.little = chain(in_ch, out_ch // alpha, max(1, n // beta - 1), drop_path=rates[0])
        self.little_e = nn.Sequential(nn.Conv2d(out_ch // alpha, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
        self.fusion = chain(out_ch, out_ch, 1, stride, drop_path=rates[-1])
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor, T: int) -> Tensor:
        """(B*T, in_ch, H, W) -> (B*T, out_ch, H/stride, W/stride), pairs sharing their fused map."""
        big, little = pairs(self.tam(x, T), T)
        little = self.little_e(run(self.little, little))  # (BT/2, out_ch, H, W)
        big = F.interpolate(run(self.big, big), size=little.shape[2:])  # (BT/2, out_ch, H, W): nearest
        return to_both(run(self.fusion, self.relu(big + little)))


class BLVNetTAM(VideoCNN):
    """bL-ResNet over frame pairs with temporal aggregation modules."""

    temporal_exchange = "big-little branches over frame pairs + depthwise temporal aggregation (TAM)"
    image_weights = "an ImageNet bL-ResNet state dict with these module names"

    def __init__(
        self,
        *,
        depth: int = 50,
        alpha: int = 2,
        beta: int = 4,
        width: int = 64,
        blocks: Sequence[int] | None = None,
        drop_path_rate: float = 0.0,
        **base,
    ) -> None:
        super().__init__(**base)
        blocks = tuple(blocks or LAYERS[depth])
        rates = [drop_path_rate * s / 3 for s in range(4)]  # stochastic depth per stage, rising to drop_path_rate
        w = width
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.tam = TAM(w)  # layer 0: a strided 3x3 on the big frames, a small 3-conv branch on the little ones
        self.b_conv0 = nn.Sequential(nn.Conv2d(w, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w))
        self.l_conv0 = nn.Sequential(
            nn.Conv2d(w, w // alpha, 3, 1, 1, bias=False), nn.BatchNorm2d(w // alpha), nn.ReLU(inplace=True),
            nn.Conv2d(w // alpha, w // alpha, 3, 2, 1, bias=False), nn.BatchNorm2d(w // alpha), nn.ReLU(inplace=True),
            nn.Conv2d(w // alpha, w, 1, bias=False), nn.BatchNorm2d(w),
        )  # fmt: skip
        self.bl_init = nn.Sequential(nn.Conv2d(w, w, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        outs = [4 * w * 2**s for s in range(4)]
        self.layer1 = BigLittle(w, outs[0], blocks[0], alpha, beta, 2, rates[:1] * 2)
        self.layer2 = BigLittle(outs[0], outs[1], blocks[1], alpha, beta, 2, rates[1:2] * 2)
        self.layer3 = BigLittle(outs[1], outs[2], blocks[2], alpha, beta, 1, rates[2:3] * 2)
        self.layer4 = chain(outs[2], outs[3], blocks[3], 2, tam=True, drop_path=rates[3])  # on the F fused frames
        self.make_head(outs[3])
        self.init_weights()

    def image_key(self, name: str) -> str | None:
        return None if name.startswith("head.") else name

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, 2F, H, W) -> (B, 2048, F, H/32, W/32): one map per frame pair."""
        B, C, T, H, W = x.shape
        if T % 2:
            raise ValueError(f"bLVNet-TAM takes frame pairs: the clip needs an even number of frames, got {T}")
        x = x.transpose(1, 2).reshape(B * T, C, H, W)  # (BT, 3, H, W)
        big, little = pairs(self.tam(self.relu(self.bn1(self.conv1(x))), T), T)  # (BT/2, w, H/2, W/2) each
        x = to_both(self.bl_init(self.relu(self.b_conv0(big) + self.l_conv0(little))))  # (BT, w, H/4, W/4)
        for layer in (self.layer1, self.layer2, self.layer3):
            x = layer(x, T)
        x = run(self.layer4, pairs(x, T)[0], T // 2)  # (B*F, 2048, H/32, W/32): the fused frames once
        return x.view(B, T // 2, *x.shape[1:]).transpose(1, 2)


register_cnn(
    "blvnet_tam_r50",
    BLVNetTAM,
    "bLVNet-TAM-50 (bL-ResNet-50, alpha 2, beta 4), 8x2 frames.",
    depth=50,
    num_frames=16,
)
register_cnn(
    "blvnet_tam_r101",
    BLVNetTAM,
    "bLVNet-TAM-101 (bL-ResNet-101, alpha 2, beta 4), 8x2 frames (24x2 for its Kinetics result).",
    depth=101,
    num_frames=16,
)
register_cnn(
    "blvnet_tam_nano",
    BLVNetTAM,
    "bLVNet-TAM at a test size: width 8, (2, 2, 2, 1) blocks, 32 px.",
    width=8,
    blocks=(2, 2, 2, 1),
    num_frames=8,
    img_size=32,
)
