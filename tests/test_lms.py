"""LMS round trip: an LMS-style zip -> scripts/collect.py (make collect) -> autograde -> scripts/grades.py (make grades)."""
import csv
import runpy
import shutil
import sys
import zipfile
from types import SimpleNamespace

import nbformat
import pytest
from traitlets.config import Config

from conftest import (PROBE, PROBE_TIMEOUT, REPO, _give_manual_grade, autograde_batch, load_script,
                      new_probe_course, probe_source, probe_submissions, run)
from sandbox_fixtures import require_sandbox

PROBE_NB = f"{PROBE}.ipynb"
PROBE_MAX = sum(c.metadata.nbgrader.get("points", 0) for c in probe_source().cells)  # 5: 2 + 1 auto, 2 manual
# Canvas "Download Submissions" names: LOGIN_[late_]USERID_FILEID_NAME; USERID is the student id
CANVAS_COLLECTED = {  # zip member -> (student id, probe submission it holds)
    f"smithjane_1001_9001_{PROBE_NB}": ("1001", "good_solver"),
    f"doejohn_late_1002_9002_{PROBE_NB}": ("1002", "good_partial"),
    f"roeann_1003_9003_{PROBE}-1.ipynb": ("1003", "good_blank"),  # Canvas's suffix for a re-upload
}
CANVAS_NOT_COLLECTED = {  # zip member -> the reason collect.py must give
    "my_notebook.ipynb": "file name does not match the LMS pattern",
    "smithjane_1001_9004_notes.pdf": "not a notebook (.pdf)",
    "kimlee_1004_9005_homework.ipynb": f"'homework.ipynb' is not a notebook of {PROBE}",
}


def write_zip(path, members):
    """A zip at PATH holding MEMBERS ({name: text or bytes})."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def probe_cases(root):
    """probe_submissions of ROOT's generated probe: name -> (notebook, expected autograded score)."""
    return probe_submissions(probe_source(), nbformat.read(root / "course" / PROBE / PROBE_NB, as_version=4))


def collect(root, *args):
    """Run scripts/collect.py on course ROOT; return the finished process."""
    return run([sys.executable, REPO / "scripts" / "collect.py", *args, "--root", root], cwd=root, check=False,
               timeout=600)


def submitted(root):
    """{student: {file name: bytes}} under ROOT/submitted/*/PROBE/."""
    return {d.parent.name: {f.name: f.read_bytes() for f in d.iterdir()}
            for d in sorted((root / "submitted").glob(f"*/{PROBE}"))}


def read_csv(path):
    """{student_id: (score, max_score)} of a grades CSV, after checking its header."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["student_id", "score", "max_score"], f"{path.name} header is {rows[0]}"
    return {student: (score, top) for student, score, top in rows[1:]}


@pytest.fixture(scope="module")
def canvas(tmp_path_factory):
    """The probe course after collecting a Canvas-style zip of three learners and three files it must not take."""
    root = new_probe_course(tmp_path_factory.mktemp("lms_course"))
    cases = probe_cases(root)
    members = {name: nbformat.writes(cases[case][0]) for name, (_, case) in CANVAS_COLLECTED.items()}
    members.update({"my_notebook.ipynb": nbformat.writes(cases["good_solver"][0]),
                    "smithjane_1001_9004_notes.pdf": b"%PDF-1.4 not a notebook",
                    "kimlee_1004_9005_homework.ipynb": nbformat.writes(cases["good_solver"][0])})
    archive = write_zip(root.parent / "submissions.zip", members)
    return SimpleNamespace(root=root, zip=archive, members=members, cases=cases,
                           first=collect(root, archive, "--assignment", PROBE))


def test_collect_fills_submitted_from_canvas_file_names(canvas):
    """Each well-named notebook lands, byte for byte, at submitted/USERID/ASSIGNMENT/ASSIGNMENT.ipynb."""
    expected = {student: {PROBE_NB: canvas.members[name].encode()} for name, (student, _) in CANVAS_COLLECTED.items()}
    assert submitted(canvas.root) == expected, canvas.first.stdout + canvas.first.stderr
    assert "Collected 3 notebook(s) of 3 learner(s)" in canvas.first.stdout, canvas.first.stdout


def test_collect_reports_every_file_it_did_not_collect(canvas):
    """A bad file name, a non-notebook and a foreign notebook are each listed with the reason; the exit status is 1."""
    out = canvas.first.stdout
    assert canvas.first.returncode == 1, f"collect.py should exit 1 when files were left out:\n{out}"
    assert f"NOT COLLECTED: {len(CANVAS_NOT_COLLECTED)} file(s)" in out, out
    lines = out.splitlines()
    for name, reason in CANVAS_NOT_COLLECTED.items():
        assert any(name in line and reason in line for line in lines), f"{name!r} not reported as {reason!r}:\n{out}"


def test_collect_replaces_submissions_only_with_force(canvas, tmp_path):
    """A new download touches nothing while it would overwrite an earlier submission; --force replaces them."""
    root = shutil.copytree(canvas.root, tmp_path / "course")
    before = submitted(root)
    newer = {f"abbottann_1009_9100_{PROBE_NB}": nbformat.writes(canvas.cases["good_blank"][0]),  # a new learner
             f"smithjane_1001_9101_{PROBE_NB}": nbformat.writes(canvas.cases["good_partial"][0])}  # a resubmission
    archive = write_zip(tmp_path / "newer.zip", newer)
    refused = collect(root, archive, "--assignment", PROBE)
    assert refused.returncode != 0 and "already have a submission of" in refused.stdout + refused.stderr, (
        refused.stdout + refused.stderr)
    assert submitted(root) == before, "a refused collection changed submitted/ (part of the download was copied)"
    forced = collect(root, archive, "--assignment", PROBE, "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    after = submitted(root)
    assert after["1001"] == {PROBE_NB: newer[f"smithjane_1001_9101_{PROBE_NB}"].encode()}, "1001 not replaced"
    assert after["1009"] == {PROBE_NB: newer[f"abbottann_1009_9100_{PROBE_NB}"].encode()}, "1009 not collected"
    assert after["1002"] == before["1002"], "--force touched a learner who was not in the new download"


def test_moodle_pattern_collects_files_and_folders(canvas, tmp_path):
    """With the Moodle pattern chosen in nbgrader_config.py, both Moodle layouts are collected, others reported."""
    root = shutil.copytree(canvas.root, tmp_path / "course", ignore=shutil.ignore_patterns("submitted"))
    config = root / "nbgrader_config.py"
    text = config.read_text()
    assert text.count('LMS_FILE_NAMES["canvas"]') == 1, "nbgrader_config.py no longer selects the LMS in one place"
    config.write_text(text.replace('LMS_FILE_NAMES["canvas"]', 'LMS_FILE_NAMES["moodle"]'))
    solver = nbformat.writes(canvas.cases["good_solver"][0])
    archive = write_zip(tmp_path / "moodle.zip", {
        f"Jane Smith_2001_assignsubmission_file_/{PROBE_NB}": solver,  # "Download submissions in folders"
        f"Li Wei_2002_assignsubmission_file_{PROBE_NB}": solver,       # one file per submission
        f"smithjane_1001_9001_{PROBE_NB}": solver,                     # a Canvas name: not Moodle's
    })
    proc = collect(root, archive, "--assignment", PROBE)
    assert set(submitted(root)) == {"2001", "2002"}, proc.stdout + proc.stderr
    assert proc.returncode == 1 and f"smithjane_1001_9001_{PROBE_NB}: file name does not match" in proc.stdout, (
        proc.stdout)


def test_lms_patterns_match_the_documented_examples():
    """The Canvas and Moodle patterns in nbgrader_config.py give the student id and notebook of their examples."""
    patterns = runpy.run_path(str(REPO / "nbgrader_config.py"), init_globals={"get_config": Config})["LMS_FILE_NAMES"]
    plugin_cls = __import__("nbgrader.plugins", fromlist=["FileNameCollectorPlugin"]).FileNameCollectorPlugin
    examples = {
        ("canvas", "/dl/smithjane_12345_678901_01_freezing.ipynb"): ("12345", "01_freezing"),
        ("canvas", "/dl/smithjane_LATE_12345_678901_01_freezing-2.ipynb"): ("12345", "01_freezing"),
        ("canvas", "/dl/Jane Smith_12345_assignsubmission_file_01_freezing.ipynb"): None,
        ("moodle", "/dl/Jane Smith_12345_assignsubmission_file_01_freezing.ipynb"): ("12345", "01_freezing"),
        ("moodle", "/dl/Jane Smith_12345_assignsubmission_file_/01_freezing.ipynb"): ("12345", "01_freezing"),
        ("moodle", "/dl/smithjane_12345_678901_01_freezing.ipynb"): None,
    }
    for (lms, path), expected in examples.items():
        info = plugin_cls(named_regexp=patterns[lms]).collect(path)
        got = info and (info["student_id"], info["file_id"])
        assert got == expected, f"{lms} pattern on {path}: {got}, expected {expected}"


def test_collect_rejects_bad_input(canvas, tmp_path):
    """A file that is not a zip, and an assignment with no released notebooks, stop with a clear message."""
    not_zip = tmp_path / "downloads.zip"
    not_zip.write_text("not a zip")
    proc = collect(canvas.root, not_zip, "--assignment", PROBE)
    assert proc.returncode == 2 and "is not a zip file" in proc.stderr, proc.stderr
    proc = collect(canvas.root, canvas.zip, "--assignment", "99_no_such_assignment")
    assert proc.returncode == 2 and "no released notebooks for assignment '99_no_such_assignment'" in proc.stderr, (
        proc.stderr)


def test_write_grades_formats_scores_for_an_lms(tmp_path):
    """Per-assignment CSVs leave a missing submission empty; total.csv sums assignments with submissions, 0 if none."""
    grades = load_script("grades")
    maxima = {"a1": 5.0, "a2": 3.0, "a3": 2.0}
    scores = {("s1", "a1"): (4.5, False), ("s1", "a2"): (3.0, False), ("s2", "a1"): (0.0, True)}
    written, counted = grades.write_grades(tmp_path, maxima, scores, ["s1", "s2", "s3"])
    assert [p.name for p in written] == ["a1.csv", "a2.csv", "a3.csv", "total.csv"] and counted == ["a1", "a2"]
    assert read_csv(tmp_path / "a1.csv") == {"s1": ("4.5", "5"), "s2": ("0", "5"), "s3": ("", "5")}
    assert read_csv(tmp_path / "a2.csv") == {"s1": ("3", "3"), "s2": ("", "3"), "s3": ("", "3")}
    assert read_csv(tmp_path / "total.csv") == {"s1": ("7.5", "8"), "s2": ("0", "8"), "s3": ("0", "8")}


@pytest.mark.slow
def test_lms_round_trip_collect_autograde_grades(canvas, tmp_path):
    """Collected Canvas submissions, autograded and one hand-marked, come out of grades.py with their scores."""
    require_sandbox()  # the runner grades only inside its sandbox
    root = shutil.copytree(canvas.root, tmp_path / "course")
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", "finetune-course") as gb:
        gb.add_student("1005")  # on the class list, submitted nothing
    status, table, log = autograde_batch(root, f"--Execute.timeout={PROBE_TIMEOUT}")
    assert status == 0, f"autograde failed:\n{table}\n{log[-3000:]}"
    _give_manual_grade(root, "1001", PROBE, "written_a", 1.0)
    proc = run([sys.executable, REPO / "scripts" / "grades.py", "--root", root], cwd=root, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    expected = {student: (f"{canvas.cases[case][1] + (student == '1001'):g}", f"{PROBE_MAX:g}")
                for student, case in CANVAS_COLLECTED.values()}
    assert read_csv(root / "grades" / f"{PROBE}.csv") == {**expected, "1005": ("", f"{PROBE_MAX:g}")}
    assert read_csv(root / "grades" / "total.csv") == {**expected, "1005": ("0", f"{PROBE_MAX:g}")}
    assert f"1002/{PROBE}" in proc.stdout and "need manual grading" in proc.stdout, proc.stdout
