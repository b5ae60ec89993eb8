"""What every benchmark shares: machine info and uptime, a synchronised Timer, mean ± std, goal checks, JSON."""
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

from ..device import get_device, synchronize


def load_average():
    """1, 5 and 15-minute load averages (None where the OS has none)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def uptime():
    """`uptime`'s line and the load averages now: recorded before and after every run (timings need it)."""
    try:
        text = subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        text = None
    return dict(text=text, load_average=load_average(), time=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def machine_info(device=None):
    """CPU model, cores, load, library versions and the accelerator: what a timing needs next to it."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torchvision
    device = torch.device(device or get_device())
    info = dict(cpu=cpu, cpu_cores=os.cpu_count(), torch_threads=torch.get_num_threads(),
                load_average=load_average(),
                python=platform.python_version(), torch=torch.__version__, torchvision=torchvision.__version__,
                platform=platform.platform(), device=str(device), accelerator=None)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(accelerator=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    gpu_memory_gib=round(props.total_memory / 2 ** 30, 1))
    return info


class Timer:
    """`with Timer(device) as t: ...` then t.seconds (synchronises CUDA at both ends)."""

    def __init__(self, device="cpu"):
        self.device, self.seconds = device, float("nan")

    def __enter__(self):
        synchronize(self.device)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        synchronize(self.device)
        self.seconds = time.perf_counter() - self.start


def mean_std(values):
    """(mean, sample std or None for a single value)."""
    values = [float(v) for v in values]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def check(value, goal):
    """{value, goal, met} for a goal written ">= 10" or "<= 0.2"; goal None = reported, not judged (met None)."""
    if goal is None:
        return dict(value=None if value is None else round(value, 4), goal=None, met=None)
    op, bound = goal.split()
    if op not in (">=", "<="):
        raise ValueError(f"A goal reads '>= number' or '<= number', got {goal!r}.")
    met = value >= float(bound) if op == ">=" else value <= float(bound)
    return dict(value=round(value, 4), goal=goal, met=bool(met))


def format_check(name, item):
    """One line of a check block: met / MISS / info, the value and the goal."""
    flag = "info" if item["met"] is None else ("met " if item["met"] else "MISS")
    value = "" if item["value"] is None else f": {item['value']:.3g}"
    goal = "" if item["goal"] is None else f" (goal {item['goal']})"
    note = f" — {item['note']}" if item.get("note") else ""
    return f"  {flag} {name}{value}{goal}{note}"


def pct(mean, std=None):
    """'93.8% ±0.5' from fractions (std omitted when None)."""
    return f"{100 * mean:.1f}%" + ("" if std is None else f" ±{100 * std:.1f}")


def params_text(n):
    """A parameter count as 3.38M or 12.8k."""
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def write_json(result, path):
    """Write `result` as indented JSON, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
