"""Loss-curve PNGs: one per run (train and val loss), one per sweep (every job's val loss), and
val loss against training time (:func:`plot_against_time`, for comparing recipes).

Figures are drawn on matplotlib's Agg canvas directly, without pyplot, so plotting never opens a
window, never needs a display, and leaves the user's matplotlib backend alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from nanogpt.files import write_atomically

Curve = Sequence[tuple[int, float]]  # (step, value) points


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    return write_atomically(path, lambda f: fig.savefig(f, format="png"))


def plot_run(history: Mapping[str, Curve], path: str | os.PathLike, title: str = "") -> Path:
    """Train and val loss against the optimizer step, as a PNG at ``path``."""
    fig = _figure()
    ax = fig.add_subplot()
    styles = {"train/loss": {"alpha": 0.6, "linewidth": 1}, "val/loss": {"marker": "o", "linewidth": 2}}
    for key, style in styles.items():
        points = history.get(key) or []
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, label=key, **style)
    ax.set(xlabel="step", ylabel="cross-entropy (nats/token)", title=title)
    ax.grid(alpha=0.3)
    if ax.has_data():
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no losses logged", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


def plot_sweep(curves: Mapping[str, Curve], path: str | os.PathLike, title: str = "") -> Path:
    """Every job's val loss against the step, one labelled line each, as a PNG at ``path``."""
    fig = _figure()
    ax = fig.add_subplot()
    for label, points in curves.items():
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, marker="o", markersize=3, label=_short(label))
    ax.set(xlabel="step", ylabel="val/loss (nats/token)", title=title)
    ax.grid(alpha=0.3)
    if ax.has_data():
        # many jobs: a smaller legend beside the axes rather than over the curves
        ax.legend(
            fontsize="small" if len(curves) <= 12 else "x-small", loc="upper left", bbox_to_anchor=(1, 1)
        )
    else:
        ax.text(0.5, 0.5, "no job logged a val/loss", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


def plot_against_time(
    curves: Mapping[str, Sequence[Curve]], path: str | os.PathLike, title: str = ""
) -> Path:
    """Val loss against seconds of training, a colour per label, as a PNG at ``path``.

    Args:
        curves: for each label (a recipe, a configuration), its runs' ``(seconds, val/loss)`` points.

    A label with one run is that run's line. A label with several (its seeds) has each run as a thin
    line and their mean as a thick one with markers: the mean of the k-th validation's time and loss
    over the runs that reached it (seeds of one configuration validate at the same steps).
    """
    fig = _figure()
    ax = fig.add_subplot()
    for i, (label, runs) in enumerate(curves.items()):
        runs = [r for r in runs if r]
        # ten colours, then the same ten dashed, then dotted: eleven ablations stay apart
        style = {"color": f"C{i % 10}", "linestyle": ("-", "--", ":")[i // 10 % 3]}
        if len(runs) > 1:
            for points in runs:
                ax.plot(*zip(*points, strict=True), linewidth=0.8, alpha=0.35, **style)
        mean = _mean_curve(runs)
        if mean:
            points = zip(*mean, strict=True)
            ax.plot(*points, marker="o", markersize=3, linewidth=2, label=_short(label), **style)
    ax.set(xlabel="seconds of training (validations included)", ylabel="val/loss (nats/token)", title=title)
    ax.grid(alpha=0.3)
    if ax.has_data():
        ax.legend(
            fontsize="small" if len(curves) <= 12 else "x-small", loc="upper left", bbox_to_anchor=(1, 1)
        )
    else:
        ax.text(
            0.5, 0.5, "no run logged val/loss with its time", ha="center", va="center", transform=ax.transAxes
        )
    return _save(fig, path)


def _short(label: str, most: int = 48) -> str:
    """``label`` cut to ``most`` characters: an Optuna trial's overrides, beside the axes, would leave
    them no room (report.md has every label whole)."""
    return label if len(label) <= most else label[: most - 1] + "…"


def _mean_curve(runs: Sequence[Sequence[tuple[float, float]]]) -> list[tuple[float, float]]:
    """Point by point mean of ``runs``, as far as any of them goes; a single run is itself."""
    points = []
    for k in range(max((len(r) for r in runs), default=0)):
        reached = [r[k] for r in runs if len(r) > k]
        points.append((sum(t for t, _ in reached) / len(reached), sum(v for _, v in reached) / len(reached)))
    return points
