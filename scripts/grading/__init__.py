"""Instructor-side grading machinery: the bubblewrap sandbox around each kernel, limits, scrubbing, the DB lock.

Used by scripts/autograde_all.py (the runner) through scripts/grading/worker.py (one nbgrader autograde per
submission); never imported by learners' code or by the course package.
"""
