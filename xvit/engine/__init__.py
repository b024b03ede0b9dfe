"""Training and evaluation (library only; the commands are in ``xvit.cli``).

``config`` (YAML configs with overrides), ``prepare`` (every check before a run writes anything),
``trainer`` (one run: ``Trainer.fit``), ``train`` (the job: a model and the models it is compared
with), ``loop`` (``train_one_epoch``), ``optim`` / ``mixup`` (the paper's §4 recipes),
``evaluate`` / ``metrics`` / ``reports`` (multi-view testing), ``predict`` (video files),
``checkpoint`` (weights + ``CheckpointMeta``, ``load_model``), ``resume`` (training state),
``distributed`` (``torchrun`` DDP), ``preempt`` (stop signals, the snapshot clock), ``runtime``
(device, dtypes, seeds, threads).
"""
