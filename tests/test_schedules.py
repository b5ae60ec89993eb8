"""Unit tests for finetune_helpers.schedules: warm-up + cosine built from torch.optim.lr_scheduler."""
import math
import sys
import warnings
from pathlib import Path

import pytest
import torch

from finetune_helpers.schedules import warmup_cosine
from finetune_helpers.training import fit, make_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers_fixtures import tiny_net, toy_loaders  # noqa: E402


def _lrs(scheduler, optimizer, steps):
    """The lr of every group at each of `steps` optimizer steps, stepping the scheduler after each."""
    seen = []
    for _ in range(steps):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


def _optimizer(*lrs):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in lrs]
    return make_optimizer([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], lr=lrs[0])


def test_warmup_then_cosine_to_zero():
    optimizer = _optimizer(1.0)
    scheduler = warmup_cosine(optimizer, num_steps=10, warmup_steps=3)
    seen = [lrs[0] for lrs in _lrs(scheduler, optimizer, 10)]
    expected = [1 / 4, 2 / 4, 3 / 4] + [0.5 * (1 + math.cos(math.pi * k / 7)) for k in range(7)]
    assert seen == pytest.approx(expected)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12), "the cosine ends at 0"
    assert max(seen) == pytest.approx(1.0) and seen.index(max(seen)) == 3, "peak right after the warm-up"


def test_schedule_is_built_from_torch_schedulers():
    scheduler = warmup_cosine(_optimizer(1.0), num_steps=8, warmup_steps=2)
    assert isinstance(scheduler, torch.optim.lr_scheduler.SequentialLR)
    assert [type(s).__name__ for s in scheduler._schedulers] == ["LinearLR", "CosineAnnealingLR"]


def test_every_param_group_keeps_its_own_peak_lr():
    optimizer = _optimizer(1e-2, 1e-3)
    seen = _lrs(warmup_cosine(optimizer, num_steps=6, warmup_steps=2), optimizer, 6)
    assert [a / b for a, b in seen] == pytest.approx([10.0] * 6), "discriminative lrs keep their ratio"
    assert seen[2] == pytest.approx([1e-2, 1e-3])


def test_no_warmup_is_a_plain_cosine():
    optimizer = _optimizer(2.0)
    seen = [lrs[0] for lrs in _lrs(warmup_cosine(optimizer, num_steps=4, warmup_steps=0), optimizer, 4)]
    assert seen == pytest.approx([2.0 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)])


def test_construction_and_steps_warn_nothing():
    optimizer = _optimizer(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _lrs(warmup_cosine(optimizer, num_steps=5, warmup_steps=2), optimizer, 5)


@pytest.mark.parametrize("num_steps, warmup_steps", [(5, 5), (5, 6), (5, -1), (0, 0), (5.0, 1), (5, 1.5)])
def test_bad_step_counts_are_refused(num_steps, warmup_steps):
    with pytest.raises(ValueError, match="steps"):
        warmup_cosine(_optimizer(1.0), num_steps, warmup_steps)


def test_fit_follows_the_schedule_batch_by_batch():
    train_loader, val_loader = toy_loaders()  # 4 batches per epoch
    model = tiny_net()
    optimizer = make_optimizer(model.parameters(), lr=0.05)
    scheduler = warmup_cosine(optimizer, num_steps=3 * len(train_loader), warmup_steps=len(train_loader))
    history = fit(model, train_loader, val_loader, optimizer=optimizer, scheduler=scheduler, num_epochs=3,
                  progress=False)
    # last step of epoch 1 is step 3 (warm-up 4/5 of the peak), of epoch 2 step 7, of epoch 3 step 11
    expected = [0.05 * 4 / 5] + [0.05 * 0.5 * (1 + math.cos(math.pi * k / 8)) for k in (3, 7)]
    assert history.column("lr") == pytest.approx(expected)
