"""`make lab`: the learner's workspace/ gets new notebooks and never loses an edited one; Lab serves it locally."""
import json
import os
import subprocess
import sys

import nbformat

from conftest import REPO, load_script, run, tool_env

sync_workspace = load_script("sync_workspace")


def write_notebook(path, text):
    """Write a one-cell notebook with TEXT at PATH."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(text)]), path)


def make_course(root, names):
    """A course/ folder with one notebook per name (assignment/name.ipynb)."""
    for name in names:
        write_notebook(root / name / f"{name}.ipynb", f"# {name} v1")
    return root


def test_first_sync_mirrors_course(tmp_path):
    """An empty workspace receives every course file at the same relative path, byte for byte."""
    course = make_course(tmp_path / "course", ["01_a", "02_b"])
    (course / "02_b" / "data.csv").write_text("x\n1\n")
    (course / "01_a" / ".ipynb_checkpoints").mkdir()
    (course / "01_a" / ".ipynb_checkpoints" / "01_a-checkpoint.ipynb").write_text("{}")
    added, kept, _ = sync_workspace.sync(course, tmp_path / "ws")
    assert sorted(map(str, added)) == ["01_a/01_a.ipynb", "02_b/02_b.ipynb", "02_b/data.csv"], added
    assert kept == []
    for rel in added:
        assert (tmp_path / "ws" / rel).read_bytes() == (course / rel).read_bytes()


def test_sync_twice_and_after_course_changes_keeps_learner_edits(tmp_path):
    """Re-syncing, even after course/ changed that notebook, keeps the learner's edit; new notebooks arrive."""
    course, ws = make_course(tmp_path / "course", ["01_a", "02_b"]), tmp_path / "ws"
    sync_workspace.sync(course, ws)
    mine = ws / "01_a" / "01_a.ipynb"
    write_notebook(mine, "my answer: freeze everything but the head")
    my_bytes = mine.read_bytes()
    assert sync_workspace.sync(course, ws)[0] == [], "a second sync must add nothing"
    write_notebook(course / "01_a" / "01_a.ipynb", "# 01_a v2 (course updated upstream)")
    write_notebook(course / "02_b" / "02_b.ipynb", "# 02_b v2")
    make_course(course, ["03_c"])
    added, kept, updated = sync_workspace.sync(course, ws)
    assert mine.read_bytes() == my_bytes, "sync overwrote the learner's edited notebook"
    assert "v1" in (ws / "02_b" / "02_b.ipynb").read_text(), "sync replaced an existing (unedited) notebook"
    assert list(map(str, added)) == ["03_c/03_c.ipynb"] and (ws / "03_c" / "03_c.ipynb").exists()
    assert sorted(map(str, updated)) == ["01_a/01_a.ipynb", "02_b/02_b.ipynb"], updated


def test_sync_cli_reports_kept_notebooks(tmp_path):
    """The command-line sync names added files and the learner's files it kept although course/ changed."""
    course, ws = make_course(tmp_path / "course", ["01_a"]), tmp_path / "ws"
    script = REPO / "scripts" / "sync_workspace.py"
    first = run([sys.executable, script, course, ws], cwd=tmp_path).stdout
    write_notebook(ws / "01_a" / "01_a.ipynb", "edited")
    second = run([sys.executable, script, course, ws], cwd=tmp_path).stdout
    assert "added" in first and "1 added" in first, first
    assert "kept" in second and "0 added" in second and "edited" in (ws / "01_a" / "01_a.ipynb").read_text()


def test_workspace_is_git_ignored():
    """workspace/ (the learner's edits) never shows up in git status."""
    proc = subprocess.run(["git", "check-ignore", "-q", "workspace/01_freezing/01_freezing.ipynb"], cwd=REPO)
    assert proc.returncode == 0, "add workspace/ to .gitignore"


def test_make_passes_the_profile_through():
    """`make` exports FINETUNE_PROFILE=quick by default and keeps a value the user set."""
    show = ["make", "-s", "--no-print-directory", "--eval", "show-profile: ; @echo $$FINETUNE_PROFILE",
            "show-profile"]
    env = {k: v for k, v in tool_env().items() if k != "FINETUNE_PROFILE"}
    default = subprocess.run(show, cwd=REPO, env=env, capture_output=True, text=True).stdout.strip()
    full = subprocess.run(show, cwd=REPO, env={**env, "FINETUNE_PROFILE": "full"}, capture_output=True,
                          text=True).stdout.strip()
    assert (default, full) == ("quick", "full"), f"make exported FINETUNE_PROFILE={default!r}/{full!r}"


def test_make_lab_syncs_and_serves_workspace_on_localhost(tmp_path, jupyter_server):
    """`make lab` copies course/ into the workspace and serves exactly that folder on 127.0.0.1."""
    ws = tmp_path / "ws"
    server = jupyter_server(lambda port, token: [
        "make", "-s", "lab", f"WORKSPACE={ws}", f"PORT={port}",
        f"LAB_ARGS=--no-browser --IdentityProvider.token={token} --ServerApp.port_retries=0"], REPO)
    status, body = server.request("/api/contents")
    assert status == 200, body
    served = sorted(item["name"] for item in json.loads(body)["content"])
    expected = sorted(p.name for p in (REPO / "course").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert served == expected, f"Lab serves {served}, expected the course folders {expected}"
    assert f"{server.base}/lab" in server.log() and os.path.isdir(ws)
