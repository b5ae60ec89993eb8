"""nbgrader preprocessors for sandboxed autograding: limits while executing, hidden-test scrubbing, a report.

`SandboxedExecute` replaces nbgrader's `Execute`: it starts the kernel through `SandboxKernelManager`, stops a
notebook at its wall-time limit (later cells get an error output, so their tests score 0), keeps at most
`output_limit` bytes of output per cell (errors, stderr and results, which decide the score, are kept shortened),
releases the gradebook lock while the learner's code runs and writes a JSON report of the limits hit.
`ScrubHiddenTests` removes every hidden-test line from every output before the notebook is recorded.
"""
import html
import json
import re
import time

from nbclient.exceptions import CellTimeoutError
from nbclient.util import run_sync
from nbformat import NotebookNode
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from nbgrader.utils import is_grade, is_locked
from traitlets import Bool, Int, Unicode

from . import dblock

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")   # colour codes split a highlighted line into pieces
OUTPUT_TYPES = {"stream", "display_data", "execute_result", "error", "update_display_data"}
KEPT_SHORT = 2000     # characters kept of each score-deciding output (error, stderr, result) past the limit
LIMIT_SIGNS = {       # what a limit hit looks like in an output -> the limit's name in the score table
    "memory": ("MemoryError", "Cannot allocate memory", "can't allocate memory", "std::bad_alloc"),
    "disk": ("No space left on device", "File too large"),
    "processes": ("Resource temporarily unavailable", "BlockingIOError", "can't start new thread"),
}


def content_size(value):
    """Characters of text in a message content (strings in nested dicts and lists)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(content_size(v) for v in value.values())
    if isinstance(value, list):
        return sum(content_size(v) for v in value)
    return 0


def shorten(text, keep=KEPT_SHORT):
    """TEXT cut to KEEP characters, with a note saying how much was removed."""
    if len(text) <= keep:
        return text
    return text[:keep] + f"\n[... {len(text) - keep} characters removed: output limit ...]\n"


def limit_error(ename, evalue):
    """An nbformat error output that makes a test cell score 0 (cells not run, limits)."""
    return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


class SandboxedExecute(Execute):
    """nbgrader's Execute with a sandboxed kernel, a per-notebook wall limit, an output limit and a report."""

    wall_limit = Int(900, help="seconds one notebook may run in total (kernel start included)").tag(config=True)
    output_limit = Int(1 << 20, help="characters of output kept per cell; the rest is dropped with a note").tag(
        config=True)
    sandbox = Bool(True, help="run the kernel inside bubblewrap (False only with UNSAFE_NO_SANDBOX=1)").tag(
        config=True)
    report_path = Unicode("", help="where to write the JSON report of limits hit (empty: nowhere)").tag(
        config=True)
    iopub_timeout = Int(20, help="seconds to wait for a cell's last output after its reply (nbclient: 4; a "
                                 "cell's megabytes of output take longer on a busy machine)").tag(config=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from jupyter_client.manager import AsyncKernelManager

        from .sandbox import SandboxKernelManager
        self.kernel_manager_class = SandboxKernelManager if self.sandbox else AsyncKernelManager

    def preprocess(self, nb, resources=None, km=None):
        """Execute NB with the gradebook lock released; record limits hit in the report."""
        self._deadline = time.monotonic() + self.wall_limit
        self._sizes, self._truncated, self._not_run, self._died, self._hung = {}, set(), 0, None, False
        dblock.release()
        try:
            return super().preprocess(nb, resources, km)
        except Exception as exc:
            self._died = f"{type(exc).__name__}: {exc}"[:500]
            raise
        finally:
            dblock.acquire()
            self.write_report(nb)

    def _get_timeout(self, cell):
        """The per-cell timeout, cut to what is left of the notebook's wall limit."""
        timeout = super()._get_timeout(cell)
        left = max(1, int(self._deadline - time.monotonic()) + 1)
        return left if timeout is None else min(timeout, left)

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        """Run CELL unless the wall limit has passed; add a note when its output was cut."""
        if cell.cell_type == "code" and (self._hung or time.monotonic() >= self._deadline):
            self._not_run += 1
            cell.outputs = [limit_error("KernelUnresponsive", "not run: the kernel stopped responding") if self._hung
                            else limit_error("WallTimeLimit", f"not run: the notebook used up its {self.wall_limit} "
                                                              f"s wall-time limit")]
            return cell
        try:
            cell = await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        except CellTimeoutError:  # interrupted at its time limit but never went idle: the kernel is stuck
            self._hung = True
            cell.outputs.append(limit_error("CellTimeoutError", "the kernel stopped responding at the time limit"))
        if cell_index in self._truncated:
            cell.outputs.append(NotebookNode(output_type="stream", name="stdout", text=(
                f"\n[output truncated: this cell printed {self._sizes[cell_index]:,} characters; the autograder "
                f"keeps {self.output_limit:,}]\n")))
        return cell

    execute_cell = run_sync(async_execute_cell)  # nbclient binds its own coroutine: rebind to this override

    def process_message(self, msg, cell, cell_index):
        """Count output per cell; past the limit drop stdout/displays, keep score-deciding outputs shortened."""
        msg_type, content = msg["msg_type"], msg["content"]
        if msg_type in OUTPUT_TYPES:
            before = self._sizes.get(cell_index, 0)
            self._sizes[cell_index] = before + content_size(content)
            if self._sizes[cell_index] > self.output_limit:
                self._truncated.add(cell_index)
                if msg_type == "error":
                    content["evalue"] = shorten(content.get("evalue", ""))
                    content["traceback"] = [shorten(line) for line in content.get("traceback", [])[-20:]]
                elif msg_type == "stream" and content.get("name") == "stderr" or msg_type == "execute_result":
                    if any(o.get("output_type") == msg_type and o.get("name") == content.get("name")
                           for o in cell.outputs):
                        return None  # one shortened stderr / result already decides the score
                    self._shorten_content(content)
                elif msg_type == "stream" and before < self.output_limit:
                    content["text"] = content["text"][:self.output_limit - before]
                else:
                    return None
        return super().process_message(msg, cell, cell_index)

    @staticmethod
    def _shorten_content(content):
        """Shorten a stream's text or a result's text/plain in place, dropping other representations."""
        if "text" in content:
            content["text"] = shorten(content["text"])
        if "data" in content:
            content["data"] = {"text/plain": shorten(str(content["data"].get("text/plain", "")))}

    def limits_hit(self, nb):
        """Names of the limits that NB's outputs show were hit."""
        hit = []
        if self._hung:
            hit.append(f"kernel unresponsive ({self._not_run} cells not run)")
        elif self._not_run or time.monotonic() >= self._deadline:
            hit.append(f"wall time ({self.wall_limit} s; {self._not_run} later cells not run)")
        timeouts = sum(o.get("ename") == "CellTimeoutError" for c in nb.cells for o in c.get("outputs", []))
        if timeouts:
            hit.append(f"cell time ({timeouts} cells)")
        if self._truncated:
            hit.append(f"output ({len(self._truncated)} cells truncated)")
        text = json.dumps([c.get("outputs", []) for c in nb.cells])
        hit += [name for name, signs in LIMIT_SIGNS.items() if any(sign in text for sign in signs)]
        return hit

    def write_report(self, nb):
        """Write the report: limits hit, cells not run, whether the kernel died."""
        if self.report_path:
            report = {"limits": self.limits_hit(nb), "kernel_died": self._died, "sandbox": self.sandbox}
            with open(self.report_path, "w") as f:
                json.dump(report, f)


def hidden_test_lines(nb, begin="BEGIN HIDDEN TESTS", end="END HIDDEN TESTS"):
    """Stripped lines inside hidden-test regions of NB's locked grade cells (the markers included)."""
    lines = set()
    for cell in nb.cells:
        if cell.cell_type != "code" or not (is_grade(cell) and is_locked(cell)):
            continue
        inside = False
        for line in cell.source.splitlines():
            text = line.strip()
            if begin in text:
                inside = True
            if inside and text:
                lines.add(text)
            if end in text:
                inside = False
    return lines


def spellings(line):
    """LINE as printed plainly, inside repr() (single and double quotes), a JSON string and HTML."""
    return {line, repr(line)[1:-1], json.dumps(line)[1:-1], repr(line + "'\"")[1:-4], html.escape(line),
            html.escape(line, quote=False)}


class ScrubHiddenTests(NbGraderPreprocessor):
    """Replace every hidden-test line in every output by a placeholder (learner code can print later cells)."""

    placeholder = Unicode("[hidden test line removed]").tag(config=True)

    def preprocess(self, nb, resources):
        """Scrub all outputs of NB with the hidden-test lines found in NB itself."""
        lines = hidden_test_lines(nb)
        self._needles = sorted({s for line in lines for s in spellings(line) if len(s) >= 8}, key=len,
                               reverse=True)
        return super().preprocess(nb, resources)

    def scrub(self, value):
        """VALUE with every hidden-test spelling replaced, recursing into dicts and lists."""
        if isinstance(value, str):
            plain = ANSI.sub("", value)
            if any(needle in plain for needle in self._needles):
                value = plain  # the colours go where a hidden line was found
                for needle in self._needles:
                    value = value.replace(needle, self.placeholder)
            return value
        if isinstance(value, list):
            return [self.scrub(v) for v in value]
        if isinstance(value, dict):
            return type(value)({k: self.scrub(v) for k, v in value.items()})
        return value

    def preprocess_cell(self, cell, resources, index):
        """Scrub the outputs of one cell."""
        if self._needles and cell.cell_type == "code":
            cell.outputs = [self.scrub(out) for out in cell.get("outputs", [])]
        return cell, resources
