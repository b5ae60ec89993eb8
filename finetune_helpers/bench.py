"""Benchmarks: the course's reference experiments, and the GPU input/training pipeline against the tutorial loop.

    python -m finetune_helpers.bench --profile quick --seeds 0 --json benchmarks/results/quick_cpu_DATE.json
    python -m finetune_helpers.bench --gpu --json benchmarks/results/gpu_CARD_DATE.json   # synthetic photos
    python -m finetune_helpers.bench --gpu --size tiny                                      # seconds on a CPU

Reference experiments (one row each, every seed): a fresh network trained from scratch; head-only on cached
features (and, for the caching speed-up, the same head trained through the frozen backbone); full fine-tuning
at a small and a large learning rate; staged unfreezing. Accuracy is measured once, after training; seconds
are training time (feature extraction included for the cached head).

The pipeline benchmark (--gpu) times, on synthetic JPEG photos of Flowers-102's size: the classic tutorial loop
(PIL decode + torchvision transforms in DataLoader workers, fp32, a loss.item() every step) against the
course's pipeline (decode once into a uint8 tensor cache on the device, batch augmentation there, bf16 autocast
+ channels_last through `training.fit`), for ResNet-18 full fine-tuning; then frozen-backbone epochs against
head epochs on cached features; then a sweep of linear-head learning rates one by one against batched.
"""
import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .augment import CenterCrop, RandomResizedCropFlip
from .data import TensorLoader, load_data, make_loaders
from .device import get_device, set_seed, synchronize
from .freezing import count_params, freeze_all_but_head
from .models import build_model, head_of
from .profiles import get_profile
from .strategies import staged_finetune
from .sweeps import batched_head_sweep, head_sweep
from .training import evaluate, extract_features, fit, train_head

# ------------------------------------------------------------------------------------ machine and timing

def _load_average():
    """1, 5 and 15-minute load averages (None where the OS has none)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine_info(device=None):
    """CPU model, cores, load, library versions and the accelerator: what a timing needs next to it."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torchvision
    device = torch.device(device or get_device())
    info = dict(cpu=cpu, cpu_cores=os.cpu_count(), torch_threads=torch.get_num_threads(),
                load_average=_load_average(),
                python=platform.python_version(), torch=torch.__version__, torchvision=torchvision.__version__,
                platform=platform.platform(), device=str(device), accelerator=None)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(accelerator=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    gpu_memory_gib=round(props.total_memory / 2 ** 30, 1))
    return info


class Timer:
    """`with Timer(device) as t: ...` then t.seconds (synchronises CUDA at both ends)."""

    def __init__(self, device="cpu"):
        self.device, self.seconds = device, float("nan")

    def __enter__(self):
        synchronize(self.device)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        synchronize(self.device)
        self.seconds = time.perf_counter() - self.start


def mean_std(values):
    """(mean, sample std or None for a single value)."""
    values = [float(v) for v in values]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def write_json(result, path):
    """Write `result` as indented JSON, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


# ------------------------------------------------------------------------------- reference experiments

def reference_settings(profile):
    """Learning rates and epochs of the reference experiments for a profile (the course's defaults)."""
    return dict(
        scratch=dict(lr=1e-3, num_epochs=profile.num_epochs, bn_eval=False),  # random init: BN must learn stats
        head_only=dict(lr=profile.lr_head, num_epochs=2 * profile.num_epochs),
        full_ft_small_lr=dict(lr=profile.lr_finetune, num_epochs=profile.num_epochs),
        full_ft_large_lr=dict(lr=1e-2, num_epochs=profile.num_epochs),
        staged=dict(head_lr=profile.lr_head, lr=profile.lr_finetune, head_epochs=profile.num_epochs,
                    num_epochs=profile.num_epochs, num_groups=4, factor=0.5),
    )


LABELS = dict(scratch="from scratch (random init)", head_only="head only, cached features",
              head_only_uncached="head only, through the frozen backbone",
              full_ft_small_lr="full fine-tune, small lr", full_ft_large_lr="full fine-tune, large lr",
              staged="staged: head, then top groups")


def _one_seed(profile, settings, seed, device, data):
    """Run every reference experiment once with `seed`; return {name: dict(accuracy, seconds, params...)}."""
    train_loader, test_loader = make_loaders(data, profile.batch_size, device, seed=seed)
    feature_loader = TensorLoader(data.train_images, data.train_labels, max(profile.batch_size, 256),
                                  device=device, mean=data.mean, std=data.std, transform=data.test_transform)
    rows = {}

    def reseed():
        """Same batch order (and augmentation draws) for every experiment of this seed."""
        train_loader.generator.manual_seed(seed)
        if getattr(data.train_transform, "generator", None) is not None:
            data.train_transform.generator.manual_seed(seed)

    def record(name, model, seconds, accuracy, **extra):
        trainable, total = count_params(model)
        rows[name] = dict(accuracy=accuracy, seconds=seconds, trainable_params=trainable, total_params=total,
                          **extra)

    def fresh(pretrained=True):
        set_seed(seed)
        return build_model(data.num_classes, profile.arch, pretrained=pretrained).to(device)

    s = settings["scratch"]
    model = fresh(pretrained=False)
    reseed()
    with Timer(device) as t:
        fit(model, train_loader, lr=s["lr"], num_epochs=s["num_epochs"], bn_eval=s["bn_eval"], progress=False)
    record("scratch", model, t.seconds, evaluate(model, test_loader), **s)

    s = settings["head_only"]
    model = freeze_all_but_head(fresh())
    with Timer(device) as t_extract:
        train_feats, train_labels = extract_features(model, feature_loader)
    test_feats, test_labels = extract_features(model, test_loader)
    set_seed(seed)
    head = head_of(model)
    with Timer(device) as t_head:
        train_head(head, train_feats, train_labels, lr=s["lr"], num_epochs=s["num_epochs"],
                   batch_size=profile.batch_size, seed=seed)
    with torch.no_grad():
        accuracy = (head(test_feats).argmax(1) == test_labels).float().mean().item()
    record("head_only", model, t_extract.seconds + t_head.seconds, accuracy, extract_seconds=t_extract.seconds,
           head_seconds=t_head.seconds, **s)

    model = freeze_all_but_head(fresh())
    reseed()
    with Timer(device) as t:
        fit(model, train_loader, lr=s["lr"], num_epochs=s["num_epochs"], progress=False)
    record("head_only_uncached", model, t.seconds, evaluate(model, test_loader), **s)

    for name in ("full_ft_small_lr", "full_ft_large_lr"):
        s = settings[name]
        model = fresh()
        reseed()
        with Timer(device) as t:
            fit(model, train_loader, lr=s["lr"], num_epochs=s["num_epochs"], progress=False)
        record(name, model, t.seconds, evaluate(model, test_loader), **s)

    s = settings["staged"]
    model = fresh()
    reseed()
    with Timer(device) as t:
        staged_finetune(model, train_loader, progress=False, **s)
    record("staged", model, t.seconds, evaluate(model, test_loader), **s)
    return rows


def phenomena(experiments):
    """The effects the course teaches, each with its measured value, goal and whether this run met it."""
    acc = {name: row["accuracy_mean"] for name, row in experiments.items()}
    checks = {
        "head_only_minus_scratch_points": (100 * (acc["head_only"] - acc["scratch"]), ">= 25"),
        "full_ft_large_lr_accuracy": (acc["full_ft_large_lr"], "<= 0.20"),
        "full_ft_small_lr_minus_head_only_points": (100 * (acc["full_ft_small_lr"] - acc["head_only"]), ">= 0"),
        "staged_minus_head_only_points": (100 * (acc["staged"] - acc["head_only"]), ">= 0"),
    }
    out = {}
    for name, (value, goal) in checks.items():
        op, bound = goal.split()
        met = value >= float(bound) if op == ">=" else value <= float(bound)
        out[name] = dict(value=round(value, 4), goal=goal, met=bool(met))
    return out


def run_reference(profile=None, seeds=(0,), device=None, data=None, settings=None):
    """Run the reference experiments for every seed; return the JSON-ready result (mean ± std over seeds)."""
    profile = get_profile(profile) if profile is None or isinstance(profile, str) else profile
    device = torch.device(device or get_device())
    settings = settings or reference_settings(profile)
    seeds = list(seeds)
    machine, started = machine_info(device), time.perf_counter()  # load average as the run starts
    per_seed = {}
    for seed in seeds:
        seed_data = data if data is not None else load_data(profile, seed=seed)
        sizes = dict(train_images=len(seed_data.train_labels), test_images=len(seed_data.test_labels),
                     num_classes=seed_data.num_classes)
        per_seed[seed] = _one_seed(profile, settings, seed, device, seed_data)
    experiments = {}
    for name in per_seed[seeds[0]]:
        rows = [per_seed[seed][name] for seed in seeds]
        acc_mean, acc_std = mean_std(r["accuracy"] for r in rows)
        sec_mean, sec_std = mean_std(r["seconds"] for r in rows)
        first = rows[0]
        experiments[name] = dict(
            label=LABELS[name], accuracy=[r["accuracy"] for r in rows], accuracy_mean=acc_mean,
            accuracy_std=acc_std, seconds=[r["seconds"] for r in rows], seconds_mean=sec_mean,
            seconds_std=sec_std, trainable_params=first["trainable_params"], total_params=first["total_params"],
            settings={k: v for k, v in first.items() if k not in
                      ("accuracy", "seconds", "trainable_params", "total_params", "extract_seconds",
                       "head_seconds")})
    head = [per_seed[seed]["head_only"] for seed in seeds]
    uncached = [per_seed[seed]["head_only_uncached"]["seconds"] for seed in seeds]
    epochs = settings["head_only"]["num_epochs"]
    caching = dict(
        num_epochs=epochs,
        uncached_seconds=statistics.fmean(uncached),
        extract_seconds=statistics.fmean(r["extract_seconds"] for r in head),
        cached_head_seconds=statistics.fmean(r["head_seconds"] for r in head),
        speedup_end_to_end=statistics.fmean(u / r["seconds"] for u, r in zip(uncached, head)),
        speedup_per_epoch=statistics.fmean(u / r["head_seconds"] for u, r in zip(uncached, head)),
    )
    return dict(kind="reference", profile=profile.name, arch=profile.arch, dataset=profile.dataset,
                profile_settings=dataclasses.asdict(profile), seeds=seeds, date=datetime.date.today().isoformat(), machine=machine, data=sizes,
                load_average_end=_load_average(), total_seconds=time.perf_counter() - started, experiments=experiments,
                head_only_caching=caching, phenomena=phenomena(experiments))


def _params(n):
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def format_reference(result):
    """The reference result as a plain-text table (what the CLI prints)."""
    m = result["machine"]
    lines = [f"profile {result['profile']} ({result['arch']} on {result['dataset']}, {result['data']['train_images']} "
             f"train / {result['data']['test_images']} test images), seeds {result['seeds']}, "
             f"{m['device']} / {m['cpu']} ({m['cpu_cores']} cores, {m['torch_threads']} torch threads, load "
             f"{m['load_average']} at start, {result['load_average_end']} at end), torch {m['torch']}, "
             f"{result['total_seconds']:.0f} s in all",
             f"{'experiment':42s} {'trainable/total':>17s} {'accuracy':>13s} {'seconds':>13s}"]
    for row in result["experiments"].values():
        acc = f"{100 * row['accuracy_mean']:.1f}%" + (f" ±{100 * row['accuracy_std']:.1f}"
                                                      if row["accuracy_std"] is not None else "")
        sec = f"{row['seconds_mean']:.2f}" + (f" ±{row['seconds_std']:.2f}" if row["seconds_std"] is not None
                                              else "")
        params = f"{_params(row['trainable_params'])}/{_params(row['total_params'])}"
        lines.append(f"{row['label']:42s} {params:>17s} {acc:>13s} {sec:>13s}")
    c = result["head_only_caching"]
    lines.append(f"head-only caching ({c['num_epochs']} epochs): {c['uncached_seconds']:.2f} s through the backbone "
                 f"vs {c['extract_seconds']:.2f} s extract + {c['cached_head_seconds']:.3f} s head = "
                 f"{c['speedup_end_to_end']:.1f}x end to end, {c['speedup_per_epoch']:.0f}x per epoch")
    for name, check in result["phenomena"].items():
        lines.append(f"  {'met ' if check['met'] else 'MISS'} {name}: {check['value']:.3g} (goal {check['goal']})")
    return "\n".join(lines)


# --------------------------------------------------------------------------------- pipeline benchmark

PIPELINE_SIZES = {
    # Flowers-102 photos are about 500×(500..1000) px JPEGs; the full profile caches 256 px and trains at 224.
    "full": dict(source_hw=(500, 667), image_size=224, num_images=1024, distinct_files=256, batch_size=64,
                 epochs=5, warmup_steps=5, frozen_epochs=3, head_epochs=20, num_lrs=16, num_classes=102,
                 workers=min(16, os.cpu_count() or 1)),
    # Seconds on a 2-core CPU: proves every code path runs; its ratios mean nothing.
    "tiny": dict(source_hw=(48, 64), image_size=32, num_images=64, distinct_files=16, batch_size=16, epochs=1,
                 warmup_steps=1, frozen_epochs=1, head_epochs=3, num_lrs=4, num_classes=10, workers=2),
}
GOALS = dict(end_to_end_speedup=8.0, head_epoch_speedup=10.0, sweep_speedup=10.0)


def make_jpegs(folder, count, height, width, seed=0, quality=75):
    """Write `count` photo-like JPEGs (a smooth colour field + fine noise, ~40 KiB at 500×667); return the paths.

    Flowers-102's archive holds 8,189 photos in about 330 MB, some 40 KB each: the noise level and quality are
    chosen so that decoding costs the tutorial loop what real photos of that size would.
    """
    from PIL import Image
    generator = torch.Generator().manual_seed(seed)
    paths = []
    for i in range(count):
        coarse = torch.rand(1, 3, 6, 8, generator=generator)
        x = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0]
        x = x + 0.03 * torch.randn(3, height, width, generator=generator)
        array = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        path = Path(folder) / f"image_{i:05d}.jpg"
        Image.fromarray(array).save(path, quality=quality)
        paths.append(path)
    return paths


class JpegFiles(torch.utils.data.Dataset):
    """The tutorial's dataset: open a JPEG with PIL and transform it, one image per __getitem__."""

    def __init__(self, paths, labels, transform):
        self.paths, self.labels, self.transform = list(paths), list(labels), transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        from PIL import Image
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB")), self.labels[index]


def tutorial_loader(paths, labels, size, batch_size, workers, device):
    """The transfer-learning tutorial's input pipeline: PIL + torchvision transforms in DataLoader workers."""
    from torchvision import transforms
    transform = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(),
                                    transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    return torch.utils.data.DataLoader(JpegFiles(paths, labels, transform), batch_size=batch_size, shuffle=True,
                                       num_workers=workers, pin_memory=torch.device(device).type == "cuda",
                                       drop_last=True)


def tutorial_train(model, loader, optimizer, device, max_steps=None):
    """The tutorial's loop: fp32, tensors moved per batch, loss.item() every step; returns images seen."""
    model.train()
    seen, running_loss = 0, 0.0
    for step, (inputs, labels) in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            break
        inputs, labels = inputs.to(device), labels.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(inputs), labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item() * inputs.size(0)
        seen += inputs.size(0)
    return seen


def _resnet18(num_classes, device):
    """ResNet-18 with random weights (speed does not depend on the weights; nothing to download)."""
    import torchvision
    return torchvision.models.resnet18(weights=None, num_classes=num_classes).to(device)


def compile_break_even(first_seconds, first_images, eager_images_per_s, compiled_images_per_s):
    """Images after which torch.compile has paid for itself (its first, compiling epoch included); None if never."""
    saving_per_image = 1 / eager_images_per_s - 1 / compiled_images_per_s
    if saving_per_image <= 0:
        return None
    return max(0.0, (first_seconds - first_images / compiled_images_per_s) / saving_per_image)


def _try(fn, notes, name):
    """Run fn(); on failure record the error in notes[name] and return None (one part never sinks the rest)."""
    try:
        return fn()
    except Exception as error:  # noqa: BLE001 - a benchmark reports what broke and carries on
        notes[name] = f"{type(error).__name__}: {error}"
        return None


def run_pipeline(size="full", device=None, seed=0, compile_model=False, workdir=None):
    """Time the tutorial loop vs the course pipeline, frozen vs cached heads, one-by-one vs batched sweeps."""
    from .photos import cache_size_for, decode_images, read_bytes
    cfg = dict(PIPELINE_SIZES[size])
    device = torch.device(device or get_device())
    on_cuda = device.type == "cuda"
    cudnn_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on_cuda  # every shape below is fixed (drop_last), so autotuning pays
    n, bs, size_px = cfg["num_images"], cfg["batch_size"], cfg["image_size"]
    cache_px = cache_size_for(size_px)
    result = dict(kind="pipeline", size=size, date=datetime.date.today().isoformat(),
                  machine=machine_info(device), settings=dict(cfg, cache_size=cache_px), notes={})
    started = time.perf_counter()
    notes = result["notes"]
    if not on_cuda:
        notes["device"] = ("no CUDA device: everything ran on the CPU in fp32 (no bf16 autocast, no channels_last, "
                           "CPU JPEG decoding); the ratios say nothing about a GPU")
    set_seed(seed)
    labels = torch.randint(0, cfg["num_classes"], (n,), generator=torch.Generator().manual_seed(seed))
    tmp = tempfile.TemporaryDirectory(dir=workdir)
    try:
        distinct = make_jpegs(tmp.name, cfg["distinct_files"], *cfg["source_hw"], seed=seed)
        paths = [distinct[i % len(distinct)] for i in range(n)]
        result["settings"]["mean_jpeg_kib"] = round(
            statistics.fmean(p.stat().st_size for p in distinct) / 1024, 1)
        images_seen = n // bs * bs * cfg["epochs"]

        # 1. tutorial loop: decode + augment every epoch in workers, fp32, a host sync every step
        set_seed(seed)
        model = _resnet18(cfg["num_classes"], device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        loader = tutorial_loader(paths, labels.tolist(), size_px, bs, cfg["workers"], device)
        tutorial_train(model, loader, optimizer, device, max_steps=cfg["warmup_steps"])  # cuDNN autotune etc.
        with Timer(device) as t_tutorial:
            for _ in range(cfg["epochs"]):
                tutorial_train(model, loader, optimizer, device)
        del model, optimizer, loader

        # 2. course pipeline: read + decode once into a uint8 cache, then tensor batches augmented on the device
        set_seed(seed)
        model = _resnet18(cfg["num_classes"], device)
        augment = RandomResizedCropFlip(size_px, seed=seed)
        warm = TensorLoader(torch.zeros(bs * cfg["warmup_steps"], 3, cache_px, cache_px, dtype=torch.uint8),
                            labels[:bs * cfg["warmup_steps"]], bs, shuffle=True, device=device,
                            transform=augment, drop_last=True)
        fit(model, warm, lr=1e-3, num_epochs=1, progress=False)  # same warm-up as the tutorial got
        with Timer(device) as t_decode:
            cache = decode_images([read_bytes(p) for p in paths], cache_px, device=device, desc="decode once")
        with Timer(device) as t_course:
            train_loader = TensorLoader(cache, labels, bs, shuffle=True, device=device, transform=augment,
                                        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), drop_last=True,
                                        seed=seed)
            fit(model, train_loader, lr=1e-3, num_epochs=cfg["epochs"], progress=False)
        tutorial_ips = images_seen / t_tutorial.seconds
        course_ips = images_seen / (t_decode.seconds + t_course.seconds)
        result["full_finetune"] = dict(
            model="resnet18", images_per_epoch=n // bs * bs, epochs=cfg["epochs"],
            tutorial_seconds=t_tutorial.seconds, tutorial_images_per_s=tutorial_ips,
            course_decode_seconds=t_decode.seconds, course_train_seconds=t_course.seconds,
            course_images_per_s=course_ips, course_train_images_per_s=images_seen / t_course.seconds,
            speedup_end_to_end=course_ips / tutorial_ips,
            speedup_training_only=images_seen / t_course.seconds / tutorial_ips)

        if compile_model:
            if not on_cuda:
                notes["compile"] = "skipped: torch.compile is only measured on CUDA"
            else:
                def compiled():
                    set_seed(seed)
                    cmodel = torch.compile(_resnet18(cfg["num_classes"], device))
                    with Timer(device) as t_first:
                        fit(cmodel, warm, lr=1e-3, num_epochs=1, progress=False)
                    with Timer(device) as t_compiled:
                        fit(cmodel, train_loader, lr=1e-3, num_epochs=cfg["epochs"], progress=False)
                    ips = images_seen / t_compiled.seconds
                    pays_after = compile_break_even(t_first.seconds, len(warm) * bs,
                                                    images_seen / t_course.seconds, ips)
                    full_train = cfg["num_classes"] * get_profile("full").labels_per_class
                    return dict(compile_and_warmup_seconds=t_first.seconds, train_seconds=t_compiled.seconds,
                                train_images_per_s=ips, pays_off_after_images=pays_after,
                                pays_off_after_full_profile_epochs=None if pays_after is None
                                else pays_after / full_train)
                result["full_finetune"]["compiled"] = _try(compiled, notes, "compile")

        # 3. head only: epochs through the frozen backbone vs epochs on cached features
        model = freeze_all_but_head(model)
        fit(model, warm, lr=1e-3, num_epochs=1, progress=False)  # warm the frozen-backbone shapes
        with Timer(device) as t_frozen:
            fit(model, train_loader, lr=1e-3, num_epochs=cfg["frozen_epochs"], progress=False)
        feature_loader = TensorLoader(cache, labels, bs, device=device, transform=CenterCrop(size_px),
                                      mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), drop_last=True)
        with Timer(device) as t_extract:
            feats, feat_labels = extract_features(model, feature_loader)
        head = torch.nn.Linear(feats.shape[1], cfg["num_classes"]).to(device)
        train_head(head, feats, feat_labels, lr=1e-3, num_epochs=1, batch_size=bs)  # warm-up
        with Timer(device) as t_head:
            train_head(head, feats, feat_labels, lr=1e-3, num_epochs=cfg["head_epochs"], batch_size=bs)
        frozen_epoch = t_frozen.seconds / cfg["frozen_epochs"]
        head_epoch = t_head.seconds / cfg["head_epochs"]
        profile_epochs = get_profile("full").num_epochs
        result["head_only"] = dict(
            frozen_epoch_seconds=frozen_epoch, cached_epoch_seconds=head_epoch,
            frozen_images_per_s=(n // bs * bs) / frozen_epoch, cached_images_per_s=len(feat_labels) / head_epoch,
            extract_seconds=t_extract.seconds, head_epoch_speedup=frozen_epoch / head_epoch,
            profile_epochs=profile_epochs,
            speedup_with_extraction=profile_epochs * frozen_epoch / (t_extract.seconds + profile_epochs * head_epoch))

        # 4. learning-rate sweep of linear heads: one run after another vs one batched tensor program
        lrs = [float(x) for x in np.logspace(-4, -1, cfg["num_lrs"])]
        split = len(feat_labels) // 2
        args = (feats[:split], feat_labels[:split], feats[split:], feat_labels[split:], lrs)
        batched_head_sweep(*args[:4], lrs[:2], num_epochs=1, batch_size=bs, seed=seed)  # warm-up
        with Timer(device) as t_one:
            one = head_sweep(*args, num_epochs=cfg["head_epochs"], batch_size=bs, seed=seed)
        with Timer(device) as t_batched:
            batched = batched_head_sweep(*args, num_epochs=cfg["head_epochs"], batch_size=bs, seed=seed)
        gap = max(abs(one[lr].last["test_acc"] - batched[lr].last["test_acc"]) for lr in lrs)
        result["sweep"] = dict(num_lrs=len(lrs), num_epochs=cfg["head_epochs"], one_by_one_seconds=t_one.seconds,
                               batched_seconds=t_batched.seconds, speedup=t_one.seconds / t_batched.seconds,
                               max_test_acc_gap=gap)
    finally:
        tmp.cleanup()
        torch.backends.cudnn.benchmark = cudnn_benchmark
    result.update(load_average_end=_load_average(), total_seconds=time.perf_counter() - started)
    measured = dict(end_to_end_speedup=result["full_finetune"]["speedup_end_to_end"],
                    head_epoch_speedup=result["head_only"]["head_epoch_speedup"],
                    sweep_speedup=result["sweep"]["speedup"])
    result["goals"] = {name: dict(value=round(measured[name], 2), goal=f">= {goal:g}", met=measured[name] >= goal)
                       for name, goal in GOALS.items()}
    if size != "full" or not on_cuda:
        result["goals_apply"] = False
        notes["goals"] = "the goals are for the full size on a GPU; this run only proves the code path works"
    else:
        result["goals_apply"] = True
    return result


def format_pipeline(result):
    """The pipeline result as a plain-text table (what the CLI prints last)."""
    m, ft, ho, sw = result["machine"], result["full_finetune"], result["head_only"], result["sweep"]
    lines = [f"pipeline benchmark, size {result['size']}, {m['accelerator'] or m['device']} / {m['cpu']} "
             f"({m['cpu_cores']} cores, {m['torch_threads']} torch threads, load {m['load_average']} at start), "
             f"torch {m['torch']}, {result['total_seconds']:.0f} s in all",
             f"ResNet-18 full fine-tune, {ft['epochs']} epoch(s) of {ft['images_per_epoch']} images:",
             f"  tutorial (PIL + DataLoader x{result['settings']['workers']}, fp32)   "
             f"{ft['tutorial_images_per_s']:10.0f} img/s",
             f"  course (decode once {ft['course_decode_seconds']:.2f} s + tensor cache)  "
             f"{ft['course_images_per_s']:10.0f} img/s end to end, {ft['course_train_images_per_s']:.0f} training",
             f"  speed-up {ft['speedup_end_to_end']:.1f}x end to end "
             f"({ft['speedup_training_only']:.1f}x training only)"]
    if ft.get("compiled"):
        c = ft["compiled"]
        pays = ("never pays off here" if c["pays_off_after_images"] is None else
                f"pays off after {c['pays_off_after_images']:,.0f} images "
                f"= {c['pays_off_after_full_profile_epochs']:.1f} epochs of the full profile's training set")
        lines.append(f"  + torch.compile: {c['train_images_per_s']:.0f} img/s training "
                     f"(compile + warm-up {c['compile_and_warmup_seconds']:.1f} s): {pays}")
    lines += [f"head only: frozen-backbone epoch {1000 * ho['frozen_epoch_seconds']:.1f} ms vs cached-feature epoch "
              f"{1000 * ho['cached_epoch_seconds']:.2f} ms = {ho['head_epoch_speedup']:.1f}x "
              f"({ho['speedup_with_extraction']:.1f}x over {ho['profile_epochs']} epochs incl. extraction)",
              f"head lr sweep ({sw['num_lrs']} lrs x {sw['num_epochs']} epochs): "
              f"one by one {sw['one_by_one_seconds']:.2f} s vs batched {sw['batched_seconds']:.2f} s = "
              f"{sw['speedup']:.1f}x (max test-acc gap {sw['max_test_acc_gap']:.3f})"]
    for name, goal in result["goals"].items():
        flag = ("met " if goal["met"] else "MISS") if result["goals_apply"] else "n/a "
        lines.append(f"  {flag} {name}: {goal['value']} (goal {goal['goal']})")
    for name, note in result["notes"].items():
        lines.append(f"  note ({name}): {note}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- CLI

def main(argv=None):
    """Command line: reference experiments (default) or the pipeline benchmark (--gpu)."""
    parser = argparse.ArgumentParser(prog="python -m finetune_helpers.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default=None, help="quick or full (default: $FINETUNE_PROFILE or quick)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds; several give mean ± std")
    parser.add_argument("--gpu", action="store_true", help="run the pipeline benchmark on synthetic photos")
    parser.add_argument("--size", choices=sorted(PIPELINE_SIZES), default="full",
                        help="pipeline benchmark size (tiny: seconds on a CPU, to prove it works)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (CUDA only)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is much faster on a CPU shared with other jobs)")
    parser.add_argument("--json", default=None, help="write the result to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpu:
        result = run_pipeline(args.size, args.device, seed=args.seeds[0], compile_model=args.compile)
        text = format_pipeline(result)
    else:
        result = run_reference(args.profile, args.seeds, args.device)
        text = format_reference(result)
    result["command"] = "python -m finetune_helpers.bench " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.json:
        write_json(result, args.json)
        text += f"\nwrote {args.json}"
    print(text)
    return result


if __name__ == "__main__":
    main()
