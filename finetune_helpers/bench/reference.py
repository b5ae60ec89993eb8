"""The course's reference experiments, every seed: scratch (early-stopped and at equal compute), head-only cached
and uncached, full fine-tuning at three lrs (1e-3 with and without warm-up + cosine), staged (LP-FT), BitFit
and LoRA at two ranks. Each run validates on the validation split; the test set is read once per final model.
"""
import dataclasses
import datetime
import statistics
import time

import torch
from tqdm.auto import tqdm

from ..data import load_data
from ..device import get_device
from ..profiles import get_profile
from . import runs
from .common import check, format_check, machine_info, mean_std, params_text, pct, uptime


def reference_settings(profile):
    """Learning rates and epochs of every reference experiment for a profile (fixed in advance, none tuned on test)."""
    e = profile.num_epochs
    return dict(
        scratch=dict(lr=1e-3, num_epochs=6 * e, patience=e),  # cap 6x the fine-tuning budget, stop after e flat
        scratch_equal_epochs=dict(lr=1e-3, num_epochs=e),     # same network, epochs and steps as full_ft_small_lr
        head_only=dict(lr=profile.lr_head, num_epochs=2 * e),
        head_only_uncached=dict(lr=profile.lr_head, num_epochs=2 * e),
        full_ft_small_lr=dict(lr=profile.lr_finetune, num_epochs=e),
        full_ft_mid_lr=dict(lr=1e-3, num_epochs=e),
        full_ft_mid_lr_warmup=dict(lr=1e-3, num_epochs=e, warmup=0.2),
        full_ft_large_lr=dict(lr=1e-2, num_epochs=e),
        staged=dict(head_lr=profile.lr_head, lr=profile.lr_finetune, head_epochs=e, num_epochs=e, num_groups=4,
                    factor=0.5),
        bitfit=dict(method="bitfit", lr=1e-3, num_epochs=e),
        lora_r4=dict(method="lora", r=4, lr=1e-3, num_epochs=e),
        lora_r16=dict(method="lora", r=16, lr=1e-3, num_epochs=e),
    )


RUNNERS = dict(scratch=runs.run_scratch, scratch_equal_epochs=runs.run_scratch, head_only=runs.run_head_only,
               head_only_uncached=runs.run_head_uncached, full_ft_small_lr=runs.run_full,
               full_ft_mid_lr=runs.run_full, full_ft_mid_lr_warmup=runs.run_full, full_ft_large_lr=runs.run_full,
               staged=runs.run_staged, bitfit=runs.run_peft, lora_r4=runs.run_peft, lora_r16=runs.run_peft)


def label(name, s):
    """A row's label with its budget, e.g. 'full fine-tune, lr 1e-03, 10 ep, warm-up + cosine'."""
    text = dict(scratch=f"from scratch, early-stopped (cap {s.get('num_epochs')} ep)",
                scratch_equal_epochs=f"from scratch, {s.get('num_epochs')} ep (= full FT compute)",
                head_only="head only, cached features", head_only_uncached="head only, through frozen backbone",
                staged="staged / LP-FT (head, then top groups)", bitfit="BitFit (biases + head)",
                ).get(name)
    if text is None and name.startswith("lora"):
        text = f"LoRA r={s['r']} on every 1x1 conv"
    if text is None:
        text = f"full fine-tune, lr {s['lr']:.0e}" + (", warm-up + cosine" if s.get("warmup") else "")
    return text


def summarize(rows, keys=("test_acc", "val_acc", "seconds")):
    """Per-seed lists with mean and std for `keys`; constants (params, settings) from the first seed."""
    out = {}
    for key in keys:
        values = [row[key] for row in rows]
        out[key], (out[f"{key}_mean"], out[f"{key}_std"]) = values, mean_std(values)
    out["epochs"] = [row["epochs"] for row in rows]
    first = rows[0]
    out.update(trainable_params=first["trainable_params"], total_params=first["total_params"])
    skip = set(keys) | {"epochs", "trainable_params", "total_params"}
    per_seed = {"best_epoch", "val_curve", "stopped_early", "extract_seconds", "head_seconds", "steps"}
    out["settings"] = {k: v for k, v in first.items() if k not in skip | per_seed}
    out.update({k: [row[k] for row in rows] for k in sorted(per_seed) if k in first})
    return out


def _diff(experiments, a, b):
    """Per-seed points of test accuracy a - b."""
    return [100 * (x - y) for x, y in zip(experiments[a]["test_acc"], experiments[b]["test_acc"])]


def phenomena(experiments):
    """The effects the course teaches: each with its measured value (mean over seeds), per-seed values and goal."""
    def item(values, goal, note=None):
        out = dict(check(statistics.fmean(values), goal), per_seed=[round(v, 4) for v in values])
        if note:
            out["note"] = note
        return out

    acc = {name: row["test_acc"] for name, row in experiments.items()}
    scratch = experiments["scratch"]
    return {
        "head_only_minus_scratch_points": item(
            _diff(experiments, "head_only", "scratch"), ">= 10",
            f"scratch early-stopped on validation after {scratch['epochs']} epochs"),
        "head_only_minus_scratch_equal_epochs_points": item(
            _diff(experiments, "head_only", "scratch_equal_epochs"), None,
            "scratch at the full fine-tuning budget"),
        "full_ft_large_lr_accuracy": item(acc["full_ft_large_lr"], "<= 0.20"),
        "full_ft_mid_lr_accuracy": item(acc["full_ft_mid_lr"], None, "lr 1e-3, constant, no warm-up"),
        "warmup_rescue_points": item(
            _diff(experiments, "full_ft_mid_lr_warmup", "full_ft_mid_lr"), ">= 10",
            "lr 1e-3 with warm-up + cosine minus the same lr without"),
        "full_ft_small_lr_minus_head_only_points": item(_diff(experiments, "full_ft_small_lr", "head_only"), None),
        "staged_minus_head_only_points": item(_diff(experiments, "staged", "head_only"), None),
    }


def peft_table(experiments):
    """Head-only, BitFit, LoRA (two ranks), LP-FT and full fine-tuning: accuracy, params, seconds, bytes per task."""
    rows = {}
    for name in ("head_only", "bitfit", "lora_r4", "lora_r16", "staged", "full_ft_small_lr"):
        e = experiments[name]
        rows[name] = dict(test_acc_mean=e["test_acc_mean"], test_acc_std=e["test_acc_std"],
                          val_acc_mean=e["val_acc_mean"], trainable_params=e["trainable_params"],
                          seconds_mean=e["seconds_mean"], task_bytes=e["settings"].get("task_bytes"))
    return rows


def equal_compute(experiments):
    """Scratch at the budget of full fine-tuning (same network, epochs, steps) and what each run cost."""
    e = experiments
    return dict(
        note="scratch_equal_epochs trains the same network for the same epochs and batches as full_ft_small_lr",
        scratch_early_stopped_epochs=e["scratch"]["epochs"],
        scratch_early_stopped_seconds_mean=e["scratch"]["seconds_mean"],
        scratch_equal_epochs_seconds_mean=e["scratch_equal_epochs"]["seconds_mean"],
        full_ft_small_lr_seconds_mean=e["full_ft_small_lr"]["seconds_mean"],
        head_only_seconds_mean=e["head_only"]["seconds_mean"],
        full_ft_small_lr_minus_scratch_equal_epochs_points=statistics.fmean(
            _diff(e, "full_ft_small_lr", "scratch_equal_epochs")))


def caching(experiments):
    """What caching features saves: the head through the frozen backbone vs extraction + head on features."""
    head, uncached = experiments["head_only"], experiments["head_only_uncached"]
    return dict(num_epochs=head["settings"]["num_epochs"], uncached_seconds=uncached["seconds_mean"],
                extract_seconds=statistics.fmean(head["extract_seconds"]),
                cached_head_seconds=statistics.fmean(head["head_seconds"]),
                speedup_end_to_end=statistics.fmean(u / c for u, c in zip(uncached["seconds"], head["seconds"])),
                speedup_per_epoch=statistics.fmean(u / c for u, c in zip(uncached["seconds"], head["head_seconds"])))


def run_reference(profile=None, seeds=(0,), device=None, data=None, settings=None):
    """Run every reference experiment for every seed; return the JSON-ready result (mean ± std over seeds)."""
    profile = get_profile(profile) if profile is None or isinstance(profile, str) else profile
    device = torch.device(device or get_device())
    settings = settings or reference_settings(profile)
    seeds = list(seeds)
    machine, start_uptime, started = machine_info(device), uptime(), time.perf_counter()
    per_seed = {name: [] for name in settings}
    bar = tqdm(total=len(seeds) * len(settings), desc="reference", leave=False)
    for seed in seeds:
        setup = runs.make_setup(profile, data if data is not None else load_data(profile, seed=seed), seed, device)
        for name, s in settings.items():
            bar.set_postfix_str(f"seed {seed} {name}")
            per_seed[name].append(RUNNERS[name](setup, **s))
            bar.update()
    bar.close()
    experiments = {name: dict(label=label(name, settings[name]), **summarize(rows)) for name, rows in per_seed.items()}
    sizes = dict(train_images=setup.train_images, val_images=len(setup.data.val_labels),
                 test_images=len(setup.data.test_labels), num_classes=setup.data.num_classes)
    return dict(kind="reference", profile=profile.name, arch=profile.arch, dataset=profile.dataset,
                profile_settings=dataclasses.asdict(profile), seeds=seeds, date=datetime.date.today().isoformat(),
                machine=machine, uptime_start=start_uptime, uptime_end=uptime(), data=sizes,
                total_seconds=time.perf_counter() - started, experiments=experiments,
                head_only_caching=caching(experiments), equal_compute=equal_compute(experiments),
                peft=peft_table(experiments), phenomena=phenomena(experiments))


def format_reference(result):
    """The reference result as a plain-text table (what the CLI prints)."""
    m, d = result["machine"], result["data"]
    lines = [f"reference, profile {result['profile']} ({result['arch']} on {result['dataset']}, {d['train_images']} "
             f"train / {d['val_images']} val / {d['test_images']} test images), seeds {result['seeds']}, "
             f"{m['device']} / {m['cpu']} ({m['cpu_cores']} cores, {m['torch_threads']} torch threads), load "
             f"{result['uptime_start']['load_average']} at start, {result['uptime_end']['load_average']} at end, "
             f"torch {m['torch']}, {result['total_seconds']:.0f} s in all",
             f"{'experiment':46s} {'trainable/total':>15s} {'val acc':>12s} {'test acc':>12s} {'train s':>12s}"
             f"  epochs"]
    for row in result["experiments"].values():
        params = f"{params_text(row['trainable_params'])}/{params_text(row['total_params'])}"
        seconds = f"{row['seconds_mean']:.2f}" + ("" if row["seconds_std"] is None else f" ±{row['seconds_std']:.2f}")
        epochs = row["epochs"][0] if len(set(row["epochs"])) == 1 else row["epochs"]
        lines.append(f"{row['label']:46s} {params:>15s} {pct(row['val_acc_mean'], row['val_acc_std']):>12s} "
                     f"{pct(row['test_acc_mean'], row['test_acc_std']):>12s} {seconds:>12s}  {epochs}")
    c = result["head_only_caching"]
    lines.append(f"head-only caching ({c['num_epochs']} epochs): {c['uncached_seconds']:.2f} s through the backbone "
                 f"vs {c['extract_seconds']:.2f} s extract + {c['cached_head_seconds']:.3f} s head = "
                 f"{c['speedup_end_to_end']:.1f}x end to end, {c['speedup_per_epoch']:.0f}x per epoch")
    for name, item in result["phenomena"].items():
        lines.append(format_check(name, item) + f"  per seed {item['per_seed']}")
    return "\n".join(lines)
