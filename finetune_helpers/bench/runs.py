"""One training run of each strategy, the way the course does it; both the reference and the label-budget
experiments use these, so every run is trained, timed and scored the same way.

Every run starts from `set_seed(seed)` and `train_loader.reseed(seed)` (same weights draw, batches and
augmentation for every strategy of a seed); seconds are training time only (fit's clock: evaluation excluded;
feature extraction counted for the cached head); the test set is read once, by `finish`, after training.
"""
import math
from dataclasses import dataclass, field

import torch

from ..adapters import add_lora, saved_bytes, task_state, train_only
from ..data import feature_loader, make_loaders
from ..device import set_seed
from ..freezing import count_params, freeze_all_but_head, trainable_parameters
from ..models import build_model, head_name, head_of, layer_groups
from ..schedules import warmup_cosine
from ..strategies import staged_finetune
from ..training import evaluate, extract_features, fit, make_optimizer, train_head
from .common import Timer


@dataclass
class Setup:
    """The data, loaders and seed one batch of runs shares (build it with `make_setup`)."""
    profile: object
    data: object
    device: torch.device
    seed: int
    train_loader: object
    val_loader: object
    test_loader: object
    eval_features: dict = field(default_factory=dict)  # cached val/test features of the pretrained backbone

    @property
    def train_images(self):
        """Number of training images."""
        return len(self.data.train_labels)


def make_setup(profile, data, seed, device, eval_features=None):
    """Loaders for `data` (train reseeded with `seed`); `eval_features` may be shared between setups of one split."""
    loaders = make_loaders(data, profile.batch_size, device, seed=seed)
    return Setup(profile, data, torch.device(device), seed, *loaders,
                 eval_features={} if eval_features is None else eval_features)


def fresh_model(setup, pretrained=True):
    """The profile's model for this data, built right after set_seed(seed) (same head init for every strategy)."""
    set_seed(setup.seed)
    return build_model(setup.data.num_classes, setup.profile.arch, pretrained=pretrained).to(setup.device)


def finish(setup, model, history, val_acc=None, **settings):
    """The run's record: budget and settings, training seconds, validation accuracy, and the one test reading."""
    trainable, total = count_params(model)
    if val_acc is None:
        val_acc = history.last["val_acc"]
    if math.isnan(val_acc):
        val_acc = evaluate(model, setup.val_loader)
    return dict(test_acc=evaluate(model, setup.test_loader), val_acc=val_acc, seconds=history.last["seconds"],
                epochs=len(history), steps=len(history) * len(setup.train_loader), trainable_params=trainable,
                total_params=total, **settings)


def run_fit(setup, model, *, lr, num_epochs, validate=True, warmup=None, bn_eval=True, patience=None,
            restore_best=False):
    """Train `model` with fit (optionally warm-up + cosine over `warmup` of the steps, early stopping); its record."""
    setup.train_loader.reseed(setup.seed)
    optimizer = make_optimizer(trainable_parameters(model), lr)
    scheduler, settings = None, dict(lr=lr, num_epochs=num_epochs, bn_eval=bn_eval)
    if warmup is not None:
        num_steps = num_epochs * len(setup.train_loader)
        warmup_steps = min(num_steps - 1, max(1, round(warmup * num_steps)))
        scheduler = warmup_cosine(optimizer, num_steps, warmup_steps)
        settings.update(schedule="warmup_cosine", warmup_fraction=warmup, warmup_steps=warmup_steps)
    history = fit(model, setup.train_loader, setup.val_loader if validate else None, optimizer=optimizer,
                  scheduler=scheduler, num_epochs=num_epochs, bn_eval=bn_eval, patience=patience,
                  restore_best=restore_best, progress=False)
    if patience is not None:
        settings.update(patience=patience, restore_best=restore_best, stopped_early=len(history) < num_epochs)
    if validate:
        settings.update(best_epoch=history.best_epoch, val_curve=[round(a, 4) for a in history.column("val_acc")])
    val_acc = history.best["val_acc"] if restore_best else None
    return finish(setup, model, history, val_acc, **settings)


def run_scratch(setup, *, lr, num_epochs, bn_eval=False, validate=True, patience=None):
    """The same network from random weights (BatchNorm in train mode: it must learn its statistics)."""
    model = fresh_model(setup, pretrained=False)
    return run_fit(setup, model, lr=lr, num_epochs=num_epochs, validate=validate, bn_eval=bn_eval,
                   patience=patience, restore_best=patience is not None)


def run_full(setup, *, lr, num_epochs, warmup=None, validate=True):
    """Full fine-tuning of the pretrained model at `lr` (optionally with warm-up + cosine)."""
    return run_fit(setup, fresh_model(setup), lr=lr, num_epochs=num_epochs, warmup=warmup, validate=validate)


def _head_accuracy(head, feats, labels):
    """Accuracy of a head on cached features."""
    head.eval()
    with torch.no_grad():
        return (head(feats).argmax(1) == labels).float().mean().item()


def run_head_only(setup, *, lr, num_epochs):
    """Head-only on cached features (ordered, unaugmented feature_loader); extraction counted in its seconds."""
    model = freeze_all_but_head(fresh_model(setup))
    data, device = setup.data, setup.device
    with Timer(device) as t_extract:
        train_feats, train_labels = extract_features(model, feature_loader(data.train_images, data.train_labels,
                                                                           data, device))
    cache = setup.eval_features
    if not cache:  # the frozen pretrained backbone gives every head-only run the same val/test features
        cache["val"] = extract_features(model, feature_loader(data.val_images, data.val_labels, data, device))
        cache["test"] = extract_features(model, feature_loader(data.test_images, data.test_labels, data, device))
    head = head_of(model)
    history = train_head(head, train_feats, train_labels, *cache["val"], lr=lr, num_epochs=num_epochs,
                         batch_size=setup.profile.batch_size, seed=setup.seed)
    trainable, total = count_params(model)
    return dict(test_acc=_head_accuracy(head, *cache["test"]), val_acc=history.last["val_acc"],
                seconds=t_extract.seconds + history.last["seconds"], epochs=num_epochs,
                steps=num_epochs * math.ceil(len(train_labels) / setup.profile.batch_size),
                trainable_params=trainable, total_params=total, lr=lr, num_epochs=num_epochs,
                extract_seconds=t_extract.seconds, head_seconds=history.last["seconds"],
                val_curve=[round(a, 4) for a in history.column("val_acc")])


def run_head_uncached(setup, *, lr, num_epochs):
    """The same head trained through the frozen backbone every epoch (what caching saves)."""
    model = freeze_all_but_head(fresh_model(setup))
    return run_fit(setup, model, lr=lr, num_epochs=num_epochs, validate=False)


def run_staged(setup, *, validate=True, **settings):
    """Staged unfreezing / LP-FT: the head first, then the top groups at smaller, discriminative lrs."""
    model = fresh_model(setup)
    setup.train_loader.reseed(setup.seed)
    history = staged_finetune(model, setup.train_loader, setup.val_loader if validate else None, progress=False,
                              **settings)
    extra = dict(val_curve=[round(a, 4) for a in history.column("val_acc")]) if validate else {}
    return finish(setup, model, history, **settings, **extra)


def lora_groups(model):
    """Every layer group but the head: LoRA goes on each 1x1 conv / Linear of the backbone."""
    return [name for name, _ in layer_groups(model) if name != head_name(model)]


def run_peft(setup, *, method, lr, num_epochs, r=None):
    """BitFit (method='bitfit') or LoRA of rank r on every backbone group (method='lora'), then fit at `lr`."""
    model = fresh_model(setup)
    if method == "bitfit":
        train_only(model, "bias")
    elif method == "lora":
        add_lora(model, lora_groups(model), r=r)
    else:
        raise ValueError(f"method must be 'bitfit' or 'lora', got {method!r}.")
    record = run_fit(setup, model, lr=lr, num_epochs=num_epochs)
    record.update(method=method, task_bytes=saved_bytes(task_state(model)))
    if r is not None:
        record["r"] = r
    return record
