"""The picture of a timeline: class probabilities over time, with thumbnails along the time axis."""

from __future__ import annotations

from pathlib import Path

from xvit.engine.eval.timeline import Timeline

LINES = 5  # classes drawn: the highest peaks over the video


def plot_timeline(timeline: Timeline, path: str | Path, lines: int = LINES, title: str | None = None) -> Path:
    """Write a PNG: one line per top class (by its highest window probability) against the window
    centres in seconds, and the video's thumbnails in a strip under the time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plan, scores = timeline.plan, timeline.scores  # (windows, K)
    centres = [sum(plan.seconds(w)) / 2 for w in range(len(plan.starts))]
    top = scores.max(dim=0).values.argsort(descending=True)[: min(lines, scores.shape[1])].tolist()
    duration = plan.num_frames / plan.fps
    strip = bool(timeline.thumbnails)
    fig, axes = plt.subplots(
        2 if strip else 1,
        1,
        figsize=(11, 5.2 if strip else 4),
        sharex=True,
        gridspec_kw={"height_ratios": [3, 1]} if strip else None,
        squeeze=False,
    )
    ax = axes[0, 0]
    for c in top:
        ax.plot(centres, scores[:, c].tolist(), marker="." if len(centres) < 60 else None, label=timeline.names[c])
    ax.set_ylabel("probability (mean over crops)")
    ax.set_ylim(0, 1)
    ax.set_xlim(0, duration)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8, ncol=min(len(top), 3))
    window_s = plan.length / plan.fps
    ax.set_title(title or f"{Path(timeline.path).name}: {len(centres)} windows of {window_s:.2f} s")
    if strip:
        thumbs = axes[1, 0]
        h, w = timeline.thumbnails[0][1].shape[:2]
        seconds_per_inch = duration / 9.5  # the axes are ~9.5 of the figure's 11 inches wide
        half = min(0.5 * 1.25 * w / h * seconds_per_inch, 0.5 * 0.95 * duration / len(timeline.thumbnails))
        for t, image in timeline.thumbnails:
            thumbs.imshow(image, extent=(t - half, t + half, 0, 1), aspect="auto")
        thumbs.set_ylim(0, 1)
        thumbs.set_xlim(0, duration)
        thumbs.set_yticks([])
        thumbs.set_xlabel("time (s)")
    else:
        ax.set_xlabel("time (s)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
