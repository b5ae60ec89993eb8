"""Training and evaluation: `fit` with a progress bar and per-epoch history, and head training on cached features."""
import contextlib
import time

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .freezing import set_bn_eval, trainable_parameters
from .models import set_head


class History(list):
    """Per-epoch records (dicts with epoch, train_loss, train_acc, test_acc, seconds) returned by `fit`."""

    @property
    def last(self):
        """The final epoch's record."""
        return self[-1]

    def column(self, key):
        """One metric over epochs, e.g. history.column('test_acc')."""
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


def train_epoch(model, loader, optimizer, bn_eval=True):
    """One pass over `loader`; returns (mean loss, accuracy). BN stays in eval mode unless bn_eval=False."""
    model.train()
    if bn_eval:
        set_bn_eval(model)
    device = _device_of(model)
    loss_sum, correct, count = torch.zeros((), device=device), torch.zeros((), device=device), 0
    for x, y in loader:
        with _autocast(device):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        count += len(y)
    return loss_sum.item() / count, correct.item() / count


def fit(model, train_loader, test_loader=None, *, lr=None, num_epochs=10, optimizer=None, weight_decay=0.0,
        bn_eval=True, progress=True, desc="fit"):
    """Train with AdamW (or `optimizer`) for `num_epochs`; return a History (02_head_only onwards)."""
    if optimizer is None:
        if lr is None:
            raise ValueError("Pass lr= (or an optimizer=) to fit.")
        optimizer = make_optimizer(trainable_parameters(model), lr, weight_decay)
    if _device_of(model).type == "cuda":
        model.to(memory_format=torch.channels_last)
    history, start = History(), time.perf_counter()
    bar = tqdm(range(1, num_epochs + 1), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        train_loss, train_acc = train_epoch(model, train_loader, optimizer, bn_eval)
        test_acc = evaluate(model, test_loader) if test_loader is not None else float("nan")
        history.append(dict(epoch=epoch, train_loss=train_loss, train_acc=train_acc, test_acc=test_acc,
                            seconds=time.perf_counter() - start))
        bar.set_postfix(loss=f"{train_loss:.3f}", test_acc=f"{test_acc:.3f}")
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


def train_head(head, train_feats, train_labels, test_feats=None, test_labels=None, *, lr, num_epochs=10,
               batch_size=32, weight_decay=0.0, seed=0, progress=False):
    """Train a head on cached features with AdamW; return a History like `fit` (02 onwards)."""
    optimizer = make_optimizer(trainable_parameters(head), lr, weight_decay)
    generator, history, start = torch.Generator().manual_seed(seed), History(), time.perf_counter()
    for epoch in tqdm(range(1, num_epochs + 1), desc="head", disable=not progress, leave=False):
        head.train()
        loss_sum = torch.zeros((), device=train_feats.device)
        for x, y in feature_batches(train_feats, train_labels, batch_size, generator):
            loss = F.cross_entropy(head(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(y)
        with torch.no_grad():
            head.eval()
            train_acc = (head(train_feats).argmax(1) == train_labels).float().mean().item()
            test_acc = float("nan") if test_feats is None else \
                (head(test_feats).argmax(1) == test_labels).float().mean().item()
        history.append(dict(epoch=epoch, train_loss=loss_sum.item() / len(train_labels), train_acc=train_acc,
                            test_acc=test_acc, seconds=time.perf_counter() - start))
    return history
