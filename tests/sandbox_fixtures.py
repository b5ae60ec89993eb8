"""Hostile probe submissions that attack the grading machine, and a 127.0.0.1 listener they try to reach.

Each attack prints `attempt WHAT` before it tries and `SUCCEEDED WHAT` when it got through, so a test can tell
"blocked" from "never ran". GRADING_TEST_DEFENCE_OFF=1 grades the probe batch with UNSAFE_NO_SANDBOX=1 (and
without `kill -9 -1`, which would kill every process on the machine): run it once to see these checks fail.
"""
import os
import socket
import sys
import threading
from pathlib import Path

import pytest

DEFENCE_OFF = os.environ.get("GRADING_TEST_DEFENCE_OFF") == "1"
REPO = Path(__file__).resolve().parents[1]
PROBE_LIMITS = ["--jobs", "2", "--wall-limit", "25", "--memory", "2G", "--tmp-size", "64M", "--home-size", "64M",
                "--processes", "128"]
FORK_BOUND, HOG_MIB, FILL_MIB, FLOOD_CHARS = 600, 3072, 1024, 150_000_000


class Listener:
    """A TCP server on 127.0.0.1 that records every connection it accepts (the 'network' a sandbox must not reach)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port, self.accepted = self.sock.getsockname()[1], []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        """Accept connections until closed."""
        while True:
            try:
                conn, addr = self.sock.accept()
            except OSError:
                return
            self.accepted.append(addr)
            conn.close()

    def close(self):
        """Stop listening."""
        self.sock.close()


def attack(what, body):
    """Cell source that runs BODY (which sets `done` when it got through) and prints whether WHAT succeeded.

    Attacks whose success the notebook cannot see (killing the grader, outliving the notebook) never set `done`:
    the batch's results show whether they were contained."""
    lines = "\n".join("    " + line for line in body.strip().splitlines())
    assert "'" not in what and '"' not in what, what
    return (f"print('attempt {what}')\ndone = False\ntry:\n{lines}\nexcept Exception as exc:\n"
            f"    print('blocked {what}:', type(exc).__name__, exc)\n"
            f"print('SUCCEEDED {what}' if done else 'not done {what}')\n")


def hostile_cases(root, port, marker):
    """{student: (square-cell source, expected autograded score)}: attacks in place of the `square` answer.

    ROOT is the course directory (an attacker who knows the instructor's paths), PORT the listener's port,
    MARKER a word in the command line of the process that must not outlive its notebook."""
    root = str(root)
    cases = {
        "hostile_tamper_gradebook": attack("gradebook tampering", f"""
import sqlite3
con = sqlite3.connect('file:{root}/gradebook.db?mode=rw', uri=True)
con.execute('UPDATE grade SET auto_score = 0, manual_score = 0')
con.commit()
done = True"""),
        "hostile_read_others": attack("reading files of other learners", f"""
data = open('{root}/submitted/good_solver/zz_grading_probe/zz_grading_probe.ipynb').read()
data += open('{root}/gradebook.db', 'rb').read().decode('latin-1')
done = 'probe-hidden-test-marker' in data"""),
        "hostile_write_outside": attack("writing outside", f"""
for path in ['{root}/planted.txt', '{root}/submitted/good_solver/zz_grading_probe/planted.txt',
             '{os.path.dirname(root)}/planted.txt']:
    try:
        open(path, 'w').write('planted')
        done = True
    except OSError as exc:
        print('blocked', path, exc)"""),
        "hostile_network": attack("network", f"""
import socket
socket.create_connection(('127.0.0.1', {port}), timeout=5).sendall(b'hello')
done = True"""),
        "hostile_kill_parent": attack("killing the grader", """
import os, signal
os.kill(os.getppid(), signal.SIGKILL)
os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)"""),
        "hostile_fork_bomb": attack("fork bomb", f"""
import os, time
forked = 0
try:
    for _ in range({FORK_BOUND}):
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        forked += 1
finally:
    print('forked', forked)
done = True"""),
        "hostile_memory_hog": attack("memory hog", f"""
blocks = []
try:
    for _ in range({HOG_MIB} // 64):
        block = bytearray(64 << 20)
        block[::4096] = b'x' * len(block[::4096])
        blocks.append(block)
finally:
    print('allocated MiB', 64 * len(blocks))
    del blocks
done = True"""),
        "hostile_disk_filler": attack("disk filler", f"""
import os
written = 0
try:
    with open('/tmp/filler.bin', 'wb') as f:
        for _ in range({FILL_MIB} // 8):
            f.write(b'x' * (8 << 20))
            f.flush()
            written += 8
finally:
    print('wrote MiB', written)
    os.remove('/tmp/filler.bin')
done = True"""),
        "hostile_output_flood": attack("output flood", f"""
print('x' * {FLOOD_CHARS})
done = True"""),
        "hostile_orphan": attack("outliving the notebook", f"""
import subprocess, sys
subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(90)', '{marker}'], start_new_session=True)"""),
        "hostile_hung_kernel": "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass",
        "hostile_wall_hog": ("import time\ndef square(x):\n    return x * x\n"  # 3 later cells x 9 s > 25 s
                             "get_ipython().events.register('pre_run_cell', lambda *args: time.sleep(9))"),
    }
    if not DEFENCE_OFF:  # in the sandbox it can only kill the notebook's own processes
        cases["hostile_kill_all"] = attack("kill -9 -1", """
import os, signal
os.kill(-1, signal.SIGKILL)
print('processes visible:', len([p for p in os.listdir('/proc') if p.isdigit()]))""")
    scores = {name: 1 for name in cases} | {"hostile_hung_kernel": 0, "hostile_wall_hog": None}  # None: timing
    return {name: (source, scores[name]) for name, source in cases.items()}


HOOK = """def square(x):
    return x * x
_seen = []
def _spy(info):
    _seen.append(info.raw_cell)
    print(info.raw_cell)
get_ipython().events.register('pre_run_cell', _spy)"""


def hook_cases():
    """{student: ({grade_id: source}, expected score)}: learner code that hooks the kernel to print later cells."""
    return {
        "hostile_hook_print": ({"square": HOOK, "cube": "def cube(x):\n    return x ** 3\nprint(repr(_seen))\n"
                                                          "import json\nprint(json.dumps(_seen))"}, 3),
        "hostile_hook_raise": ({"square": HOOK, "cube": "raise RuntimeError('\\n'.join(_seen))"}, 2),
    }


def lingering(marker):
    """Pids of processes whose command line contains MARKER."""
    found = []
    for cmdline in os.scandir("/proc"):
        if cmdline.name.isdigit():
            try:
                with open(f"/proc/{cmdline.name}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(cmdline.name))
            except OSError:
                pass
    return found


def sandbox_probe_submissions(source, root, port, marker):
    """{student: (notebook, expected autograded score out of 3)} of the attacks and the kernel hooks."""
    from conftest import with_cell
    cases = {name: (with_cell(source, "square", code), score)
             for name, (code, score) in hostile_cases(root, port, marker).items()}
    for name, (cells, score) in hook_cases().items():
        nb = source
        for grade_id, code in cells.items():
            nb = with_cell(nb, grade_id, code)
        cases[name] = (nb, score)
    return cases


def probe_batch_options():
    """autograde_all.py options for the probe batches: small limits, two jobs, the sandbox unless DEFENCE_OFF."""
    return PROBE_LIMITS + (["--unsafe-no-sandbox"] if DEFENCE_OFF else [])


def sandbox_problem():
    """Why no sandbox works here (scripts/grading/sandbox.py's check), or None."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from grading.sandbox import check_sandbox
    finally:
        sys.path.remove(str(REPO / "scripts"))
    return check_sandbox()


def require_sandbox():
    """Skip (fail with CI=true) a test that needs bubblewrap where no sandbox works, unless DEFENCE_OFF."""
    problem = None if DEFENCE_OFF else sandbox_problem()
    if problem and os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the sandbox tests, but: {problem}")
    if problem:
        pytest.skip(f"no bubblewrap sandbox here (CI=true makes this a failure): {problem.splitlines()[0]}")
