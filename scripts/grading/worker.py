"""One `nbgrader autograde` run for one submission, with the sandboxed pipeline; started by autograde_all.py.

Usage: python -m grading.worker ASSIGNMENT --student ID [--force] [nbgrader options] [--no-sandbox]
It holds the gradebook lock ($GRADING_DB_LOCK) except while the learner's code runs.
"""
import sys

from traitlets.config import Config

from . import dblock


def pipeline_config(sandbox):
    """Config that swaps nbgrader's Execute for SandboxedExecute and adds the hidden-test scrubber.

    nbgrader's LimitOutput is left out: past its line limit it drops stderr outputs, which can turn a failing
    test cell (stderr scores 0) into a passing one; SandboxedExecute limits output without dropping them."""
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import AssignLatePenalties, CheckCellMetadata, IgnorePattern, SaveAutoGrades

    from .execute import SandboxedExecute, ScrubHiddenTests

    cfg = Config()
    cfg.Autograde.autograde_preprocessors = [SandboxedExecute, ScrubHiddenTests, IgnorePattern,
                                             ClearMetadataPreprocessor, SaveAutoGrades, AssignLatePenalties,
                                             CheckCellMetadata]
    cfg.SandboxedExecute.sandbox = sandbox
    return cfg


def main(argv=None):
    """Take the gradebook lock, then run nbgrader autograde with the sandboxed pipeline."""
    argv = list(sys.argv[1:] if argv is None else argv)
    sandbox = "--no-sandbox" not in argv
    argv = [a for a in argv if a != "--no-sandbox"]
    dblock.acquire()
    from nbgrader.apps import NbGraderApp

    from jupyter_core.application import NoStart

    app = NbGraderApp.instance()
    app.initialize(["autograde", *argv])
    app.subapp.update_config(pipeline_config(sandbox))
    try:
        app.start()
    except NoStart:  # how Jupyter apps say "the subcommand has run" (launch_instance catches it too)
        pass


if __name__ == "__main__":
    main()
