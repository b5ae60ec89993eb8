"""Execute a notebook without Jupyter's front end, save it with its outputs, print its printed results and timings.

    python scripts/execute_notebook.py solutions/04_learning_rates/04_learning_rates.ipynb OUT.ipynb

Made for machines that have no JupyterLab, such as the lent GPU (benchmarks/gpu_check.sh): only nbclient,
nbformat and ipykernel are needed. The notebook runs in its own folder, in this Python, like nbval's
--nbval-current-env. Exits 1 if a cell fails (the notebook is saved up to that cell either way).
"""
import argparse
import datetime
import sys
import time
from pathlib import Path


def cell_seconds(cell):
    """Wall seconds nbclient recorded for one executed code cell (None if it did not run)."""
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return None
    parse = lambda stamp: datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def printed_text(cell, limit=600):
    """What a code cell printed to stdout and its final value, as text (progress bars on stderr left out)."""
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream" and output.get("name") == "stdout":
            parts.append(output.get("text", ""))
        elif output.get("output_type") == "execute_result":
            parts.append(output.get("data", {}).get("text/plain", ""))
        elif output.get("output_type") == "error":
            parts.append(f"{output.get('ename')}: {output.get('evalue')}")
    text = "".join(parts).strip()
    return text if len(text) <= limit else text[:limit] + " …"


def main(argv=None):
    """Execute, save, report; return the exit status."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("output", type=Path, help="where to save the executed notebook")
    parser.add_argument("--timeout", type=int, default=900, help="seconds one cell may take")
    args = parser.parse_args(argv)
    notebook = nbformat.read(args.notebook, as_version=4)
    client = NotebookClient(notebook, timeout=args.timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(args.notebook.parent.resolve())}})
    started, status = time.perf_counter(), 0
    try:
        client.execute()
    except CellExecutionError as error:
        print(f"FAILED: {str(error)[-1500:]}", file=sys.stderr)
        status = 1
    finally:
        wall = time.perf_counter() - started
        args.output.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, args.output)
    code = [(i, c) for i, c in enumerate(notebook.cells) if c.cell_type == "code"]
    for index, cell in code:
        text = printed_text(cell)
        if text:
            print(f"--- cell {index} ({cell_seconds(cell) or 0:.1f} s)\n{text}")
    timed = sorted(((cell_seconds(c) or 0, i) for i, c in code), reverse=True)[:5]
    print(f"{args.notebook.name}: {'FAILED' if status else 'ran'} in {wall:.1f} s wall; slowest cells: "
          + ", ".join(f"#{i} {s:.1f} s" for s, i in timed))
    return status


if __name__ == "__main__":
    sys.exit(main())
