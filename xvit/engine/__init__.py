"""Training, evaluation and deployment (library only; the commands are in ``xvit.cli``).

Three rooms, each a job, on a floor they share:

- ``train/``: a training run, from the checks before it writes anything to its ``results.json``
  (``job.train(cfg)``, ``Trainer.fit``, ``train_one_epoch``, optimiser, mixup, loaders, resume,
  the skip ledger, stop signals);
- ``eval/``: multi-view testing and what it reports (``evaluate``, metrics, ``predict``, timelines
  over long videos, ``results.json`` / ``summary.md``, eval reports);
- ``deploy/``: a checkpoint as an ONNX / pt2 / int8 file and onnxruntime as a model.

The floor: ``config`` (YAML configs with overrides), ``checkpoint`` (weights + ``CheckpointMeta``,
``load_model``), ``snapshot`` (a checkpoint as one atomic unit, atomic writes), ``distributed``
(``torchrun`` DDP), ``runtime`` (device, dtypes, seeds, threads), ``timing`` (a command's start
and phases). Imports run ``train -> eval -> floor`` and ``deploy -> eval -> floor``; the floor
imports no room (``tests/test_imports.py``).
"""
