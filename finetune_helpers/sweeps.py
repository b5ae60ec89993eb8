"""Learning-rate comparisons selected on validation accuracy: full sweeps, a batched sweep of many linear heads at
once, `best_lr`, and an LR finder (04)."""
import copy
import math
import time

import torch
from torch.nn import functional as F

from .device import set_seed, synchronize
from .freezing import set_bn_eval, trainable_parameters
from .training import History, feature_batches, fit, make_optimizer, train_head


def lr_sweep(make_model, lrs, train_loader, val_loader, *, num_epochs, seed=0, **fit_kwargs):
    """Train a fresh `make_model()` per learning rate, one after another; return {lr: History} (val_acc)."""
    results = {}
    for lr in lrs:
        set_seed(seed)
        if hasattr(train_loader, "reseed"):  # every lr sees the same batches and augmentation draws
            train_loader.reseed(seed)
        results[lr] = fit(make_model(), train_loader, val_loader, lr=lr, num_epochs=num_epochs,
                          desc=f"lr={lr:g}", **fit_kwargs)
    return results


def best_lr(results):
    """The learning rate whose History ends with the highest val_acc; the smallest one on ties."""
    if not results:
        raise ValueError("results is empty: pass the {lr: History} dict returned by a sweep.")
    return max(sorted(results), key=lambda lr: results[lr].last["val_acc"])


def head_sweep(train_feats, train_labels, val_feats, val_labels, lrs, *, num_epochs, batch_size=32, seed=0):
    """One linear head per learning rate on cached features, one run after another; return {lr: History}."""
    results = {}
    for lr in lrs:
        set_seed(seed)
        head = torch.nn.Linear(train_feats.shape[1], int(train_labels.max()) + 1).to(train_feats.device)
        results[lr] = train_head(head, train_feats, train_labels, val_feats, val_labels, lr=lr,
                                 num_epochs=num_epochs, batch_size=batch_size, seed=seed)
    return results


def _adamw_step(param, grad, state, lr, step, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    """AdamW update where `lr` may be a tensor broadcast over stacked heads (same maths as torch.optim.AdamW)."""
    m, v = state
    param.mul_(1 - lr * weight_decay)
    m.mul_(betas[0]).add_(grad, alpha=1 - betas[0])
    v.mul_(betas[1]).addcmul_(grad, grad, value=1 - betas[1])
    m_hat, v_hat = m / (1 - betas[0] ** step), v / (1 - betas[1] ** step)
    param.sub_(lr * m_hat / (v_hat.sqrt() + eps))


def batched_head_sweep(train_feats, train_labels, val_feats, val_labels, lrs, *, num_epochs, batch_size=32,
                       seed=0, weight_decay=0.0):
    """Train len(lrs) linear heads as one stacked tensor program; same result as `head_sweep`, {lr: History}."""
    set_seed(seed)
    init = torch.nn.Linear(train_feats.shape[1], int(train_labels.max()) + 1).to(train_feats.device)
    k = len(lrs)
    weight = init.weight.detach().repeat(k, 1, 1).requires_grad_()  # K × C × D
    bias = init.bias.detach().repeat(k, 1).requires_grad_()          # K × C
    lr = torch.tensor(lrs, dtype=weight.dtype, device=weight.device)
    states = [(torch.zeros_like(t), torch.zeros_like(t)) for t in (weight, bias)]
    generator, step, seconds = torch.Generator().manual_seed(seed), 0, 0.0
    histories = [History() for _ in lrs]
    logits_of = lambda x: torch.einsum("bd,kcd->kbc", x, weight) + bias[:, None, :]  # noqa: E731
    for epoch in range(1, num_epochs + 1):
        synchronize(weight.device)
        start = time.perf_counter()
        loss_sum = torch.zeros(k, device=weight.device)
        for x, y in feature_batches(train_feats, train_labels, batch_size, generator):
            per_head = F.cross_entropy(logits_of(x).transpose(1, 2), y.expand(k, -1), reduction="none").mean(1)
            grads = torch.autograd.grad(per_head.sum(), (weight, bias))
            step += 1
            with torch.no_grad():
                _adamw_step(weight, grads[0], states[0], lr[:, None, None], step, weight_decay=weight_decay)
                _adamw_step(bias, grads[1], states[1], lr[:, None], step, weight_decay=weight_decay)
            loss_sum += per_head.detach() * len(y)
        losses = loss_sum.tolist()  # read back once per epoch, not per head
        seconds += time.perf_counter() - start
        with torch.no_grad():
            train_acc = (logits_of(train_feats).argmax(2) == train_labels).float().mean(1).tolist()
            val_acc = [math.nan] * k if val_feats is None else \
                (logits_of(val_feats).argmax(2) == val_labels).float().mean(1).tolist()
        for history, rate, loss, train, val in zip(histories, lrs, losses, train_acc, val_acc):
            history.append(dict(epoch=epoch, train_loss=loss / len(train_labels), train_acc=train, val_acc=val,
                                seconds=seconds, lr=float(rate)))
    return dict(zip(lrs, histories))


def lr_finder(model, train_loader, *, start_lr=1e-7, end_lr=1.0, num_steps=60, bn_eval=True):
    """Leslie Smith's LR range test: raise the LR each step, record the loss, restore the model (04)."""
    if not 0 < start_lr < end_lr:
        raise ValueError(f"Need 0 < start_lr < end_lr, got {start_lr} and {end_lr}.")
    saved, was_training = copy.deepcopy(model.state_dict()), model.training
    optimizer = make_optimizer(trainable_parameters(model), start_lr)
    gamma = (end_lr / start_lr) ** (1 / max(num_steps - 1, 1))
    lrs, losses, best = [], [], math.inf
    model.train()
    if bn_eval:
        set_bn_eval(model)
    try:
        batches = iter(())
        for step in range(num_steps):
            x, y = next(batches, (None, None))
            if x is None:
                batches = iter(train_loader)
                x, y = next(batches)
            lr = start_lr * gamma ** step
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = F.cross_entropy(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lrs.append(lr)
            losses.append(loss.item())
            best = min(best, losses[-1])
            if not math.isfinite(losses[-1]) or losses[-1] > 4 * best:
                break
    finally:
        model.load_state_dict(saved)
        model.train(was_training)
    return lrs, losses


def suggest_lr(lrs, losses, smoothing=0.8):
    """A safe LR from an LR-finder curve: one tenth of the LR at the smoothed loss minimum."""
    smoothed, avg = [], None
    for loss in losses:
        avg = loss if avg is None else smoothing * avg + (1 - smoothing) * loss
        smoothed.append(avg)
    return lrs[min(range(len(smoothed)), key=smoothed.__getitem__)] / 10
