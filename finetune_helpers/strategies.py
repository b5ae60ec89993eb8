"""Fine-tuning recipes: discriminative learning rates and staged unfreezing (03_staged_unfreezing, package version)."""
from .freezing import freeze, freeze_all_but_head, unfreeze
from .models import layer_groups
from .training import History, fit, make_optimizer


def discriminative_param_groups(model, lr, factor=0.5):
    """Optimizer param groups: head at `lr`, each earlier layer group `factor` times the next; trainable only."""
    if not 0 < factor <= 1:
        raise ValueError(f"factor must be in (0, 1] so earlier layers learn slower, got {factor}.")
    groups = []
    for depth, (name, module) in enumerate(reversed(layer_groups(model))):
        params = [p for p in module.parameters() if p.requires_grad]
        if params:
            groups.append({"params": params, "lr": lr * factor ** depth, "name": name})
    return groups


def unfreeze_last(model, num_groups):
    """Freeze everything, then unfreeze the last `num_groups` layer groups (the head counts as one)."""
    groups = layer_groups(model)
    if not 1 <= num_groups <= len(groups):
        raise ValueError(f"num_groups must be 1..{len(groups)} for this model, got {num_groups}.")
    freeze(model)
    for _, module in groups[-num_groups:]:
        unfreeze(module)
    return model


def staged_finetune(model, train_loader, val_loader=None, *, head_lr, lr, head_epochs, num_epochs,
                    num_groups=4, factor=0.5, progress=True):
    """Stage 1: train the head alone; stage 2: unfreeze the top groups at smaller, discriminative LRs."""
    freeze_all_but_head(model)
    history = History(dict(row, stage="head") for row in fit(
        model, train_loader, val_loader, lr=head_lr, num_epochs=head_epochs, progress=progress, desc="head"))
    unfreeze_last(model, num_groups)
    optimizer = make_optimizer(discriminative_param_groups(model, lr, factor), lr)
    offset_epochs, offset_seconds = len(history), history.last["seconds"] if history else 0.0
    for row in fit(model, train_loader, val_loader, optimizer=optimizer, num_epochs=num_epochs,
                   progress=progress, desc="unfrozen"):
        history.append(dict(row, epoch=row["epoch"] + offset_epochs, seconds=row["seconds"] + offset_seconds,
                            stage="unfrozen"))
    return history
