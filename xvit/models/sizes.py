"""Model sizes and registered names, without importing torch (``xvit models`` answers instantly).

The ViT sizes of the paper's §4 (ViT-B/16 and ViT-L/16 backbones, from Dosovitskiy et al.) plus
two small sizes for CPU work: ``nano`` for tests, ``micro`` for the synthetic main job. Every
family is registered once per variant as ``<family>_<size>_patch<patch>_<input>``.
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
# registered families, X-ViT first (the order of tables)
FAMILIES: tuple[str, ...] = ("xvit", "vit", "tsm_vit", "timesformer", "joint")


def variant_name(family: str, size: str, patch: int, img: int) -> str:
    return f"{family}_{size}_patch{patch}_{img}"


def model_names(pattern: str = "*") -> list[str]:
    """Every registered name matching a shell-style ``pattern``, sorted (equals ``list_models``)."""
    names = (variant_name(f, *v) for f in FAMILIES for v in VARIANTS)
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def family_of(name: str) -> str:
    """The family prefix of a registered name (``tsm_vit_base_patch16_224`` -> ``tsm_vit``; "" if none)."""
    return max((f for f in FAMILIES if name.startswith(f + "_")), key=len, default="")


def zoo_order(name: str) -> tuple:
    """Sort key for tables: family (X-ViT first), then size as in ``VARIANTS``."""
    family = family_of(name)
    rest = name[len(family) + 1 :]
    variants = [f"{s}_patch{p}_{i}" for s, p, i in VARIANTS]
    return (FAMILIES.index(family) if family else 99, variants.index(rest) if rest in variants else 99, name)
