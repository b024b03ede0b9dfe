"""The evaluation room: multi-view testing of a model and what it reports.

``evaluate`` (a test set scored view by view, ``evaluate_checkpoint`` for ``xvit eval``),
``metrics`` (top-k, per class, pair order accuracy; pure functions), ``predict`` (video files,
``xvit predict``), ``timeline`` / ``timeline_plot`` (scores over a long video), ``prefetch``
(decoding ahead in a thread), ``reports`` (what ``xvit eval`` writes), ``results`` /
``summary`` (a training run's ``results.json``, the side-by-side ``summary.md`` of a job).
It imports nothing from ``xvit.engine.train`` or ``xvit.engine.deploy``.
"""
