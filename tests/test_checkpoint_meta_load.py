"""``load_checkpoint`` builds the model on the meta device and assigns the loaded tensors: the
model it returns equals the one that was saved, for every family and the options that add
tensors, with no tensor left on the meta device."""

from __future__ import annotations

import pytest
import torch

import xvit
from xvit.data.clip import ClipSpec
from xvit.engine.checkpoint import CheckpointMeta, load_checkpoint, save_model
from xvit.models.sizes import is_cnn

CASES = [
    ("xvit_nano_patch8_32", {}),
    ("xvit_nano_patch8_32", {"summary_token": True, "head": "attn", "head_depth": 2}),
    ("xvit_nano_patch8_32", {"head": "avg", "mix": "k", "t_w": 2, "shift_div": 8}),
    ("vit_nano_patch8_32", {}),
    ("tsm_vit_nano_patch8_32", {"head": "attn"}),
    ("timesformer_nano_patch8_32", {}),
    ("joint_nano_patch8_32", {"tubelet": 2}),
    ("vivit_fe_nano_patch8_32", {}),
    ("slowfast_nano", {}),  # the CNNs: BatchNorm running statistics are buffers, loaded too
    ("i3d_nl_nano", {}),
    ("tea_nano", {}),
    ("blvnet_tam_nano", {}),
]


@pytest.mark.parametrize("name,options", CASES)
def test_a_loaded_checkpoint_equals_the_saved_model(tmp_path, name, options):
    torch.manual_seed(0)
    model = xvit.create_model(name, num_frames=4, num_classes=5, **options).eval()
    for p in model.parameters():  # no zero-initialised tensor left at zero
        p.data.normal_(0, 0.05)
    for b in model.buffers():  # nor BatchNorm statistics at their init
        if b.is_floating_point():
            b.uniform_(0.5, 1.5)
    meta = CheckpointMeta(model=model.model_config, clip=ClipSpec(num_frames=4, crop_size=32))
    save_model(tmp_path / "m.safetensors", model, meta)
    loaded, _ = load_checkpoint(tmp_path / "m.safetensors")
    tensors = list(loaded.parameters()) + list(loaded.buffers())
    assert not any(t.is_meta for t in tensors)
    assert all(p.requires_grad for p in loaded.parameters()) and not loaded.training
    x = torch.randn(2, 3, 4, 32, 32)
    # the loaded tensors sit where safetensors put them (not 64-byte aligned), which sends a few of
    # oneDNN's 3D convolutions down another code path: last-bit differences, no others
    atol = 1e-7 if is_cnn(name) else 0.0
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=atol)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
