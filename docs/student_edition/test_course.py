"""The course arrived intact: valid notebooks without outputs, package names they import, the workspace copy."""
import ast
import importlib
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "course").glob("*/*.ipynb"))


def imported_names(nb):
    """(module, name) pairs the notebook's code cells import from finetune_helpers (magic lines skipped)."""
    names = set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        code = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        try:
            tree = ast.parse(code)
        except SyntaxError:  # an answer cell a learner has not written yet is still valid here
            continue
        names.update((node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                     and (node.module or "").split(".")[0] == "finetune_helpers" for alias in node.names)
    return names


def test_course_holds_notebooks():
    """Check that course/ holds the student notebooks, one folder each."""
    assert NOTEBOOKS, f"no notebooks under {ROOT / 'course'}: this copy of the course is incomplete"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_notebook_is_valid_and_blank(path):
    """Check that every course notebook is valid nbformat 4 and carries no outputs."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    ran = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and cell.outputs]
    assert not ran, f"{path.name}: cells {ran} have outputs; course notebooks are published blank"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_notebook_imports_exist_in_the_package(path):
    """Check that every name a notebook imports from finetune_helpers exists in the installed package."""
    imports = imported_names(nbformat.read(path, as_version=4))
    missing = sorted(f"{module}.{name}" for module, name in imports
                     if not hasattr(importlib.import_module(module), name))
    assert not missing, f"{path.name} imports {missing}, which the package lacks: update finetune_helpers"


def test_workspace_copy_keeps_your_edits(tmp_path):
    """Check that `make lab`'s copy adds every course notebook and never overwrites one you edited."""
    sync = [sys.executable, str(ROOT / "scripts" / "sync_workspace.py"), str(ROOT / "course"), str(tmp_path)]
    subprocess.run(sync, check=True, capture_output=True)
    copies = sorted(tmp_path.glob("*/*.ipynb"))
    assert [p.relative_to(tmp_path) for p in copies] == [p.relative_to(ROOT / "course") for p in NOTEBOOKS]
    copies[0].write_text("my edited notebook")
    subprocess.run(sync, check=True, capture_output=True)
    assert copies[0].read_text() == "my edited notebook", "the workspace copy overwrote an edited notebook"
