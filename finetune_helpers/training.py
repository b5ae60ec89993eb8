"""Training and evaluation: `fit` with a progress bar, per-epoch history, schedules, early stopping and the best
checkpoint restored; evaluation; head training on cached features."""
import contextlib
import math
import time

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .device import synchronize
from .freezing import set_bn_eval, trainable_parameters
from .models import set_head


class History(list):
    """Per-epoch records (epoch, train_loss, train_acc, val_acc, seconds, lr) returned by `fit` and `train_head`.

    `seconds` is cumulative training time: evaluation is not counted.
    """

    @property
    def last(self):
        """The final epoch's record."""
        return self[-1]

    @property
    def best(self):
        """The record with the highest val_acc (the earliest on ties); ValueError without validation accuracy."""
        scored = [row for row in self if not math.isnan(row.get("val_acc", math.nan))]
        if not scored:
            raise ValueError("This History has no validation accuracy: pass a val_loader (or val features).")
        return max(scored, key=lambda row: row["val_acc"])  # max keeps the first of equal values

    @property
    def best_epoch(self):
        """The epoch number with the highest val_acc (the earliest on ties)."""
        return self.best["epoch"]

    def column(self, key):
        """One metric over epochs, e.g. history.column('val_acc')."""
        return [row[key] for row in self]


def make_optimizer(params, lr, weight_decay=0.0):
    """AdamW over a list of parameters or param-group dicts; refuses an empty list (every notebook)."""
    params = list(params)
    groups = params if params and isinstance(params[0], dict) else [{"params": params}]
    if not any(list(g["params"]) for g in groups):
        raise ValueError("The optimizer got no parameters to train: unfreeze some layers (or the head) "
                         "before building it, and pass trainable_parameters(model).")
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def _autocast(device):
    """bf16 autocast on CUDA, nothing elsewhere."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _device_of(model):
    """The device of the model's first parameter."""
    return next(model.parameters()).device


@torch.no_grad()
def evaluate(model, loader):
    """Accuracy (0..1) of `model` over `loader`, in eval mode; restores the previous mode."""
    was_training, device = model.training, _device_of(model)
    model.eval()
    correct, count = torch.zeros((), device=device), 0
    with _autocast(device):
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum()
            count += len(y)
    model.train(was_training)
    if count == 0:
        raise ValueError("evaluate got an empty loader: there is nothing to measure.")
    return correct.item() / count


def train_epoch(model, loader, optimizer, bn_eval=True, scheduler=None):
    """One pass over `loader`; returns (mean loss, accuracy, lr of the last step). Steps `scheduler` per batch."""
    model.train()
    if bn_eval:
        set_bn_eval(model)
    device = _device_of(model)
    loss_sum, correct, count = torch.zeros((), device=device), torch.zeros((), device=device), 0
    lr = optimizer.param_groups[0]["lr"]
    for x, y in loader:
        with _autocast(device):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        count += len(y)
    return loss_sum.item() / count, correct.item() / count, float(lr)


def _check_stopping(val_loader, patience, restore_best):
    """Refuse early stopping or restore_best without validation data, and a patience below 1."""
    if (patience is not None or restore_best) and val_loader is None:
        raise ValueError("patience= and restore_best=True choose epochs by validation accuracy: pass a val_loader.")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience must be a positive int (epochs without improvement), got {patience!r}.")


def _state_copy(model):
    """A detached copy of the model's state dict (the in-memory best checkpoint)."""
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def fit(model, train_loader, val_loader=None, *, lr=None, num_epochs=10, optimizer=None, scheduler=None,
        weight_decay=0.0, bn_eval=True, patience=None, restore_best=False, progress=True, desc="fit"):
    """Train with AdamW (or `optimizer`), validating each epoch; optional schedule, early stopping, best restore.

    `scheduler` (a torch.optim.lr_scheduler object) is stepped once per batch. `patience=k` stops once val_acc
    has not improved for k epochs; `restore_best=True` loads the weights of the best-val epoch at the end.
    History rows: epoch, train_loss, train_acc, val_acc (nan without val_loader), seconds (training only), lr.
    """
    _check_stopping(val_loader, patience, restore_best)
    if optimizer is None:
        if lr is None:
            raise ValueError("Pass lr= (or an optimizer=) to fit.")
        optimizer = make_optimizer(trainable_parameters(model), lr, weight_decay)
    device = _device_of(model)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    history, seconds, best_state, since_best = History(), 0.0, None, 0
    bar = tqdm(range(1, num_epochs + 1), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        synchronize(device)
        start = time.perf_counter()
        train_loss, train_acc, epoch_lr = train_epoch(model, train_loader, optimizer, bn_eval, scheduler)
        synchronize(device)
        seconds += time.perf_counter() - start
        val_acc = evaluate(model, val_loader) if val_loader is not None else float("nan")
        history.append(dict(epoch=epoch, train_loss=train_loss, train_acc=train_acc, val_acc=val_acc,
                            seconds=seconds, lr=epoch_lr))
        bar.set_postfix(loss=f"{train_loss:.3f}", val_acc=f"{val_acc:.3f}")
        if val_loader is None:
            continue
        improved = history.best_epoch == epoch
        since_best = 0 if improved else since_best + 1
        if restore_best and improved:
            best_state = _state_copy(model)
        if patience is not None and since_best >= patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return history


@contextlib.contextmanager
def headless(model):
    """Temporarily replace the head with Identity so the model returns pooled features."""
    old = set_head(model, nn.Identity())
    try:
        yield model
    finally:
        set_head(model, old)


@torch.no_grad()
def extract_features(model, loader):
    """Run the backbone once over `loader`; return (features float32, labels) to cache (02_head_only)."""
    was_training = model.training
    model.eval()
    feats, labels = [], []
    with headless(model), _autocast(_device_of(model)):
        for x, y in loader:
            feats.append(model(x).float())
            labels.append(y)
    model.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def feature_batches(feats, labels, batch_size, generator):
    """Shuffled (features, labels) mini-batches of cached features for one epoch."""
    order = torch.randperm(len(labels), generator=generator).to(feats.device)
    for start in range(0, len(labels), batch_size):
        idx = order[start:start + batch_size]
        yield feats[idx], labels[idx]


def _head_accuracy(head, feats, labels):
    """Accuracy of `head` on cached features (nan when there are none)."""
    if feats is None:
        return float("nan")
    return (head(feats).argmax(1) == labels).float().mean().item()


def train_head(head, train_feats, train_labels, val_feats=None, val_labels=None, *, lr, num_epochs=10,
               batch_size=32, weight_decay=0.0, seed=0, progress=False):
    """Train a head on cached features with AdamW; return a History like `fit` (val_acc, training seconds)."""
    optimizer = make_optimizer(trainable_parameters(head), lr, weight_decay)
    generator, history, seconds = torch.Generator().manual_seed(seed), History(), 0.0
    for epoch in tqdm(range(1, num_epochs + 1), desc="head", disable=not progress, leave=False):
        synchronize(train_feats.device)
        start = time.perf_counter()
        head.train()
        loss_sum = torch.zeros((), device=train_feats.device)
        for x, y in feature_batches(train_feats, train_labels, batch_size, generator):
            loss = F.cross_entropy(head(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(y)
        train_loss = loss_sum.item() / len(train_labels)
        seconds += time.perf_counter() - start
        with torch.no_grad():
            head.eval()
            train_acc = _head_accuracy(head, train_feats, train_labels)
            val_acc = _head_accuracy(head, val_feats, val_labels)
        history.append(dict(epoch=epoch, train_loss=train_loss, train_acc=train_acc, val_acc=val_acc,
                            seconds=seconds, lr=float(lr)))
    return history
