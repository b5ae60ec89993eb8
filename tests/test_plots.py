"""Unit tests for finetune_helpers.plots: each plot draws what it is given (Agg backend, no display)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402

from finetune_helpers.plots import (plot_drift, plot_histories, plot_lr_finder, plot_lr_sweep,  # noqa: E402
                                    plot_strategies)
from finetune_helpers.training import History  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _history(losses, accs):
    return History(dict(epoch=i + 1, train_loss=loss, train_acc=0.0, val_acc=acc, seconds=float(i))
                   for i, (loss, acc) in enumerate(zip(losses, accs)))


def _legend_labels(ax):
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def test_plot_histories():
    histories = {"head only": _history([1.0, 0.5, 0.25], [0.5, 0.7, 0.9]),
                 "full": _history([2.0, 1.0, 0.8, 0.4], [0.3, 0.5, 0.6, 0.95])}
    fig = plot_histories(histories, title="two runs")
    assert isinstance(fig, matplotlib.figure.Figure)
    ax_loss, ax_acc = fig.axes
    assert len(ax_loss.lines) == len(ax_acc.lines) == 2
    assert list(ax_loss.lines[0].get_xdata()) == [1, 2, 3]
    assert list(ax_loss.lines[1].get_ydata()) == [2.0, 1.0, 0.8, 0.4]
    assert list(ax_acc.lines[1].get_ydata()) == [0.3, 0.5, 0.6, 0.95]
    assert ax_loss.get_yscale() == "log" and ax_acc.get_ylim() == (0, 1)
    assert _legend_labels(ax_acc) == ["head only", "full"]
    assert fig._suptitle.get_text() == "two runs"
    fig.canvas.draw()


def test_plot_histories_without_title():
    fig = plot_histories({"a": _history([1.0], [0.5])})
    assert fig._suptitle is None and len(fig.axes[0].lines) == 1


def test_plot_lr_sweep_sorts_lrs_and_marks_chance():
    curves = {"head": {1e-2: 0.8, 1e-4: 0.2, 1e-3: 0.6}, "full": {1e-3: 0.9, 1e-2: 0.1}}
    ax = plot_lr_sweep(curves, chance=0.1)
    lines = ax.lines
    assert len(lines) == 3  # two curves + the chance line
    assert list(lines[0].get_xdata()) == [1e-4, 1e-3, 1e-2]
    assert list(lines[0].get_ydata()) == [0.2, 0.6, 0.8]
    assert list(lines[1].get_ydata()) == [0.9, 0.1]
    assert list(lines[2].get_ydata()) == [0.1, 0.1]
    assert ax.get_xscale() == "log" and ax.get_ylim() == (0, 1)
    assert _legend_labels(ax) == ["head", "full", "chance"]
    ax.figure.canvas.draw()


def test_plot_lr_sweep_on_given_axes_without_chance():
    fig, axes = plt.subplots(1, 2)
    ax = plot_lr_sweep({"x": {0.1: 0.5}}, ax=axes[1])
    assert ax is axes[1] and len(ax.lines) == 1 and len(axes[0].lines) == 0


def test_plot_lr_finder():
    lrs, losses = [1e-5, 1e-4, 1e-3, 1e-2], [2.0, 1.5, 0.9, 4.0]
    ax = plot_lr_finder(lrs, losses, suggestion=1e-4)
    assert len(ax.lines) == 2
    assert list(ax.lines[0].get_xdata()) == lrs and list(ax.lines[0].get_ydata()) == losses
    assert list(ax.lines[1].get_xdata()) == [1e-4, 1e-4]
    assert _legend_labels(ax) == ["suggested lr 1.0e-04"]
    assert ax.get_xscale() == "log"
    plain = plot_lr_finder(lrs, losses)
    assert len(plain.lines) == 1 and plain.get_legend() is None


def test_plot_drift():
    drifts = {"lr 1e-4": {"stem": 0.003, "layer1": 0.004, "fc": 0.5},
              "lr 1e-2": {"stem": 0.2, "layer1": 0.25, "fc": 2.0}}
    ax = plot_drift(drifts)
    assert len(ax.lines) == 2
    assert list(ax.lines[1].get_ydata()) == [0.2, 0.25, 2.0]
    assert len(ax.lines[0].get_xdata()) == 3
    ax.figure.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["stem", "layer1", "fc"]
    assert ax.get_yscale() == "log" and _legend_labels(ax) == list(drifts)


def test_plot_strategies():
    results = {"head on cached features": (0.5, 0.9), "full fine-tune": (20.0, 0.94), "scratch": (21.0, 0.75)}
    ax = plot_strategies(results)
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(points) == 3
    assert np.allclose(np.vstack([c.get_offsets() for c in points]), [[0.5, 0.9], [20.0, 0.94], [21.0, 0.75]])
    assert [t.get_text() for t in ax.texts] == list(results)
    assert ax.get_xscale() == "log" and ax.get_ylim() == (0, 1.05)
    ax.figure.canvas.draw()
