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


# The other systems of supplement Table 1 at each paper's own input, against the figure that paper
# publishes (GFLOPs counted as multiply-adds by all of them), within 5%; parameters likewise
# where published. (name, frames, input px, options, published GMACs per view, source)
PUBLISHED = [
    ("slowfast_r50_4x16", 32, 256, {}, 36.1, "SlowFast (ICCV 2019) Table 2 / 5a: SlowFast 4x16, R50"),
    ("slowfast_r50_8x8", 32, 256, {}, 65.7, "SlowFast Table 2: SlowFast 8x8, R50, 65.7 x 30 views"),
    ("slowfast_r101_nl_8x8", 32, 256, {}, 116, "SlowFast Table 2 (ICCV): 8x8, R101+NL, 116 x 30"),
    ("slowfast_r101_nl_16x8", 64, 256, {}, 234, "SlowFast Table 2: 16x8, R101+NL, 234 x 30"),
    ("i3d_nl_r101", 32, 224, dict(inflate=False, nonlocal_blocks=False), 34.2, "Non-local nets Table 2e: C2D R101"),
    ("i3d_nl_r50", 128, 256, {}, 282, "SlowFast Table 2: Nonlocal R50 (128 frames), 282 x 30"),
    ("tea_r50", 8, 224, {}, 35, "TEA (CVPR 2020) Tables 1-2: TEA R50 8 frames, 35G"),
    ("tea_r50", 16, 224, {}, 70, "TEA Table 3 (Kinetics): 16 frames, 70G x 30 (ViViT Table 5a: 2.10 TFLOPs)"),
    ("blvnet_tam_r101", 48, 224, {}, 840 / 9, "X-ViT Table 5: bLVNet, 3x3 views, 840 GFLOPs per video"),
    ("vivit_fe_large_patch16_224", 32, 224, {}, 995.3, "ViViT (ICCV 2021) §4.2: ViViT-L/16x2 FE, 32 frames"),
    ("vivit_fe_large_patch16_224", 128, 224, {}, 3980.4, "ViViT §4.2 / Table 5a: FE, 128 frames"),
    ("vivit_fe_base_patch16_224", 32, 224, {}, 284.4, "ViViT Table 2: ViViT-B/16x2 model 2"),
    ("joint_base_patch16_224", 32, 224, {"tubelet": 2}, 455.2, "ViViT Table 2: ViViT-B/16x2 model 1"),
    ("joint_large_patch16_224", 32, 224, {"tubelet": 2}, 1446, "ViViT Table 4: ViViT-L/16x2 model 1, 224 px"),
]
PUBLISHED_PARAMS = [  # (name, options, classes, published parameters, source)
    ("i3d_nl_r101", dict(inflate=False, nonlocal_blocks=False), 400, 43.2e6, "Non-local nets Table 2e: C2D R101"),
    ("slowfast_r101_nl_8x8", {}, 400, 59.9e6, "SlowFast R101+NL, 59.9M (as X3D's and SIFAR's tables cite it)"),
    ("blvnet_tam_r101", {}, 174, 40.2e6, "bLVNet-TAM-101 (SSv2), 40.2M as SIFAR (Fan et al. 2022) Table 4 cites it"),
    ("vivit_fe_base_patch16_224", {}, 400, 115.1e6, "ViViT Table 2: ViViT-B/16x2 model 2"),
]


@pytest.mark.parametrize("name,frames,size,options,published,source", PUBLISHED, ids=[p[5] for p in PUBLISHED])
def test_table1_systems_cost_what_their_papers_publish(name, frames, size, options, published, source):
    assert model_cost(name, frames, size, **options)["gmacs"] == pytest.approx(published, rel=0.05), source


@pytest.mark.parametrize(
    "name,options,classes,published,source", PUBLISHED_PARAMS, ids=[p[4] for p in PUBLISHED_PARAMS]
)
def test_table1_systems_have_their_papers_parameters(name, options, classes, published, source):
    assert model_cost(name, 8, 224, classes, **options)["params"] == pytest.approx(published, rel=0.05), source


def test_i3d_and_non_local_blocks_cost_what_the_non_local_paper_says_relative_to_c2d():
    """Non-local nets Table 2e gives R101 costs relative to its C2D baseline, to one decimal: I3D_3x1x1
    1.5x the FLOPs and 1.2x the parameters, the 5-block NL C2D 1.2x and 1.2x."""
    c2d = model_cost("i3d_nl_r101", 32, 224, inflate=False, nonlocal_blocks=False)
    i3d = model_cost("i3d_nl_r101", 32, 224, nonlocal_blocks=False)
    nl = model_cost("i3d_nl_r101", 32, 224, inflate=False)
    assert round(i3d["gmacs"] / c2d["gmacs"], 1) == 1.5 and round(i3d["params"] / c2d["params"], 1) == 1.2
    assert round(nl["gmacs"] / c2d["gmacs"], 1) == 1.2 and round(nl["params"] / c2d["params"], 1) == 1.2


def test_i3d_nl_r101_at_128_frames_is_5_percent_above_the_359_gflops_slowfast_cites():
    """Not matched within 5%: SlowFast's Table 2 lists "Nonlocal R101" at 359 GFLOPs per view (128
    frames, 256 px). With the NL paper's inflation (every other block, 12 of res4's 23: the 1.5x
    FLOPs and 1.2x parameters of its Table 2e, held above) the count is 378; inflating only 3 of
    res4's first 6 blocks, as ResNet-50's layout would, gives 359 but breaks Table 2e's ratios."""
    assert model_cost("i3d_nl_r101", 128, 256)["gmacs"] == pytest.approx(378.4, rel=0.01)
    assert model_cost("i3d_nl_r101", 128, 256)["gmacs"] == pytest.approx(359, rel=0.06)
