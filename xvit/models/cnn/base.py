"""What the convolutional baselines of supplement Table 1 share (SlowFast, I3D-NL, TEA, bLVNet-TAM):
the interface every xvit model has, weight init, the classifier head, registration by name and
initialisation from ImageNet image weights.

Interface (as the ViTs' ``xvit.models.base.VideoModel``): ``forward(x)`` on ``(B, C, T, H, W)``
videos -> ``(B, num_classes)``; ``forward_features(x)`` the last feature map(s) before pooling;
``forward_head(features)`` global average pooling, dropout, linear; ``get_classifier`` (that
linear) and ``reset_classifier``; ``no_weight_decay`` (nothing beyond the 1-D norms and biases the
optimizer already exempts); ``set_fused_attn`` (the non-local blocks' attention; a no-op
elsewhere); ``describe``. The nets are fully convolutional: ``img_size`` is the size they are
trained and tested at (the clip spec's crop), not a constraint of the weights.

Init (He et al. 2015; Goyal et al. 2017 for the zero-gamma residual BN, as SlowFast and the
non-local code do): Kaiming-normal convolutions (fan-out), unit BatchNorms, the last BN of each
residual branch and of each non-local block at zero gamma (every block starts as an identity),
a normal(0.01) classifier.

ImageNet init (``load_image_weights``): a 2D ResNet state dict (torchvision's names, or timm's
for TEA's Res2Net) is copied by name; a 2D ``k x k`` kernel going into a ``t x k x k`` kernel is
inflated as I3D does (Carreira & Zisserman 2017; Wang et al. 2018 §4): repeated over the t
frames and divided by t, so a clip of identical frames gives the image model's features. An
xvit checkpoint is loaded strictly, as for every model.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import Tensor, nn

from xvit.errors import UserError
from xvit.models.base import VideoModel
from xvit.models.layers import LinearHead
from xvit.models.registry import register_model
from xvit.models.weights import LoadReport, load_pretrained, load_state_dict_reported, read_state_dict

log = logging.getLogger(__name__)


class VideoCNN(nn.Module):
    """Base of the CNN baselines. A family's constructor calls ``super().__init__`` with the shared
    arguments, builds its layers and ``self.head`` (``self.make_head(features)``), then
    ``self.init_weights()``."""

    temporal_exchange = "none"  # how frames exchange information, in words (result tables)
    image_weights = "a torchvision ResNet state dict"  # what load_image_weights takes, in words

    def __init__(
        self, num_frames: int = 8, num_classes: int = 400, img_size: int = 224, drop_rate: float = 0.5
    ) -> None:
        """``drop_rate``: dropout before the classifier (0.5 in SlowFast and the non-local nets)."""
        super().__init__()
        self.num_frames, self.num_classes, self.img_size = num_frames, num_classes, img_size
        self.drop_rate = drop_rate

    def make_head(self, features: int) -> None:
        self.num_features = features
        self.head = LinearHead(features, self.num_classes, self.drop_rate)

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if m is not self and hasattr(m, "init_weights"):
                m.init_weights()  # a block's own init on top (zero-gamma last BN, identity temporal kernels)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) float video -> (B, num_classes) logits."""
        return self.forward_head(self.forward_features(x))

    def forward_features(self, x: Tensor):
        raise NotImplementedError

    def pool(self, features: Tensor) -> Tensor:
        """Global average pooling of a feature map: (B, C, ...) -> (B, C)."""
        return features.flatten(2).mean(-1)

    def forward_head(self, features) -> Tensor:
        """Last feature map (B, C, T', H', W') -> (B, num_classes)."""
        return self.head(self.pool(features))

    def get_classifier(self) -> nn.Module:
        """The final ``Linear(features, num_classes)`` (timm's interface; ``nn.Identity`` at 0 classes)."""
        return self.head.fc

    reset_classifier = VideoModel.reset_classifier  # a fresh classifier for ``num_classes`` (0: features only)

    def no_weight_decay(self) -> set[str]:
        """No tokens or embeddings: the norms and biases (1-D) are exempt in the optimizer already."""
        return set()

    def set_fused_attn(self, enable: bool) -> None:
        """The non-local blocks' attention: ``F.scaled_dot_product_attention`` (True) or eager."""
        for m in self.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = enable

    def describe(self) -> dict[str, str]:
        """What exchanges information across frames, and the head, in words (for result tables)."""
        return {"temporal": self.temporal_exchange, "temporal_embed": "no", "head": "global average pool + linear"}

    def image_key(self, name: str) -> str | None:
        """The name of this model's tensor ``name`` in a 2D ImageNet state dict (None: not in one)."""
        return name

    def load_image_weights(self, path: str | Path, strict: bool | None = None, assign: bool = False) -> LoadReport:
        """Initialise from ``path``: an xvit checkpoint (strict), or 2D ImageNet weights (see the
        module docstring) whose classifier is dropped and whose kernels are inflated."""
        state, metadata = read_state_dict(path)
        if "xvit" in metadata:
            return load_pretrained(self, path, strict=strict, assign=assign)
        return load_inflated(self, state, str(path), self.image_weights)


def inflate(value: Tensor, target: Tensor) -> Tensor | None:
    """A 2D kernel (O, I, k, k) as the 3D kernel ``target`` (O, I, t, k, k): repeated over t, / t."""
    if value.shape == target.shape:
        return value
    if value.ndim == 4 and target.ndim == 5 and value.shape == target.shape[:2] + target.shape[3:]:
        t = target.shape[2]
        return value.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
    return None


def load_inflated(model: VideoCNN, state: dict[str, Tensor], source: str, kind: str) -> LoadReport:
    """Copy every image tensor whose name maps onto one of ``model``'s (``model.image_key``),
    inflating kernels; the classifier (``fc.*``) is never used; reports by name, as every load."""
    report = LoadReport(source=source, kind=f"image weights ({kind}), inflated")
    own = model.state_dict()
    mapped = {model.image_key(n): n for n in own}
    mapped.pop(None, None)
    renamed: dict[str, Tensor] = {}
    inflated = 0
    for key, value in state.items():
        name = mapped.get(key)
        if name is None or key.startswith("fc."):
            report.unexpected.append(key)
            continue
        fitted = inflate(value, own[name])
        if fitted is None:
            report.mismatched.append((name, tuple(value.shape), tuple(own[name].shape)))
            continue
        inflated += fitted.shape != value.shape
        renamed[name] = fitted
    if inflated:
        report.adapted.append(f"{inflated} kernels inflated from 2D to 3D (repeated over time, / t)")
    load_state_dict_reported(model, renamed, report)
    if not report.loaded:
        raise_no_match(source, kind)
    log.info("%s", report.summary())
    return report


def raise_no_match(source: str, kind: str) -> None:
    raise UserError(f"{source} holds no tensor this model can use; pass {kind} (or an xvit checkpoint)")


def register_cnn(name: str, cls: type[VideoCNN], doc: str, **defaults) -> None:
    """Register ``name``: a timm-style entry point building ``cls`` with ``defaults`` (the caller's
    arguments win)."""

    def entry(**kwargs) -> VideoCNN:
        return cls(**{**defaults, **kwargs})

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = doc
    register_model(entry)


def frames_check(x: Tensor, multiple: int, who: str) -> None:
    if x.shape[2] % multiple:
        raise ValueError(f"{who} needs a frame count divisible by {multiple}, got {x.shape[2]}")
