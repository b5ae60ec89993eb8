"""finetune_helpers: the reusable code of the fine-tuning course (importing it has no side effects).

One module per idea of the course: profiles, device, splits, data, models, freezing, training, schedules,
checkpoints, strategies, adapters, sweeps, diagnostics, plots; photos and augment hold the full profile's photo
pipeline; bench runs the benchmarks.
"""
from .adapters import (LoRA, add_lora, lora_targets, merge_lora, peft_lora, saved_bytes, step_memory, task_state,
                       train_only)
from .checkpoints import load_model, save_model
from .data import TensorLoader, feature_loader, load_data, make_loaders
from .device import get_device, set_seed, synchronize
from .diagnostics import accuracy_se, group_changes, weight_drift
from .freezing import (changed_frozen, count_params, freeze, freeze_all_but_head, set_bn_eval, snapshot,
                       trainable_parameters, unfreeze)
from .models import (build_model, head_of, imagenet_categories, layer_groups, load_backbone, replace_head,
                     set_head)
from .profiles import Profile, get_profile
from .schedules import warmup_cosine
from .splits import ImageData, few_label_split
from .strategies import discriminative_param_groups, staged_finetune, unfreeze_last
from .sweeps import batched_head_sweep, best_lr, head_sweep, lr_finder, lr_sweep, suggest_lr
from .training import History, evaluate, extract_features, fit, headless, make_optimizer, train_head
