"""The GPU check's parts that can be tested on a CPU: scripts/execute_notebook.py, and the files
benchmarks/gpu_check.sh names (a rename must not silently break the one run a lent GPU gets)."""
import re
import subprocess
import sys

import nbformat

from conftest import REPO, load_script

execute_notebook = load_script("execute_notebook")


def _notebook(path, *sources):
    """Write a notebook of code cells with these sources."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
    return path


def test_execute_notebook_saves_outputs_and_reports_what_cells_printed(tmp_path, capsys):
    source = _notebook(tmp_path / "nb.ipynb", "import os\nprint('cwd', os.path.basename(os.getcwd()))",
                       "6 * 7")
    status = execute_notebook.main([str(source), str(tmp_path / "out" / "done.ipynb")])
    assert status == 0
    done = nbformat.read(tmp_path / "out" / "done.ipynb", as_version=4)
    assert done.cells[0].outputs[0]["text"] == f"cwd {tmp_path.name}\n", "cells must run in the notebook's folder"
    assert done.cells[1].outputs[0]["data"]["text/plain"] == "42"
    assert all(execute_notebook.cell_seconds(cell) >= 0 for cell in done.cells)
    printed = capsys.readouterr().out
    assert f"cwd {tmp_path.name}" in printed and "\n42\n" in printed
    assert re.search(r"nb\.ipynb: ran in [\d.]+ s wall", printed)


def test_execute_notebook_fails_loudly_and_keeps_what_ran(tmp_path, capsys):
    source = _notebook(tmp_path / "nb.ipynb", "print('before')", "1 / 0", "print('never')")
    status = execute_notebook.main([str(source), str(tmp_path / "done.ipynb")])
    assert status == 1
    done = nbformat.read(tmp_path / "done.ipynb", as_version=4)
    assert done.cells[0].outputs[0]["text"] == "before\n"
    assert done.cells[1].outputs[-1]["ename"] == "ZeroDivisionError" and done.cells[2].outputs == []
    captured = capsys.readouterr()
    assert "FAILED" in captured.err and "ZeroDivisionError: division by zero" in captured.out


def test_printed_text_keeps_stdout_and_results_and_drops_progress_bars():
    cell = nbformat.v4.new_code_cell("", outputs=[
        nbformat.v4.new_output("stream", name="stderr", text="fit: 50%|#####     |"),
        nbformat.v4.new_output("stream", name="stdout", text="acc 0.9\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": "0.9"}, execution_count=1)])
    assert execute_notebook.printed_text(cell) == "acc 0.9\n0.9"
    assert execute_notebook.printed_text(cell, limit=3) == "acc …"
    assert execute_notebook.cell_seconds(cell) is None


def test_gpu_check_script_names_files_that_exist():
    script = (REPO / "benchmarks" / "gpu_check.sh").read_text()
    named = set(re.findall(r"\b((?:tests|scripts|solutions)/[\w/.]+\.(?:py|ipynb))", script))
    assert {"tests/test_cuda.py", "scripts/execute_notebook.py"} <= named
    assert any(path.startswith("solutions/04_learning_rates/") for path in named)
    missing = sorted(path for path in named if not (REPO / path).is_file())
    assert not missing, f"benchmarks/gpu_check.sh names files that do not exist: {missing}"
    result = subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_gpu_check_benchmark_line_parses_with_the_current_cli(tmp_path):
    """The bench command in gpu_check.sh, at SIZE=tiny, is accepted by the CLI, and `-m` finds the entry point."""
    import shlex

    from finetune_helpers.bench import cli
    script = (REPO / "benchmarks" / "gpu_check.sh").read_text()
    line = next(line for line in script.splitlines() if "-m finetune_helpers.bench" in line)
    command = line.replace('"$SIZE"', "tiny").replace('"$OUT', f'"{tmp_path}').split(">")[0].rstrip(" \\")
    words = shlex.split(command)
    args = words[words.index("finetune_helpers.bench") + 1:]
    parser = cli.parser()
    parsed = parser.parse_args(args)
    assert parsed.gpu and parsed.size == "tiny" and parsed.json == f"{tmp_path}/gpu_pipeline.json"
    assert cli.check_args(parser, parsed) is None
    result = subprocess.run([sys.executable, "-m", "finetune_helpers.bench", "--help"], capture_output=True,
                            text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0 and "--label-budget" in result.stdout, result.stderr
