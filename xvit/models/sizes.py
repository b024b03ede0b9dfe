"""Model sizes and registered names, without importing torch (``xvit models`` answers instantly).

The ViT sizes of the paper's §4 (ViT-B/16 and ViT-L/16 backbones, from Dosovitskiy et al.) plus
two small sizes for CPU work: ``nano`` for tests, ``micro`` for the synthetic main job. Every
transformer family is registered once per variant as ``<family>_<size>_patch<patch>_<input>``.
The convolutional systems of supplement Table 1 are registered under their papers' names (one
per published configuration, plus a ``_nano`` test size), listed in ``CNN_MODELS``.
"""

from __future__ import annotations

import fnmatch

SIZES: dict[str, dict] = {
    "nano": dict(embed_dim=32, depth=2, num_heads=2),
    "micro": dict(embed_dim=96, depth=4, num_heads=4),
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
    "large": dict(embed_dim=1024, depth=24, num_heads=16),
}
# (size, patch, input) of each registered variant
VARIANTS: list[tuple[str, int, int]] = [
    ("nano", 8, 32),
    ("micro", 8, 64),
    ("tiny", 16, 224),
    ("small", 16, 224),
    ("base", 16, 224),
    ("large", 16, 224),
    ("base", 32, 224),
]
# registered transformer families, X-ViT first (the order of tables)
VIT_FAMILIES: tuple[str, ...] = ("xvit", "vit", "tsm_vit", "timesformer", "joint", "vivit_fe")
# the convolutional families and their registered names, in table order
CNN_MODELS: dict[str, tuple[str, ...]] = {
    "slowfast": (
        "slowfast_r50_4x16",
        "slowfast_r50_8x8",
        "slowfast_r101_nl_8x8",
        "slowfast_r101_nl_16x8",
        "slowfast_nano",
    ),
    "i3d_nl": ("i3d_nl_r50", "i3d_nl_r101", "i3d_nl_nano"),
    "tea": ("tea_r50", "tea_nano"),
    "blvnet_tam": ("blvnet_tam_r50", "blvnet_tam_r101", "blvnet_tam_nano"),
}
FAMILIES: tuple[str, ...] = VIT_FAMILIES + tuple(CNN_MODELS)


def variant_name(family: str, size: str, patch: int, img: int) -> str:
    return f"{family}_{size}_patch{patch}_{img}"


def model_names(pattern: str = "*") -> list[str]:
    """Every registered name matching a shell-style ``pattern``, sorted (equals ``list_models``)."""
    names = [variant_name(f, *v) for f in VIT_FAMILIES for v in VARIANTS]
    names += [n for family in CNN_MODELS.values() for n in family]
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def is_cnn(name: str) -> bool:
    """A convolutional model (no patches, any input size; ``CNN_MODELS``)."""
    return family_of(name) in CNN_MODELS


def family_of(name: str) -> str:
    """The family prefix of a registered name (``tsm_vit_base_patch16_224`` -> ``tsm_vit``; "" if none)."""
    return max((f for f in FAMILIES if name.startswith(f + "_")), key=len, default="")


def zoo_order(name: str) -> tuple:
    """Sort key for tables: family (X-ViT first, the CNNs last), then size as in ``VARIANTS``
    (a CNN: its place in ``CNN_MODELS``)."""
    family = family_of(name)
    rest = name[len(family) + 1 :]
    variants = [f"{s}_patch{p}_{i}" for s, p, i in VARIANTS]
    if family in CNN_MODELS:
        variants = [n[len(family) + 1 :] for n in CNN_MODELS[family]]
    return (FAMILIES.index(family) if family else 99, variants.index(rest) if rest in variants else 99, name)
