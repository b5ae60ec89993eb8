"""When each strategy wins: validation and test accuracy of head-only, staged (LP-FT), full fine-tuning and
scratch at several labels per class, several seeds, and where the curves cross.

Budgets are fixed in advance: every stage gets its reference epochs, stretched so that a small training set
still gets at least the gradient steps the profile's own budget (e.g. 20 labels/class) gets. Nothing is
selected per run: each model is trained for its budget, then scored once on validation and once on test.
"""
import dataclasses
import datetime
import math
import time

import torch
from tqdm.auto import tqdm

from ..data import load_data
from ..device import get_device
from ..profiles import get_profile
from . import runs
from .common import check, format_check, machine_info, mean_std, pct, uptime

BUDGETS = dict(digits=(2, 5, 10, 20, 50), flowers102=(1, 2, 5, 10))
LABELS = dict(head_only="head only (cached features)", staged="staged / LP-FT", full_ft="full fine-tune",
              scratch="from scratch (same budget as full FT)")
PAIRS = (("head_only", "full_ft"), ("head_only", "staged"), ("staged", "full_ft"))


def label_budget_settings(profile):
    """Each strategy's lr and reference epochs per stage (scratch: the full fine-tuning budget, equal compute)."""
    e = profile.num_epochs
    return dict(head_only=dict(lr=profile.lr_head, num_epochs=2 * e),
                staged=dict(head_lr=profile.lr_head, lr=profile.lr_finetune, head_epochs=e, num_epochs=e,
                            num_groups=4, factor=0.5),
                full_ft=dict(lr=profile.lr_finetune, num_epochs=e),
                scratch=dict(lr=1e-3, num_epochs=e))


def stretched_epochs(num_epochs, steps_per_epoch, reference_steps_per_epoch):
    """`num_epochs`, or more when an epoch has fewer steps than at the reference budget (same steps at least)."""
    return max(num_epochs, math.ceil(num_epochs * reference_steps_per_epoch / steps_per_epoch))


def stretch(settings, steps_per_epoch, reference_steps_per_epoch):
    """A copy of one strategy's settings with every epoch count stretched (see stretched_epochs)."""
    return {key: stretched_epochs(value, steps_per_epoch, reference_steps_per_epoch) if key.endswith("epochs")
            else value for key, value in settings.items()}


def _run(strategy, setup, s):
    """One strategy's run at one budget: trained for its budget, scored on validation once, then on test once."""
    if strategy == "head_only":
        return runs.run_head_only(setup, **s)
    if strategy == "staged":
        return runs.run_staged(setup, validate=False, **s)
    if strategy == "full_ft":
        return runs.run_full(setup, validate=False, **s)
    return runs.run_scratch(setup, validate=False, **s)


def check_budgets(profile, budgets):
    """Refuse budgets that are not positive ints, repeat, or exceed what the data holds (ValueError, at once)."""
    if not budgets or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in budgets):
        raise ValueError(f"Labels per class must be positive ints, got {budgets!r}.")
    if len(set(budgets)) != len(budgets):
        raise ValueError(f"Labels per class repeat: {budgets!r}.")
    load_data(profile, labels_per_class=max(budgets), seed=0)  # few_label_split says what is possible


def crossing_points(budgets, first, second):
    """Where mean accuracy `second` - `first` changes sign along the budgets (zeros skipped).

    Returns [dict(between=[lo, hi], at=budget interpolated on a log scale, leader=which is ahead after)].
    """
    crossings, previous = [], None
    for budget, a, b in zip(budgets, first, second):
        diff = b - a
        if diff == 0:
            continue
        if previous is not None and (previous[1] > 0) != (diff > 0):
            lo, d_lo = previous
            t = d_lo / (d_lo - diff)
            at = math.exp(math.log(lo) + t * (math.log(budget) - math.log(lo)))
            crossings.append(dict(between=[lo, budget], at=round(at, 2), leader="second" if diff > 0 else "first"))
        previous = (budget, diff)
    return crossings


def describe_crossing(first, second, budgets, diffs, crossings):
    """One sentence: where `second` overtakes `first` (or falls behind), or who leads everywhere."""
    name_a, name_b = LABELS[first], LABELS[second]
    if not crossings:
        if all(d == 0 for d in diffs):
            return f"{name_b} and {name_a} tie at every budget"
        leader = name_b if sum(diffs) > 0 else name_a
        return f"no crossing: {leader} ahead at every budget measured ({budgets[0]}..{budgets[-1]} labels/class)"
    parts = []
    for c in crossings:
        winner, loser = (name_b, name_a) if c["leader"] == "second" else (name_a, name_b)
        parts.append(f"{winner} overtakes {loser} between {c['between'][0]} and {c['between'][1]} labels/class "
                     f"(≈{c['at']:.3g} interpolated)")
    return "; ".join(parts)


def summarize_runs(records, strategies, budgets):
    """{strategy: [{labels_per_class, *_mean, *_std, epochs, steps}]} and per-seed curves for plot_label_budget."""
    summary, curves = {}, dict(test_acc={}, val_acc={})
    for strategy in strategies:
        summary[strategy] = []
        for budget in budgets:
            rows = [r for r in records if r["strategy"] == strategy and r["labels_per_class"] == budget]
            entry = dict(labels_per_class=budget, train_images=rows[0]["train_images"],
                         epochs=rows[0]["epochs"], steps=rows[0]["steps"])
            for key in ("test_acc", "val_acc", "seconds"):
                entry[f"{key}_mean"], entry[f"{key}_std"] = mean_std(r[key] for r in rows)
                if key != "seconds":
                    curves[key].setdefault(strategy, {})[str(budget)] = [r[key] for r in rows]
            summary[strategy].append(entry)
    return summary, curves


def crossings_block(summary, budgets, metric="test_acc"):
    """Crossing points of each strategy pair's mean `metric`, with the differences at every budget."""
    block = {}
    for first, second in PAIRS:
        if first not in summary or second not in summary:
            continue
        a = [e[f"{metric}_mean"] for e in summary[first]]
        b = [e[f"{metric}_mean"] for e in summary[second]]
        diffs = [round(100 * (y - x), 2) for x, y in zip(a, b)]
        found = crossing_points(budgets, a, b)
        block[f"{second}_vs_{first}"] = dict(
            points_by_budget=dict(zip(map(str, budgets), diffs)), crossings=found,
            statement=describe_crossing(first, second, budgets, diffs, found))
    return block


def phenomena(summary, budgets):
    """What the course's recipe rests on: the crossing points, and who wins at the fewest and the most labels."""
    out = {}
    for name, block in crossings_block(summary, budgets).items():
        out[f"crossing_{name}"] = dict(check(None, None), statement=block["statement"],
                                       crossings=block["crossings"])
    if "head_only" in summary and "full_ft" in summary:
        for index, where in ((0, "fewest"), (-1, "most")):
            diff = 100 * (summary["full_ft"][index]["test_acc_mean"] - summary["head_only"][index]["test_acc_mean"])
            out[f"full_ft_minus_head_only_points_at_{where}_labels"] = dict(
                check(diff, None), note=f"{budgets[index]} labels/class")
    return out


def run_label_budget(profile=None, seeds=(0,), device=None, budgets=None, strategies=None, settings=None,
                     load=load_data):
    """Train every strategy at every budget and seed; return the JSON-ready result with crossings and curves."""
    profile = get_profile(profile) if profile is None or isinstance(profile, str) else profile
    device = torch.device(device or get_device())
    budgets = sorted(budgets or BUDGETS[profile.dataset])
    settings = settings or label_budget_settings(profile)
    strategies = list(strategies or settings)
    seeds = list(seeds)
    machine, start_uptime, started = machine_info(device), uptime(), time.perf_counter()
    records, eval_features, first_data = [], {}, None
    bar = tqdm(total=len(budgets) * len(seeds) * len(strategies), desc="label budget", leave=False)
    for budget in budgets:
        for seed in seeds:
            data = load(profile, labels_per_class=budget, seed=seed)
            first_data = first_data or data
            same_split = all(torch.equal(getattr(data, k), getattr(first_data, k))
                             for k in ("val_labels", "test_labels", "val_images", "test_images"))
            setup = runs.make_setup(profile, data, seed, device, eval_features if same_split else None)
            reference_steps = math.ceil(profile.labels_per_class * data.num_classes / profile.batch_size)
            for strategy in strategies:
                bar.set_postfix_str(f"{budget}/class seed {seed} {strategy}")
                s = stretch(settings[strategy], len(setup.train_loader), reference_steps)
                record = _run(strategy, setup, s)
                records.append(dict(strategy=strategy, labels_per_class=budget, seed=seed,
                                    train_images=setup.train_images, **record))
                bar.update()
    bar.close()
    summary, curves = summarize_runs(records, strategies, budgets)
    return dict(kind="label_budget", profile=profile.name, arch=profile.arch, dataset=profile.dataset,
                profile_settings=dataclasses.asdict(profile), seeds=seeds, budgets=budgets, strategies=strategies,
                labels={s: LABELS[s] for s in strategies}, settings=settings,
                date=datetime.date.today().isoformat(), machine=machine, uptime_start=start_uptime,
                uptime_end=uptime(), data=dict(val_images=len(first_data.val_labels),
                                               test_images=len(first_data.test_labels),
                                               num_classes=first_data.num_classes),
                total_seconds=time.perf_counter() - started, runs=records, summary=summary, curves=curves,
                crossings=dict(test_acc=crossings_block(summary, budgets, "test_acc"),
                               val_acc=crossings_block(summary, budgets, "val_acc")),
                phenomena=phenomena(summary, budgets))


def format_label_budget(result):
    """The label-budget result as a table (test accuracy, mean ± std over seeds) and the crossing statements."""
    m, strategies = result["machine"], result["strategies"]
    lines = [f"label budget, profile {result['profile']} ({result['arch']} on {result['dataset']}, "
             f"{result['data']['val_images']} val / {result['data']['test_images']} test images), seeds "
             f"{result['seeds']}, {m['device']} ({m['torch_threads']} torch threads), load "
             f"{result['uptime_start']['load_average']} at start, {result['uptime_end']['load_average']} at end, "
             f"{result['total_seconds']:.0f} s in all",
             "test accuracy, mean ± std over seeds (training seconds, epochs in all stages):",
             f"{'labels/class':>12s} " + " ".join(f"{result['labels'][s]:>30s}" for s in strategies)]
    for index, budget in enumerate(result["budgets"]):
        cells = []
        for s in strategies:
            e = result["summary"][s][index]
            cells.append(f"{pct(e['test_acc_mean'], e['test_acc_std'])} ({e['seconds_mean']:.1f} s, {e['epochs']})")
        lines.append(f"{budget:>12d} " + " ".join(f"{c:>30s}" for c in cells))
    for name, item in result["phenomena"].items():
        lines.append(format_check(name, item) + (f": {item['statement']}" if "statement" in item else ""))
    return "\n".join(lines)

