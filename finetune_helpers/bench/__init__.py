"""Benchmarks of the course (`python -m finetune_helpers.bench --help`), one module per part:

- `reference`: the reference experiments (scratch early-stopped and at equal compute, head-only cached and not,
  full fine-tuning at three lrs with and without warm-up, staged / LP-FT, BitFit, LoRA), every seed;
- `label_budget`: accuracy of each strategy at several labels per class, and where the curves cross;
- `pipeline`: the GPU input/training pipeline against the tutorial loop (--gpu, synthetic photos);
- `runs`: one run of each strategy, shared by the first two; `common`: machine info, uptime, Timer, JSON;
- `cli`: the command line.

Examples: `python -m finetune_helpers.bench --help` and benchmarks/README.md.
"""
from .cli import main
from .common import Timer, machine_info, mean_std, uptime, write_json
from .label_budget import crossing_points, format_label_budget, run_label_budget
from .pipeline import _resnet18, compile_break_even, format_pipeline, run_pipeline  # _resnet18: tests/test_cuda.py
from .reference import format_reference, phenomena, reference_settings, run_reference
