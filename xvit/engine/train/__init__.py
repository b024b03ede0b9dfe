"""The training room: one ``xvit train`` job from its checks to its results.

``job`` (``train(cfg)``: a model and the models it is compared with), ``prepare`` (every check
before a run writes anything), ``trainer`` (one run: ``Trainer.fit``) with ``state`` (where a run
is, saved in and restored from its checkpoints), ``loop`` (``train_one_epoch``), ``optim`` /
``mixup`` (the paper's §4 recipes), ``loaders``, ``resume`` (training state files), ``ledger``
(unreadable videos), ``runlog`` (``metrics.jsonl``, TensorBoard, the log lines), ``preempt``
(stop signals, the snapshot clock). Evaluation during and after training is ``xvit.engine.eval``.
"""
