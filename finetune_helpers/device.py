"""Device choice and seeding: explicit calls, nothing happens at import."""
import random

import numpy as np
import torch


def get_device():
    """Return the best available device, cuda > mps > cpu (every notebook's first cell)."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_seed(seed=0):
    """Seed Python, NumPy and PyTorch so a notebook's numbers repeat run to run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed


def synchronize(device):
    """Wait for queued GPU work so a timer measures it; no-op elsewhere (02_head_only, bench)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
