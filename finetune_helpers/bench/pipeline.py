"""The GPU pipeline benchmark (--gpu): the tutorial's input/training loop against the course's, on synthetic photos.

On synthetic JPEG photos of Flowers-102's size it times the classic tutorial loop (PIL decode + torchvision
transforms in DataLoader workers, fp32, a loss.item() every step) against the course's pipeline (decode once into
a uint8 tensor cache on the device, batch augmentation there, bf16 autocast + channels_last through
`training.fit`), for ResNet-18 full fine-tuning; then frozen-backbone epochs against head epochs on cached
features; then a sweep of linear-head learning rates one by one against batched.
"""
import datetime
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..augment import CenterCrop, RandomResizedCropFlip
from ..data import TensorLoader
from ..device import get_device, set_seed
from ..freezing import freeze_all_but_head
from ..profiles import get_profile
from ..sweeps import batched_head_sweep, head_sweep
from ..training import extract_features, fit, train_head
from .common import Timer, load_average, machine_info, uptime

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
    from ..photos import cache_size_for, decode_images, read_bytes
    cfg = dict(PIPELINE_SIZES[size])
    device = torch.device(device or get_device())
    on_cuda = device.type == "cuda"
    cudnn_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on_cuda  # every shape below is fixed (drop_last), so autotuning pays
    n, bs, size_px = cfg["num_images"], cfg["batch_size"], cfg["image_size"]
    cache_px = cache_size_for(size_px)
    result = dict(kind="pipeline", size=size, date=datetime.date.today().isoformat(),
                  machine=machine_info(device), uptime_start=uptime(), settings=dict(cfg, cache_size=cache_px),
                  notes={})
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
        cached_loader = TensorLoader(cache, labels, bs, device=device, transform=CenterCrop(size_px),
                                      mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), drop_last=True)
        with Timer(device) as t_extract:
            feats, feat_labels = extract_features(model, cached_loader)
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
        gap = max(abs(one[lr].last["val_acc"] - batched[lr].last["val_acc"]) for lr in lrs)
        result["sweep"] = dict(num_lrs=len(lrs), num_epochs=cfg["head_epochs"], one_by_one_seconds=t_one.seconds,
                               batched_seconds=t_batched.seconds, speedup=t_one.seconds / t_batched.seconds,
                               max_val_acc_gap=gap)
    finally:
        tmp.cleanup()
        torch.backends.cudnn.benchmark = cudnn_benchmark
    result.update(load_average_end=load_average(), uptime_end=uptime(), total_seconds=time.perf_counter() - started)
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
              f"{sw['speedup']:.1f}x (max val-acc gap {sw['max_val_acc_gap']:.3f})"]
    for name, goal in result["goals"].items():
        flag = ("met " if goal["met"] else "MISS") if result["goals_apply"] else "n/a "
        lines.append(f"  {flag} {name}: {goal['value']} (goal {goal['goal']})")
    for name, note in result["notes"].items():
        lines.append(f"  note ({name}): {note}")
    return "\n".join(lines)

