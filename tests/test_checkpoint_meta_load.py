"""``load_checkpoint`` builds the model on the meta device and assigns the loaded tensors: the
model it returns equals the one that was saved, for every family and the options that add
tensors, with no tensor left on the meta device."""

from __future__ import annotations

import pytest
import torch

import xvit
from xvit.data.clip import ClipSpec
from xvit.engine.checkpoint import CheckpointMeta, load_checkpoint, save_model

CASES = [
    ("xvit_nano_patch8_32", {}),
    ("xvit_nano_patch8_32", {"summary_token": True, "head": "attn", "head_depth": 2}),
    ("xvit_nano_patch8_32", {"head": "avg", "mix": "k", "t_w": 2, "shift_div": 8}),
    ("vit_nano_patch8_32", {}),
    ("tsm_vit_nano_patch8_32", {"head": "attn"}),
    ("timesformer_nano_patch8_32", {}),
    ("joint_nano_patch8_32", {"tubelet": 2}),
]


@pytest.mark.parametrize("name,options", CASES)
def test_a_loaded_checkpoint_equals_the_saved_model(tmp_path, name, options):
    torch.manual_seed(0)
    model = xvit.create_model(name, num_frames=4, num_classes=5, **options).eval()
    for p in model.parameters():  # no zero-initialised tensor left at zero
        p.data.normal_(0, 0.05)
    meta = CheckpointMeta(model=model.model_config, clip=ClipSpec(num_frames=4, crop_size=32))
    save_model(tmp_path / "m.safetensors", model, meta)
    loaded, _ = load_checkpoint(tmp_path / "m.safetensors")
    tensors = list(loaded.parameters()) + list(loaded.buffers())
    assert not any(t.is_meta for t in tensors)
    assert all(p.requires_grad for p in loaded.parameters()) and not loaded.training
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
