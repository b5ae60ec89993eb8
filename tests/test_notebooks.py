"""The course notebooks themselves: solutions run clean under nbval; student versions fail only at exercises."""
import shutil
import sys

import nbformat
import pytest

from conftest import SOLUTIONS, assignment_names, course_config, run

# Errors a blank student notebook may show: the exercise stub itself, or a name the exercise should define;
# a test cell may also fail its own assert (a test that catches the stub and explains what is missing).
ALLOWED_BLANK_ERRORS = {"NotImplementedError", "NameError"}
ALLOWED_TEST_CELL_ERRORS = ALLOWED_BLANK_ERRORS | {"AssertionError"}


def nbgrader_meta(cell):
    """The cell's nbgrader metadata ({} for ordinary cells)."""
    return cell.metadata.get("nbgrader", {})


def is_test_cell(cell):
    """An autograder test cell: graded, not an answer, code."""
    meta = nbgrader_meta(cell)
    return cell.cell_type == "code" and meta.get("grade") and not meta.get("solution")


def blank_run_problems(nb):
    """What is wrong with the outputs of an executed blank student notebook, one line per problem."""
    problems, exercise_seen = [], False
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        meta = nbgrader_meta(cell)
        exercise_seen = exercise_seen or bool(meta.get("solution"))
        errors = [o for o in cell.outputs if o.output_type == "error"]
        where = f"cell {index} ({meta.get('grade_id', 'no grade_id')})"
        allowed = ALLOWED_TEST_CELL_ERRORS if is_test_cell(cell) else ALLOWED_BLANK_ERRORS
        for err in errors:
            if not exercise_seen:
                problems.append(f"{where} fails before the first exercise: {err.ename}: {err.evalue}")
            elif err.ename not in allowed:
                problems.append(f"{where} fails with {err.ename}: {err.evalue} "
                                f"(only {sorted(allowed)} are expected from unanswered exercises)")
        if is_test_cell(cell) and not errors:
            problems.append(f"{where} is a test cell that passes on the blank notebook: it does not test the "
                            f"exercise")
    return problems


@pytest.mark.slow
@pytest.mark.parametrize("assignment", assignment_names(SOLUTIONS))
def test_solution_runs_under_nbval(assignment, tmp_path):
    """Every cell of the solution notebook runs without error in the quick profile (check 3)."""
    work = tmp_path / assignment
    shutil.copytree(SOLUTIONS / assignment, work, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    timeout = course_config().Execute.timeout
    proc = run([sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env",
                f"--nbval-cell-timeout={timeout}", "-p", "no:cacheprovider", "-q", "-o", "addopts=",
                "--rootdir", tmp_path, *sorted(work.glob("*.ipynb"))], cwd=tmp_path, check=False, timeout=3600)
    assert proc.returncode == 0, f"solutions/{assignment} fails under nbval:\n{proc.stdout[-6000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("assignment", assignment_names(SOLUTIONS))
def test_blank_release_fails_only_at_exercises(real_course, assignment):
    """The student notebook, run unedited, errs only at exercises and fails every test cell (check 4)."""
    executed = real_course.autograded("blank", assignment)
    assert executed, f"the blank release of {assignment} was not autograded (see the autograde log)"
    for path in executed:
        problems = blank_run_problems(nbformat.read(path, as_version=4))
        assert not problems, f"course/{assignment}/{path.name}, run unedited:\n" + "\n".join(problems)


def test_blank_run_check_sees_each_problem():
    """blank_run_problems flags an early error, an unexpected error type and a test cell that passes."""
    def code(source, outputs=(), **meta):
        cell = nbformat.v4.new_code_cell(source, metadata={"nbgrader": meta} if meta else {})
        cell.outputs = [nbformat.v4.new_output("error", ename=e, evalue="", traceback=[]) for e in outputs]
        return cell

    nb = nbformat.v4.new_notebook(cells=[
        code("import nope", ["ModuleNotFoundError"]),
        code("def f(): raise NotImplementedError", grade_id="ex", solution=True, grade=False),
        code("assert f() == 1", ["NotImplementedError"], grade_id="t1", grade=True, solution=False),
        code("x = f().shape", ["AttributeError"]),
        code("assert x", ["AssertionError"]),
        code("assert True", grade_id="t2", grade=True, solution=False),
        code("assert f is not None", ["AssertionError"], grade_id="t3", grade=True, solution=False),
    ])
    problems = blank_run_problems(nb)
    assert len(problems) == 4 and "before the first exercise" in problems[0], problems
    assert "AttributeError" in problems[1] and "AssertionError" in problems[2], problems
    assert "(t2) is a test cell that passes on the blank" in problems[3], problems
