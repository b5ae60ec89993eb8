"""Package hygiene: importing finetune_helpers has no side effects (CUDA, RNG, network, files), and every public
function, class and method carries a docstring whose first line says what it does."""
import importlib
import inspect
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import finetune_helpers

REPO = Path(__file__).resolve().parents[1]
MODULES = sorted(f"finetune_helpers.{m.name}" for m in pkgutil.iter_modules(finetune_helpers.__path__))

# Runs in a fresh interpreter: guard the network and CUDA, record the RNG states, import the whole package.
PROBE = r"""
import json, random, socket, sys
import numpy as np
import torch

network = []
def refuse(*args, **kwargs):
    network.append(repr(args[:2]))
    raise OSError("network access during import")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse

cuda_init = []
for name in ("_lazy_init", "init"):
    original = getattr(torch.cuda, name)
    def spy(*args, _original=original, _name=name, **kwargs):
        cuda_init.append(_name)
        return _original(*args, **kwargs)
    setattr(torch.cuda, name, spy)

torch_state, py_state, np_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
initial_seed = torch.initial_seed()
for module in sys.argv[1:]:
    __import__(module)
after_np = np.random.get_state()
print(json.dumps({
    "network": network,
    "cuda_init": cuda_init,
    "cuda_initialized": torch.cuda.is_initialized(),
    "initial_seed_before": initial_seed,
    "initial_seed_after": torch.initial_seed(),
    "torch_rng_same": bool(torch.equal(torch_state, torch.get_rng_state())),
    "python_rng_same": py_state == random.getstate(),
    "numpy_rng_same": bool(np_state[0] == after_np[0] and (np_state[1] == after_np[1]).all()
                           and np_state[2:] == after_np[2:]),
}))
"""


def _run(code, *args, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("FINETUNE_PROFILE", None)
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def import_report(tmp_path_factory):
    """What importing finetune_helpers and each of its modules did, observed in a fresh interpreter."""
    cwd = tmp_path_factory.mktemp("import_cwd")
    report = _run(PROBE, "finetune_helpers", *MODULES, cwd=cwd)
    report["files_left"] = sorted(p.name for p in cwd.iterdir())
    return report


def test_the_package_has_its_modules():
    names = {m.rsplit(".", 1)[1] for m in MODULES}
    assert {"profiles", "device", "data", "models", "freezing", "training", "strategies", "sweeps",
            "diagnostics", "plots"} <= names


def test_import_does_not_touch_the_network(import_report):
    assert import_report["network"] == [], f"import tried to connect: {import_report['network']}"


def test_import_does_not_initialise_cuda(import_report):
    assert import_report["cuda_init"] == [] and not import_report["cuda_initialized"]


def test_import_does_not_seed_or_draw_from_any_rng(import_report):
    """Compared with the same fresh interpreter just before the import (torch's own initial seed is random)."""
    assert import_report["initial_seed_after"] == import_report["initial_seed_before"], "importing seeded torch"
    assert import_report["torch_rng_same"], "importing changed torch's global RNG state"
    assert import_report["python_rng_same"], "importing changed Python's random state"
    assert import_report["numpy_rng_same"], "importing changed NumPy's global RNG state"


def test_import_writes_no_files(import_report):
    assert import_report["files_left"] == []


def test_probe_detects_side_effects(tmp_path):
    """The probe itself works: a module that seeds and connects at import is caught."""
    (tmp_path / "noisy_module.py").write_text(
        "import socket, torch\ntorch.manual_seed(0)\n"
        "try:\n    socket.create_connection(('example.com', 80), timeout=0.1)\nexcept OSError:\n    pass\n")
    report = _run(f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n" + PROBE, "noisy_module", cwd=tmp_path)
    assert report["network"] and not report["torch_rng_same"] and report["initial_seed_after"] == 0


def test_top_level_exports_resolve():
    public = [name for name in dir(finetune_helpers) if not name.startswith("_")]
    for name in ("fit", "evaluate", "load_data", "load_backbone", "freeze", "layer_groups", "lr_finder",
                 "batched_head_sweep", "weight_drift", "get_profile", "get_device", "set_seed"):
        assert name in public, f"finetune_helpers should re-export {name}"


def _public_members():
    """(qualified name, object) for every public function, class, method and property the package defines."""
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        yield module_name, module
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
                continue
            if inspect.isfunction(obj):
                yield f"{module_name}.{name}", obj
            elif inspect.isclass(obj):
                yield f"{module_name}.{name}", obj
                for attr, member in vars(obj).items():
                    if attr.startswith("_"):
                        continue
                    if isinstance(member, (staticmethod, classmethod)):
                        member = member.__func__
                    if inspect.isfunction(member) or isinstance(member, property):
                        yield f"{module_name}.{name}.{attr}", member


def _summary(obj):
    doc = obj.__doc__ if not inspect.isclass(obj) else obj.__dict__.get("__doc__")
    if inspect.isclass(obj) and doc and doc.startswith(f"{obj.__name__}("):
        return ""  # the signature dataclasses invent, not a docstring
    return (inspect.cleandoc(doc).splitlines() or [""])[0].strip() if doc else ""


def test_every_public_function_has_a_one_line_summary():
    members = list(_public_members())
    assert len(members) > 60, "the walk must reach the package's functions"
    missing = [name for name, obj in members if not _summary(obj)]
    assert missing == [], f"no docstring (or an empty first line): {missing}"
    too_long = [name for name, obj in members if len(_summary(obj)) > 120]
    assert too_long == [], f"docstring summary line over 120 characters: {too_long}"


def test_docstring_check_catches_a_missing_docstring():
    def undocumented():
        pass

    class Plain:
        pass
    assert _summary(undocumented) == "" and _summary(Plain) == ""
