"""nbgrader settings for everyone on the course's JupyterHub: install as /etc/jupyter/nbgrader_config.py.

Names the course and its exchange, and replaces nbgrader's submit step by one that leaves a submission open to its
learner and the instructors' group only: nbgrader 0.9.6 makes every submission folder mode 0777 (files 0644), so
anyone who learns its name can read and rewrite it. See README, "JupyterHub classroom", for what the deployment
must do besides.
"""
import os

from nbgrader.exchange.default import ExchangeSubmit

c = get_config()  # noqa: F821  (injected by traitlets when nbgrader loads this file)

c.CourseDirectory.course_id = "finetune-course"
# Created by the administrator before the first release: owned by root, mode 1777 (sticky, like /tmp), so that no
# learner can rename or replace the instructor's course folder in it.
c.Exchange.root = "/srv/nbgrader/exchange"

# The learner and the instructors' group (the inbound folder's group) only. Folders, not files, carry the defence:
# no one else may enter them, whatever the files' modes (timestamp.txt and submission_secret.txt, written by
# nbgrader after the copy, belong to the learner's own group and must stay readable by the instructors).
SUBMISSION_DIR_MODE = 0o770


class PrivateSubmit(ExchangeSubmit):
    """nbgrader's submit, with the copy in the exchange closed to everyone but its learner and the instructors."""

    def set_perms(self, dest, fileperms, dirperms):
        """Close the submitted copy's folders to everyone but the learner and the inbound folder's group."""
        inbound_group = os.stat(self.inbound_path).st_gid
        if os.stat(dest).st_gid != inbound_group:
            self.fail(f"{dest} did not take the group of {self.inbound_path}: the inbound folder must be setgid "
                      f"(as `nbgrader release_assignment` creates it) or the instructors could not collect it.")
        super().set_perms(dest, fileperms=fileperms, dirperms=SUBMISSION_DIR_MODE)

    def copy_files(self):
        """Submit as nbgrader does, then close the submission folder that nbgrader leaves open to all (0777)."""
        super().copy_files()
        os.chmod(os.path.join(self.inbound_path, self.assignment_filename), SUBMISSION_DIR_MODE)


c.ExchangeFactory.submit = PrivateSubmit
