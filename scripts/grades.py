"""Write grades an LMS can import: OUT/ASSIGNMENT.csv for each assignment and OUT/total.csv, from the gradebook.

Every file has the columns student_id, score, max_score and one row per learner in the gradebook. In an
assignment's file the score is empty when the learner has no submission (an LMS then leaves its grade alone);
nbgrader's late penalty is subtracted, as `nbgrader export` does. total.csv sums the assignments that have at least
one submission, counting a missing one as 0. Submissions still waiting for manual grading are listed: their
score lacks those points until you grade them in formgrader.

Usage: python scripts/grades.py [--root COURSE_DIR] [--out grades] [--CourseDirectory.db_url=URL]
"""
import argparse
import csv
import sys
from pathlib import Path

FIELDS = ("student_id", "score", "max_score")


def read_scores(db_url):
    """({assignment: max score}, {(student, assignment): (score, needs manual grading)}, [students])."""
    from nbgrader.api import Gradebook
    with Gradebook(db_url) as gb:
        maxima = {a.name: a.max_score for a in gb.assignments}
        scores = {(sub.student_id, name): (max(0.0, sub.score - (sub.late_submission_penalty or 0.0)),
                                           sub.needs_manual_grade)
                  for name in maxima for sub in gb.assignment_submissions(name)}
        return maxima, scores, sorted(s.id for s in gb.students)


def number(value):
    """A score as an LMS reads it: 3, 2.5 (no trailing zeros); empty for None."""
    return "" if value is None else f"{value:g}"


def write_csv(path, rows):
    """Write ROWS of (student_id, score, max_score) under the FIELDS header."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(FIELDS)
        writer.writerows((student, number(score), number(top)) for student, score, top in rows)


def write_grades(out, maxima, scores, students):
    """Write one CSV per assignment and total.csv into OUT; return (written paths, assignments in the total)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, top in maxima.items():
        written.append(out / f"{name}.csv")
        write_csv(written[-1], [(s, scores.get((s, name), (None,))[0], top) for s in students])
    counted = [name for name in maxima if any(key[1] == name for key in scores)]
    total_max = sum(maxima[name] for name in counted)
    totals = [(s, sum(scores.get((s, name), (0.0,))[0] for name in counted), total_max) for s in students]
    written.append(out / "total.csv")
    write_csv(written[-1], totals)
    return written, counted


def main(argv=None):
    """Export the grades, print what was written and what still needs manual grading; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="course directory (holds nbgrader_config.py)")
    parser.add_argument("--out", default="grades", help="output folder, relative to --root (default: grades)")
    args, extra = parser.parse_known_args(argv)
    root = Path(args.root).resolve()
    if not (root / "nbgrader_config.py").is_file():
        parser.error(f"{root} has no nbgrader_config.py: pass the course directory with --root")
    if unknown := [a for a in extra if not a.startswith("--CourseDirectory.")]:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    from autograde_all import gradebook_url  # the runner's reading of nbgrader_config.py and --CourseDirectory.*
    maxima, scores, students = read_scores(gradebook_url(root, extra))
    if not maxima:
        print("The gradebook has no assignments: run `make course` (and collect and autograde) first.")
        return 1
    written, counted = write_grades(root / args.out, maxima, scores, students)
    print(f"Wrote grades of {len(students)} learner(s): " + ", ".join(str(p.relative_to(root)) for p in written))
    print(f"total.csv sums {', '.join(counted) or 'no assignment (no submissions yet)'}.")
    pending = sorted(key for key, (_, manual) in scores.items() if manual)
    if pending:
        print(f"{len(pending)} submission(s) still need manual grading in formgrader (their score lacks those "
              f"points): " + ", ".join(f"{s}/{a}" for s, a in pending))
    return 0


if __name__ == "__main__":
    sys.exit(main())
