"""``xvit train`` under torchrun with a fault injected into rank 1 (``XVIT_TEST_FAULT``), for
``tests/test_train_ddp.py`` and ``tests/test_train_ddp_preempt.py``. The fault is injected here, by
wrapping ``xvit.engine.train.loop._optimizer_step`` in this process only:

- ``hang``: rank 1 hangs after its second optimizer step;
- ``kill``: rank 1 SIGKILLs itself after its second optimizer step;
- ``term_once``: rank 1 sends itself SIGTERM after its fourth optimizer step (rank 0 gets no
  signal), in torchrun's first attempt only;
- ``kill_once``: rank 1 SIGKILLs itself after its third optimizer step in torchrun's first attempt
  only; in a restarted attempt rank 0 starts 2 s late, so that rank 1 would read what the dead
  group left in torchrun's store before rank 0 replaces it.
"""

import os
import signal
import sys
import time

from xvit.cli import main
from xvit.engine.train import loop

FAULT = os.environ["XVIT_TEST_FAULT"]
RANK = os.environ.get("RANK")
ATTEMPT = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
AFTER = {"hang": 2, "kill": 2, "term_once": 4, "kill_once": 3}[FAULT]
_real = loop._optimizer_step
_calls = 0


def _faulty_step(*args, **kwargs):
    global _calls
    out = _real(*args, **kwargs)
    _calls += 1
    if RANK == "1" and _calls == AFTER and (not FAULT.endswith("_once") or ATTEMPT == 0):
        print(f"ddp_fault: rank 1 {FAULT}s after step {AFTER} at t={time.time():.3f}", file=sys.stderr, flush=True)
        if FAULT == "term_once":
            os.kill(os.getpid(), signal.SIGTERM)
        elif FAULT == "hang":
            time.sleep(3600)
        else:
            os.kill(os.getpid(), signal.SIGKILL)
    return out


if FAULT == "kill_once" and ATTEMPT > 0 and RANK == "0":
    time.sleep(2.0)
loop._optimizer_step = _faulty_step
sys.exit(main(["train", *sys.argv[1:]]))
