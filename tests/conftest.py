"""Test-wide settings: tiny models run fastest on one thread, and subprocesses (DDP workers,
CLI runs) inherit the setting instead of oversubscribing the machine's cores. The ``decoder``
fixture runs a test once per video decoder."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)

import pytest  # noqa: E402

from xvit.data.video import DECODERS, check_decoder  # noqa: E402
from xvit.errors import UserError  # noqa: E402


def require_decoder(name: str) -> str:
    """``name`` if it can run here. Where torchcodec (or FFmpeg) is missing its tests are skipped
    on a developer's machine, but fail in CI (``CI`` set), which must test both decoders."""
    try:
        return check_decoder(name)
    except UserError as err:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test the {name} decoder: {err}")
        pytest.skip(str(err))


@pytest.fixture(params=DECODERS)
def decoder(request) -> str:
    """Each video decoder in turn (``pyav``, ``torchcodec``)."""
    return require_decoder(request.param)
