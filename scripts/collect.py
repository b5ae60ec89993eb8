"""Collect submissions downloaded from an LMS (a zip) into submitted/STUDENT/ASSIGNMENT/ with nbgrader zip_collect.

The LMS's file-name pattern is FileNameCollectorPlugin.named_regexp in nbgrader_config.py (Canvas by default,
Moodle's next to it). Every file of the download that is not collected is listed with the reason, and the exit
status is then 1; the files that were collected stay collected. A learner who already has a submission of the
assignment is not overwritten unless --force is given.

Usage: python scripts/collect.py ZIP [ZIP ...] --assignment NAME [--root COURSE_DIR] [--force]
"""
import argparse
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path

from nbgrader.apps.zipcollectapp import ZipCollectApp
from nbgrader.utils import find_all_notebooks


class ReportingZipCollect(ZipCollectApp):
    """nbgrader's zip_collect that remembers what it collected and never overwrites part of a class silently."""

    seen = ()         # every file found in the extracted download
    collected = {}    # student_id -> nbgrader's record (src_files, dest_files, file_ids, timestamp)

    def _collect_files(self, src_files):
        """Collect as nbgrader does, keeping the list of files seen and what was collected from them."""
        self.seen = list(src_files)
        self.collected = super()._collect_files(src_files)
        return self.collected

    def _transfer_files(self, collected_data):
        """Refuse before copying anything when a learner already has a submission (unless --force)."""
        taken = [student for student in collected_data if not self.force and any(Path(self.coursedir.format_path(
            self.coursedir.submitted_directory, student, self.coursedir.assignment_id)).glob("*"))]
        if taken:
            self.fail("These learners already have a submission of %s: %s. Nothing was copied; rerun with --force "
                      "(make collect FORCE=1) to replace them with this download.",
                      self.coursedir.assignment_id, ", ".join(sorted(taken)))
        super()._transfer_files(collected_data)

    def released_notebooks(self):
        """Names of the assignment's notebooks in the release folder (course/ASSIGNMENT/)."""
        return find_all_notebooks(self.coursedir.format_path(
            self.coursedir.release_directory, ".", self.coursedir.assignment_id))

    def stage(self, zips):
        """Put copies of ZIPS in downloaded/ASSIGNMENT/archive/ and empty extracted/: each run collects these only."""
        archive = Path(self._format_collect_path(self.archive_directory))
        extracted = Path(self._format_collect_path(self.extracted_directory))
        for folder in (archive, extracted):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        for path in zips:
            shutil.copy(path, archive / Path(path).name)
        return extracted

    def skip_reason(self, path):
        """Why nbgrader did not collect the extracted file PATH."""
        plugin = self.collector_plugin_inst
        ext = os.path.splitext(path)[1]
        if ext not in plugin.valid_ext:
            return f"not a notebook ({ext or 'no extension'})"
        match = re.match(plugin.named_regexp, path)
        if not match:
            return "file name does not match the LMS pattern (FileNameCollectorPlugin.named_regexp)"
        name = os.path.splitext(match["file_id"])[0] + ext
        if name not in self.released_notebooks():
            return f"'{name}' is not a notebook of {self.coursedir.assignment_id} ({self.released_notebooks()})"
        return "an older copy of a file collected for the same learner"


def check_inputs(parser, zips, root):
    """Stop with a clear message when a ZIP is missing or not a zip file, or ROOT has no nbgrader_config.py."""
    for path in zips:
        if not Path(path).is_file() or not zipfile.is_zipfile(path):
            parser.error(f"{path} is not a zip file (download the LMS's submissions as one .zip)")
    if not (root / "nbgrader_config.py").is_file():
        parser.error(f"{root} has no nbgrader_config.py: pass the course directory with --root")


def report(app, extracted):
    """Print what was collected and every file that was not; return the number of files not collected."""
    where = os.path.relpath(app.coursedir.format_path(
        app.coursedir.submitted_directory, "STUDENT", app.coursedir.assignment_id))
    collected = {src for data in app.collected.values() for src in data["src_files"]}
    print(f"\nCollected {len(collected)} notebook(s) of {len(app.collected)} learner(s) into {where}/:")
    for student, data in sorted(app.collected.items()):
        print(f"  {student:20} <- " + ", ".join(os.path.relpath(s, extracted) for s in data["src_files"]))
    skipped = [path for path in app.seen if path not in collected]
    if skipped:
        print(f"\nNOT COLLECTED: {len(skipped)} file(s) of the download. Rename them to the LMS pattern and collect "
              f"again, or copy them by hand to {where}/:")
        for path in skipped:
            print(f"  {os.path.relpath(path, extracted)}: {app.skip_reason(path)}")
    return len(skipped)


def main(argv=None):
    """Collect the zips into submitted/, print the report, return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zips", nargs="+", metavar="ZIP", help="submissions downloaded from the LMS (.zip)")
    parser.add_argument("--assignment", required=True, help="the assignment they belong to, e.g. 01_freezing")
    parser.add_argument("--root", default=".", help="course directory (holds nbgrader_config.py)")
    parser.add_argument("--force", action="store_true", help="replace learners' existing submissions")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    zips = [Path(z).resolve() for z in args.zips]
    check_inputs(parser, zips, root)
    os.chdir(root)  # nbgrader reads nbgrader_config.py from the working directory
    app = ReportingZipCollect()
    app.initialize([args.assignment, "--log-level=WARN", *(["--force"] if args.force else [])])
    if not app.released_notebooks():
        parser.error(f"no released notebooks for assignment {args.assignment!r} in "
                     f"{app.coursedir.release_directory}/{args.assignment}/ (run `make course`, check the name)")
    extracted = app.stage(zips)
    app.start()
    return 1 if report(app, extracted) or not app.collected else 0


if __name__ == "__main__":
    sys.exit(main())
