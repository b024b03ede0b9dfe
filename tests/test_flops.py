"""Multiply-adds per view (multiply-adds, the paper's "GFLOPs", Table 6), against the published counts."""

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from xvit.models.flops import model_cost


def image_vit_b16_gmacs() -> float:
    with torch.device("meta"):
        vit = timm.create_model("vit_base_patch16_224", pretrained=False)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            vit(torch.empty(1, 3, 224, 224))
    return counter.get_total_flops() / 2 / 1e9


def test_xvit_costs_eight_image_vits():
    image = image_vit_b16_gmacs()
    assert image == pytest.approx(17.56, rel=0.01)
    xvit8 = model_cost("xvit_base_patch16_224", 8)["gmacs"]
    assert xvit8 == pytest.approx(8 * image, rel=0.02)  # the paper: 425 GFLOPs for 3 views
    assert 3 * xvit8 == pytest.approx(425, rel=0.02)
    assert model_cost("xvit_base_patch16_224", 16)["gmacs"] == pytest.approx(2 * xvit8, rel=0.01)


@pytest.mark.parametrize(
    "name,published",
    [
        ("timesformer_base_patch16_224", 196),
        ("joint_base_patch16_224", 180),
        ("vit_base_patch16_224", 141),
        ("tsm_vit_base_patch16_224", 141),
    ],
)
def test_baselines_close_to_published_counts(name, published):
    assert model_cost(name, 8)["gmacs"] == pytest.approx(published, rel=0.02)


def test_params_of_base_models():
    assert model_cost("vit_base_patch16_224", 8)["params"] == pytest.approx(86.1e6, rel=0.01)
    assert (
        model_cost("xvit_base_patch16_224", 8)["params"] > model_cost("vit_base_patch16_224", 8)["params"]
    )  # temporal head
