"""Learning-rate schedules built from torch.optim.lr_scheduler (stepped once per batch by `fit`)."""
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR


def warmup_cosine(optimizer, num_steps, warmup_steps):
    """Linear warm-up over `warmup_steps` steps, then cosine decay to 0 at `num_steps` (LinearLR + CosineAnnealingLR).

    Step k < warmup_steps runs at (k + 1) / (warmup_steps + 1) of each group's lr; step warmup_steps at the full
    lr; the cosine then brings it down to 0 at step num_steps. Call it with num_steps = num_epochs *
    len(train_loader) and pass it to `fit(..., scheduler=...)`.
    """
    for name, value in (("num_steps", num_steps), ("warmup_steps", warmup_steps)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int (optimizer steps), got {value!r}.")
    if not 0 <= warmup_steps < num_steps:
        raise ValueError(f"Need 0 <= warmup_steps < num_steps, got warmup_steps={warmup_steps}, "
                         f"num_steps={num_steps}: the cosine needs at least one step after the warm-up.")
    cosine = CosineAnnealingLR(optimizer, T_max=num_steps - warmup_steps)
    if warmup_steps == 0:
        return cosine
    warmup = LinearLR(optimizer, start_factor=1 / (warmup_steps + 1), end_factor=1.0, total_iters=warmup_steps)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])
