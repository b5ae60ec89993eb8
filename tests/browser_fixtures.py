"""Headless Debian Chromium driven by Playwright for tests/test_browser.py: launch, pages that record console errors,
screenshots, and JupyterLab notebook helpers (open, Run ▸ Run All Cells, read each cell as the browser shows it)."""
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import REPO

ARTIFACTS = REPO / "test-artifacts" / "browser"  # screenshots and console logs (git-ignored; CI keeps the folder)
CHROMIUM = "/usr/bin/chromium"                   # Debian's package (scripts/install_system_packages.sh)
# Playwright already starts Chromium headless, without the sandbox (needed as root) and with a fresh, temporary
# user-data-dir; these keep it off the GPU and off the network (offline, Chromium's background connections to
# Google's services are refused, many at a time, and its start-up look-ups fail).
CHROMIUM_ARGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1000}
RUN_TIMEOUT_MS = 600_000  # Run All Cells or Validate on one notebook (quick profile, 2 busy cores)

# Console errors that are not the course's fault, each with why. Anything else on any page fails the test.
BENIGN_CONSOLE_ERRORS = (
    # formgrader's manual-grading page loads MathJax 2.7.7 from cdnjs.cloudflare.com (nbconvert's `mathjax` macro,
    # no setting changes it). CI and this machine are offline, so the script fails to load and formgrade.js then
    # reads the missing global. Online it loads; offline only math rendering and formgrader's keyboard shortcuts
    # are lost (scores and comments still save: test_formgrader_* grades through the page).
    re.compile(r"^Failed to load resource: net::ERR_NAME_NOT_RESOLVED "
               r"@ https://cdnjs\.cloudflare\.com/ajax/libs/mathjax/"),
    re.compile(r"^pageerror: MathJax is not defined"),
)


def in_ci():
    """True on CI (CI=true), where a missing browser must fail the test instead of skipping it."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require(ok, reason):
    """Skip with REASON when OK is false; fail instead on CI."""
    if not ok:
        (pytest.fail if in_ci() else pytest.skip)(reason)


def launch_chromium(playwright):
    """Debian's Chromium, headless (Playwright's own browser download cannot work offline)."""
    require(Path(CHROMIUM).exists(), f"{CHROMIUM} not found: install Debian's chromium "
                                     "(bash scripts/install_system_packages.sh, or make system-packages)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def fresh_artifacts():
    """Empty the screenshot folder, so that what is in it comes from this run."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@dataclass
class Recorded:
    """A Playwright page and every console error or uncaught exception it reported, as 'text @ url' lines."""
    page: object
    name: str
    errors: list = field(default_factory=list)

    def shot(self, step):
        """Save a screenshot of the page as ARTIFACTS/<name>-<step>.png."""
        self.page.screenshot(path=ARTIFACTS / f"{self.name}-{step}.png")

    def assert_no_console_errors(self):
        """Fail with the page's console errors, except the allow-listed ones; write them all beside the shots."""
        (ARTIFACTS / f"{self.name}-console.txt").write_text("\n".join(self.errors) + "\n")
        unexpected = [e for e in self.errors if not any(p.search(e) for p in BENIGN_CONSOLE_ERRORS)]
        assert not unexpected, f"{self.name}: the browser console shows errors:\n" + "\n".join(unexpected)


def recorded_page(context, name):
    """A new page in CONTEXT that records its console errors and uncaught exceptions."""
    page = context.new_page()
    rec = Recorded(page, name)
    page.on("console", lambda msg: msg.type == "error" and rec.errors.append(
        f"{msg.text} @ {msg.location.get('url', '')}"))
    page.on("pageerror", lambda exc: rec.errors.append(f"pageerror: {exc}"))
    return rec


# ---------------------------------------------------------------- JupyterLab notebooks, as the browser shows them

# For each cell in the notebook's DOM (all of them are in it in Lab's default windowing mode, "contentVisibility"):
# index, kind, the input prompt ("[3]:", "[*]:", "[ ]:"), the text of each output shown as stderr (Lab renders
# errors that way, with the traceback), and how many images in the outputs have actually decoded.
CELLS_JS = """() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell')]
  .map(c => ({
    index: Number(c.dataset.windowedListIndex),
    kind: c.classList.contains('jp-CodeCell') ? 'code' : c.classList.contains('jp-MarkdownCell') ? 'markdown' : 'raw',
    rendered: c.classList.contains('jp-CodeCell') || !!c.querySelector('.jp-MarkdownOutput, .jp-RenderedMarkdown'),
    prompt: (c.querySelector('.jp-InputArea-prompt') || {}).textContent || '',
    stderr: [...c.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
        .map(o => o.textContent),
    images: [...c.querySelectorAll('.jp-OutputArea-output img')]
        .filter(i => i.complete && i.naturalWidth > 0).length,
})).sort((a, b) => a.index - b.index)"""

ERROR_LINE = re.compile(r"^\s*[\w.]*(Error|Exception|Interrupt|Exit)\b", re.M)


def error_outputs(cell):
    """The error outputs of CELL (a CELLS_JS row): stderr text with a traceback or an `XxxError:` line."""
    return [text for text in cell["stderr"] if "Traceback (most recent call last)" in text or ERROR_LINE.search(text)]


def open_notebook(rec, lab, path, num_cells):
    """Open PATH in a fresh Lab workspace and wait until its NUM_CELLS cells are shown and its kernel is idle."""
    page = rec.page
    workspace = re.sub(r"\W", "-", path)
    page.goto(f"{lab.base}/lab/workspaces/{workspace}/tree/{path}?token={lab.token}")
    page.wait_for_function(f"() => document.querySelectorAll('.jp-Notebook .jp-Cell').length === {num_cells}",
                           timeout=120_000)
    wait_kernel_idle(page, timeout=120_000)
    return cells(page)


def wait_kernel_idle(page, timeout):
    """Wait until the notebook's kernel indicator says idle and no cell is queued or running ([*])."""
    page.wait_for_function("""() => {
        const status = document.querySelector('.jp-Notebook-ExecutionIndicator');
        const busy = [...document.querySelectorAll('.jp-Notebook .jp-InputArea-prompt')]
            .some(p => p.textContent.includes('*'));
        return status && status.dataset.status === 'idle' && !busy;
    }""", timeout=timeout)


def cells(page):
    """Every cell of the open notebook as CELLS_JS reads it."""
    return page.evaluate(CELLS_JS)


def run_all_from_menu(page):
    """Run ▸ Run All Cells through Lab's menu bar; return the cells once the kernel has finished."""
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_function("() => [...document.querySelectorAll('.jp-Notebook .jp-InputArea-prompt')]"
                           ".some(p => /\\[(\\d+|\\*)\\]/.test(p.textContent))", timeout=60_000)
    wait_kernel_idle(page, timeout=RUN_TIMEOUT_MS)
    return cells(page)


def show(page, selector):
    """Scroll the first element matching SELECTOR to the middle of its scrolling area (for the screenshot)."""
    for _ in range(2):  # cells off screen have estimated heights until rendered: the second pass lands right
        page.locator(selector).first.evaluate("el => el.scrollIntoView({block: 'center'})")
        page.wait_for_timeout(500)


def open_dialogs(page):
    """Titles and text of the Lab dialogs and error notifications on screen."""
    return page.locator(".jp-Dialog, .Toastify__toast--error").all_inner_texts()
