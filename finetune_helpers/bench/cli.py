"""The command line: reference experiments (default), the label-budget experiment, or the GPU pipeline benchmark."""
import argparse
import sys
from pathlib import Path

import torch

from ..profiles import get_profile
from .common import write_json
from .label_budget import check_budgets, format_label_budget, run_label_budget
from .pipeline import PIPELINE_SIZES, format_pipeline, run_pipeline
from .reference import format_reference, run_reference

EXAMPLES = r"""examples:
  python -m finetune_helpers.bench --profile quick --seeds 0 1 2 --json benchmarks/results/quick_cpu_3seeds_DATE.json
  python -m finetune_helpers.bench --label-budget --seeds 0 1 2 \
      --json benchmarks/results/label_budget_quick_cpu_3seeds.json
  python -m finetune_helpers.bench --gpu --compile --json benchmarks/results/gpu_pipeline_CARD_DATE.json
"""


def parser():
    """The argument parser (kept separate so the tests can read its errors)."""
    p = argparse.ArgumentParser(prog="python -m finetune_helpers.bench", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="The course's benchmarks: reference experiments (default), the "
                                            "label-budget experiment, or the GPU pipeline benchmark.")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--label-budget", action="store_true",
                      help="accuracy of head-only, staged, full FT and scratch at several labels per class")
    kind.add_argument("--gpu", action="store_true", help="run the pipeline benchmark on synthetic photos")
    p.add_argument("--profile", default=None, help="quick or full (default: $FINETUNE_PROFILE or quick)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds; several give mean ± std")
    p.add_argument("--budgets", type=int, nargs="+", default=None,
                   help="labels per class for --label-budget (default: 2 5 10 20 50 digits, 1 2 5 10 Flowers)")
    p.add_argument("--size", choices=sorted(PIPELINE_SIZES), default=None,
                   help="pipeline benchmark size (default full; tiny: seconds on a CPU, to prove it works)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (CUDA only)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 is much faster on a CPU shared with other jobs)")
    p.add_argument("--json", default=None, help="write the result to this JSON file (--label-budget: and a PNG)")
    return p


def check_args(p, args):
    """Refuse option combinations that would be silently ignored, and impossible values (argparse errors)."""
    if not args.gpu and (args.size or args.compile):
        p.error("--size and --compile belong to the pipeline benchmark: add --gpu")
    if args.budgets is not None and not args.label_budget:
        p.error("--budgets belongs to the label-budget experiment: add --label-budget")
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        p.error(f"--seeds must be distinct non-negative ints, got {args.seeds}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be at least 1, got {args.threads}")
    if args.gpu:
        return None
    try:
        profile = get_profile(args.profile)
        if args.label_budget and args.budgets is not None:
            check_budgets(profile, args.budgets)
    except ValueError as error:
        p.error(str(error))
    return profile


def save_plot(result, json_path):
    """Save the label-budget plot (test accuracy, mean ± std) next to the JSON file; return its path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ..plots import plot_label_budget
    fig, (ax_val, ax_test) = plt.subplots(1, 2, figsize=(12, 4.2))
    labels = result["labels"]
    for ax, metric, name in ((ax_val, "val_acc", "validation accuracy"), (ax_test, "test_acc", "test accuracy")):
        plot_label_budget({labels[s]: curve for s, curve in result["curves"][metric].items()}, ax=ax,
                          ylabel=name, chance=1 / result["data"]["num_classes"])
    fig.suptitle(f"{result['dataset']}, {result['arch']}: mean ± std over seeds {result['seeds']}")
    fig.tight_layout()
    path = Path(json_path).with_suffix(".png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    """Run the chosen benchmark, print its table, write its JSON (and the label-budget PNG); return the result."""
    p = parser()
    args = p.parse_args(argv)
    profile = check_args(p, args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpu:
        result = run_pipeline(args.size or "full", args.device, seed=args.seeds[0], compile_model=args.compile)
        text = format_pipeline(result)
    elif args.label_budget:
        result = run_label_budget(profile, args.seeds, args.device, budgets=args.budgets)
        text = format_label_budget(result)
    else:
        result = run_reference(profile, args.seeds, args.device)
        text = format_reference(result)
    result["command"] = "python -m finetune_helpers.bench " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.json:
        write_json(result, args.json)
        text += f"\nwrote {args.json}"
        if args.label_budget:
            text += f"\nwrote {save_plot(result, args.json)}"
    print(text)
    return result
