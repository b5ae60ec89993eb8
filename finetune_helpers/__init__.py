"""finetune_helpers: the reusable code of the fine-tuning course (importing it has no side effects).

One module per idea of the course: profiles, device, data, models, freezing, training, strategies, sweeps,
diagnostics, plots; photos and augment hold the full profile's photo pipeline; bench runs the benchmarks.
"""
from .data import ImageData, TensorLoader, load_data, make_loaders
from .device import get_device, set_seed, synchronize
from .diagnostics import group_changes, weight_drift
from .freezing import (changed_frozen, count_params, freeze, freeze_all_but_head, set_bn_eval, snapshot,
                       trainable_parameters, unfreeze)
from .models import (build_model, head_of, imagenet_categories, layer_groups, load_backbone, replace_head,
                     set_head)
from .profiles import Profile, get_profile
from .strategies import discriminative_param_groups, staged_finetune, unfreeze_last
from .sweeps import batched_head_sweep, head_sweep, lr_finder, lr_sweep, suggest_lr
from .training import History, evaluate, extract_features, fit, headless, make_optimizer, train_head
