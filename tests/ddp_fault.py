"""``xvit train`` under torchrun whose rank 1 hangs or SIGKILLs itself after its second optimizer
step (``XVIT_TEST_FAULT=hang|kill``), for ``tests/test_train_ddp.py``. The fault is injected here,
by wrapping ``xvit.engine.loop._optimizer_step`` in this process only."""

import os
import signal
import sys
import time

from xvit.cli import main
from xvit.engine import loop

FAULT = os.environ["XVIT_TEST_FAULT"]
_real = loop._optimizer_step
_calls = 0


def _faulty_step(*args, **kwargs):
    global _calls
    out = _real(*args, **kwargs)
    _calls += 1
    if os.environ.get("RANK") == "1" and _calls == 2:
        print(f"ddp_fault: rank 1 {FAULT}s after step 2 at t={time.time():.3f}", file=sys.stderr, flush=True)
        if FAULT == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(3600)
    return out


loop._optimizer_step = _faulty_step
sys.exit(main(["train", *sys.argv[1:]]))
