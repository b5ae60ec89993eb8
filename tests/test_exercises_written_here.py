"""Graded exercises cannot be passed by importing the package's version: each test cell checks that the graded
function was written in the notebook (issue 9). An "importer" answer must fail every test cell of its exercise
with that check's message; the model solution must never trip it."""
import re

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import SOLUTIONS

NOTEBOOKS = ("01_freezing", "02_head_only", "03_staged_unfreezing", "04_learning_rates", "05_review")
# exercise grade_id -> what a learner might paste instead of writing the function (import or alias)
IMPORTERS = {
    "freeze_unfreeze": "from finetune_helpers import freeze, unfreeze",
    "count_params": "import finetune_helpers\ncount_params = finetune_helpers.count_params",
    "changed_frozen": "from finetune_helpers import changed_frozen",
    "replace_head": "from finetune_helpers import replace_head",
    "extract_features": "from finetune_helpers import extract_features",
    "fit_head": "from finetune_helpers import train_head as fit_head",
    "unfreeze_last": "from finetune_helpers import unfreeze_last",
    "discriminative_param_groups": "from finetune_helpers import discriminative_param_groups",
    "best_lr": "from finetune_helpers import best_lr",
    "finetune": "from finetune_helpers import staged_finetune as finetune",
}
MESSAGE = "is not defined in this notebook"
QUIZ_ANSWER = re.compile(r"q\d+_answer$")


def meta(cell):
    """The cell's nbgrader metadata ({} for ordinary cells)."""
    return cell.metadata.get("nbgrader", {})


def exercises(nb):
    """[(answer cell, [its graded test cells])] for the function exercises of a notebook (quiz answers skipped)."""
    found, current = [], None
    for cell in nb.cells:
        m = meta(cell)
        if cell.cell_type == "code" and m.get("solution"):
            current = None if QUIZ_ANSWER.match(m["grade_id"]) else (cell, [])
            if current:
                found.append(current)
        elif current and cell.cell_type == "code" and m.get("grade"):
            current[1].append(cell)
    return found


def probe_notebook(nb):
    """The notebook's first code cell, then per exercise: the importer, its tests, the solution, its tests again."""
    cells = [nbformat.v4.new_code_cell(next(c for c in nb.cells if c.cell_type == "code").source)]
    plan = []
    for answer, tests in exercises(nb):
        grade_id = meta(answer)["grade_id"]
        cells.append(nbformat.v4.new_code_cell(IMPORTERS[grade_id]))
        for kind, first in (("importer", None), ("solution", answer)):
            if first is not None:
                cells.append(nbformat.v4.new_code_cell(first.source))
            for test in tests:
                plan.append((kind, grade_id, meta(test)["grade_id"], len(cells)))
                cells.append(nbformat.v4.new_code_cell(test.source))
    probe = nbformat.v4.new_notebook(cells=cells, metadata=nb.metadata)
    return probe, plan


@pytest.mark.parametrize("assignment", NOTEBOOKS)
def test_every_exercise_has_an_importer(assignment):
    """Every function exercise of the five notebooks is probed, and has at least one graded test cell."""
    nb = nbformat.read(SOLUTIONS / assignment / f"{assignment}.ipynb", as_version=4)
    found = exercises(nb)
    assert found, f"{assignment} has no function exercise"
    for answer, tests in found:
        assert meta(answer)["grade_id"] in IMPORTERS, f"add an importer for exercise {meta(answer)['grade_id']}"
        assert tests, f"exercise {meta(answer)['grade_id']} has no graded test cell"


@pytest.mark.slow
@pytest.mark.parametrize("assignment", NOTEBOOKS)
def test_importing_the_package_fails_the_exercise_tests(assignment, tmp_path):
    """An answer cell that imports or aliases the package's function fails each of its test cells with a message
    asking for the function to be written; with the model solution the same cells never raise that message."""
    nb = nbformat.read(SOLUTIONS / assignment / f"{assignment}.ipynb", as_version=4)
    probe, plan = probe_notebook(nb)
    NotebookClient(probe, timeout=600, allow_errors=True,
                   resources={"metadata": {"path": str(SOLUTIONS / assignment)}}).execute()
    problems = []
    for kind, exercise, test_id, index in plan:
        errors = [o for o in probe.cells[index].outputs if o.output_type == "error"]
        tripped = any(e.ename == "AssertionError" and MESSAGE in e.evalue for e in errors)
        if kind == "importer" and not tripped:
            problems.append(f"{test_id}: an answer that imports the package's {exercise} was not refused "
                            f"(errors: {[(e.ename, e.evalue[:120]) for e in errors]})")
        if kind == "solution" and tripped:
            problems.append(f"{test_id}: the model solution of {exercise} was refused as imported")
    assert not problems, "\n".join(problems)
