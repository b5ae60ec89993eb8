"""Plots the notebooks show: training curves, LR sweeps, LR finder, weight drift, strategies, label budgets."""
import statistics

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator


def plot_histories(histories, title=None):
    """Train loss and validation accuracy per epoch for {label: History} side by side (02, 03, 04)."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.5))
    for label, history in histories.items():
        ax_loss.plot(history.column("epoch"), history.column("train_loss"), marker=".", label=label)
        ax_acc.plot(history.column("epoch"), history.column("val_acc"), marker=".", label=label)
    ax_loss.set(xlabel="epoch", ylabel="train loss", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax_acc.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_lr_sweep(curves, chance=None, ax=None):
    """Final validation accuracy vs learning rate (log x) for {label: {lr: accuracy}} (04_learning_rates)."""
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    for label, accs in curves.items():
        lrs = sorted(accs)
        ax.plot(lrs, [accs[lr] for lr in lrs], marker="o", label=label)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", label="chance")
    ax.set(xscale="log", xlabel="learning rate", ylabel="validation accuracy", ylim=(0, 1))
    ax.legend(fontsize="small")
    return ax


def plot_lr_finder(lrs, losses, suggestion=None, ax=None):
    """Loss vs learning rate from an LR range test, with the suggested LR marked (04_learning_rates)."""
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    ax.plot(lrs, losses)
    if suggestion is not None:
        ax.axvline(suggestion, color="red", linestyle="--", label=f"suggested lr {suggestion:.1e}")
        ax.legend()
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss")
    return ax


def plot_drift(drifts, ax=None):
    """Relative weight change per layer group (input → output) for {label: {group: drift}} (03, 04)."""
    ax = ax or plt.subplots(figsize=(8, 3.5))[1]
    for label, drift in drifts.items():
        ax.plot(list(drift), list(drift.values()), marker="o", label=label)
    ax.set(yscale="log", xlabel="layer group (input → output)", ylabel="‖W − W₀‖ / ‖W₀‖")
    ax.tick_params(axis="x", rotation=45)
    ax.legend(fontsize="small")
    return ax


def plot_strategies(results, ax=None, ylabel="test accuracy"):
    """Accuracy vs training seconds, one labelled point per strategy: {name: (seconds, accuracy)} (02, 04)."""
    ax = ax or plt.subplots(figsize=(7, 4))[1]
    for name, (seconds, acc) in results.items():
        ax.scatter(seconds, acc, s=40)
        ax.annotate(name, (seconds, acc), textcoords="offset points", xytext=(5, 5), fontsize="small")
    ax.set(xscale="log", xlabel="training seconds (log)", ylabel=ylabel, ylim=(0, 1.05))
    ax.grid(alpha=0.3)
    return ax


def plot_label_budget(curves, ax=None, ylabel="test accuracy", chance=None):
    """Mean ± std accuracy vs labels per class (log x) for {label: {labels_per_class: [accuracy per seed]}}."""
    ax = ax or plt.subplots(figsize=(7, 4))[1]
    for label, by_budget in curves.items():
        budgets = sorted(by_budget, key=float)  # JSON keys are strings
        values = [by_budget[b] for b in budgets]
        means = [statistics.fmean(v) for v in values]
        stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]  # sample std over seeds
        ax.errorbar([float(b) for b in budgets], means, yerr=stds, marker="o", capsize=3, label=label)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", label="chance")
    ax.set(xscale="log", xlabel="labels per class (log)", ylabel=ylabel, ylim=(0, 1.05))
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return ax
