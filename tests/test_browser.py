"""The course as a learner meets it: JupyterLab in a real browser (issue 17, part 1).

The module starts one JupyterLab server on localhost (the course's kernel, nbgrader's server
extensions, settings in a scratch folder) and drives Debian's Chromium through Playwright:

- a released lab: Run All stops at the first check with the course's readable message; a first
  try pasted into the exercise cell (the browser's clipboard, Ctrl+A Ctrl+V) fails naming the
  case, the errors and the hint; the solution pasted in passes;
- every module's demo notebook in course/ runs, and moving one of its widgets changes the output;
- nbgrader's formgrader page lists the course's labs.

Each step saves a PNG screenshot under artifacts/browser/ (git-ignored) for a person to look at.
The notebooks are opened straight from labs/ and course/ as `make lab` does; autosave is off,
nothing is saved, and the server's log shows that no file was.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from helpers import free_port

pytestmark = pytest.mark.classroom

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts" / "browser"
MODULES = sorted(p.name for p in (ROOT / "course").iterdir() if (p / "demo.ipynb").exists())
LAB = "lab00_triton_warmup"  # the first lab: its first check runs in a fraction of a second

SHOTS = itertools.count(1)  # screenshots are numbered in the order the steps ran
TIMINGS: list[tuple[str, float]] = []
_last = [time.monotonic()]

STEP_MS = 30_000      # one click, one widget update, one page element (a loaded machine is slow)
RUN_ALL_MS = 240_000  # a whole notebook (01_generation and 06_agents take about 20 s on 2 idle cores)


def _chromium() -> str:
    """Debian's Chromium (the /usr/bin/chromium wrapper execs this binary); COURSE_CHROMIUM overrides."""
    for candidate in (os.environ.get("COURSE_CHROMIUM"), "/usr/lib/chromium/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("Chromium not found: `make system-deps` installs Debian's chromium package "
                "(or set COURSE_CHROMIUM to a Chromium binary)")


# ---------------------------------------------------------------------------------------------
# the server


class Server:
    def __init__(self, url: str, token: str, proc: subprocess.Popen, log: Path):
        self.url, self.token, self.proc, self.log = url, token, proc, log
        self.stopping: dict[str, threading.Thread] = {}  # session id: the thread stopping its kernel

    def api(self, method: str, path: str, timeout: float = 10):
        req = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self):
        """Stop every notebook's kernel (closing a tab in JupyterLab leaves its kernel running), in
        the background: the next test need not wait for a kernel's exit."""
        for session in self.api("GET", "sessions"):
            if session["id"] not in self.stopping:
                stop = threading.Thread(target=self.api, args=("DELETE", f"sessions/{session['id']}", 60), daemon=True)
                stop.start()
                self.stopping[session["id"]] = stop

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]


def _write_settings(folder: Path):
    """JupyterLab user settings for the test: no autosave (the notebooks are the repository's own),
    every cell in the page (no windowing, so the DOM holds the whole notebook), no news popup."""
    settings = {
        "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }
    for plugin, values in settings.items():
        path = folder / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    scratch = tmp_path_factory.mktemp("jupyterlab")
    _write_settings(scratch / "settings")
    (scratch / "grading").mkdir()
    env = dict(os.environ,
               JUPYTER_CONFIG_DIR=str(scratch / "config"),        # no user config of this machine
               JUPYTER_DATA_DIR=str(scratch / "data"),            # so the kernel is the venv's python3
               JUPYTER_RUNTIME_DIR=str(scratch / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(scratch / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(scratch / "workspaces"),
               COURSE_GRADING_DIR=str(scratch / "grading"),       # the formgrader's gradebook
               # the venv's bin/ first, as when it is activated: nbgrader runs `alembic` to create a gradebook
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    for var in ("COURSE_RELEASE_DIR", "COURSE_SANDBOX_RUNTIME", "COURSE_GRADER_KERNEL", "COURSE_PROFILE"):
        env.pop(var, None)  # a grading fixture of this test process may have set them: not the learner's
    token, port = secrets.token_hex(16), free_port()
    log = scratch / "server.log"
    # From the course root: nbgrader's server extensions read nbgrader_config.py from the working
    # folder, and the formgrader needs the course root inside the server's root.
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={ROOT}", "--ServerApp.allow_root=True",
           # checkpoints in the scratch folder: opening labs/ must leave the course's tree as it was
           f"--FileCheckpoints.checkpoint_dir={scratch / 'checkpoints'}"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    srv = Server(f"http://127.0.0.1:{port}", token, proc, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{srv.log_tail()}")
            try:
                srv.api("GET", "status", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer on {srv.url} within 120 s:\n{srv.log_tail()}")
                time.sleep(0.5)
        yield srv
    finally:
        _stop(srv)


def _stop(srv: Server):
    """Shut the server down through its API (it stops its kernels), then make sure of it."""
    import psutil

    for stop in srv.stopping.values():
        stop.join(timeout=60)
    try:
        children = psutil.Process(srv.proc.pid).children(recursive=True)  # the kernels, if any
    except psutil.Error:
        children = []
    try:
        srv.api("POST", "shutdown", timeout=30)
    except Exception:
        pass
    try:
        srv.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        srv.proc.kill()
        srv.proc.wait(timeout=10)
    for child in children:  # a kernel started with its own session is not in the server's group
        try:
            child.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(children, timeout=10)


# ---------------------------------------------------------------------------------------------
# the browser


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: `make setup` installs it (pyproject.toml)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=_chromium(), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module", autouse=True)
def artifacts():
    """A fresh screenshot folder per run, and timings.txt: how long each step took."""
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    _last[0] = time.monotonic()
    yield
    (ARTIFACTS / "timings.txt").write_text("".join(f"{s:7.1f} s  {name}\n" for name, s in TIMINGS))


@pytest.fixture(scope="module")
def lab_page(server, browser):
    """One JupyterLab page for the whole module: the app loads once (several seconds), and each
    test opens its notebook in it (File > Open from Path) as a learner would."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(STEP_MS)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = context.new_page()
    page.goto(f"{server.url}/lab?token={server.token}", timeout=120_000)
    page.wait_for_selector("#jp-main-statusbar", timeout=120_000)
    yield page
    context.close()


@pytest.fixture(scope="module")
def untouched(server):
    """The notebooks the browser opens are the repository's own: nothing may save them. The server
    logs every save ("Saving file at ..."), so its log says whether one happened."""
    yield
    saves = [line for line in server.log.read_text(errors="replace").splitlines() if "Saving file at" in line]
    assert not saves, f"the browser test saved files (autosave should be off): {saves}"


def shot(page, name: str, element=None):
    """Save a screenshot of the page as the learner sees it, with `element` scrolled into view."""
    if element is not None:
        element.scroll_into_view_if_needed()
    path = ARTIFACTS / f"{next(SHOTS):02d}-{name}.png"
    page.screenshot(path=str(path))
    now = time.monotonic()
    TIMINGS.append((path.name, now - _last[0]))  # since the previous screenshot
    _last[0] = now
    return path


PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook in the current tab


def menu(page, top: str, item: str):
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{re.escape(top)}$")).click()
    page.locator(".lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel",
                 has_text=re.compile(f"^{re.escape(item)}")).click()


def kernel_idle(page):
    page.wait_for_function("() => (document.querySelector('#jp-main-statusbar') || {}).innerText"
                           "?.includes('| Idle')", timeout=RUN_ALL_MS)


class Notebook:
    """The notebook open in the current tab."""

    def __init__(self, page, path: str):
        self.page, self.path = page, path
        self.panel = page.locator(PANEL)

    def cell(self, text: str):
        """The code cell whose source contains `text`."""
        return self.panel.locator(".jp-CodeCell", has=self.page.locator(".cm-content", has_text=text)).first

    def prompts(self) -> list[str]:
        return self.page.eval_on_selector_all(f"{PANEL} .jp-CodeCell .jp-InputArea-prompt", "ps => ps.map(p => p.textContent)")

    def run_all(self):
        """Run > Run All Cells, and wait until every cell has run or the run stopped at an error."""
        before = self.prompts()
        started = (f"before => {{ const now = [...document.querySelectorAll('{PANEL} .jp-CodeCell .jp-InputArea-prompt')]"
                   f".map(p => p.textContent); return now.some(t => t.includes('*')) || "
                   f"JSON.stringify(now) !== JSON.stringify(before) }}")
        for attempt in range(3):  # a menu click can land before the menu enables its item
            menu(self.page, "Run", "Run All Cells")
            try:
                self.page.wait_for_function(started, arg=before, timeout=10_000)
                break
            except Exception:
                if attempt == 2:
                    shot(self.page, "run-all-did-not-start")
                    raise AssertionError(f"{self.path}: Run All Cells did not start")
        try:
            self.page.wait_for_function(
                f"() => ![...document.querySelectorAll('{PANEL} .jp-InputArea-prompt')]"
                f".some(p => p.textContent.includes('*'))", timeout=RUN_ALL_MS, polling=250)
            kernel_idle(self.page)
        except Exception:
            shot(self.page, "run-all-still-running")
            raise AssertionError(f"{self.path}: still running after {RUN_ALL_MS // 1000} s "
                                 f"(prompts: {' '.join(self.prompts())})") from None

    def errors(self) -> list[tuple[int, str]]:
        """(code cell index, text) of every error shown, in notebook order."""
        return self.page.eval_on_selector_all(
            f"{PANEL} .jp-CodeCell",
            """cells => cells.flatMap((c, i) => [...c.querySelectorAll('.jp-OutputArea-output')]
                 .filter(o => o.getAttribute('data-mime-type') === 'application/vnd.jupyter.stderr'
                              && /Traceback|Error/.test(o.innerText))
                 .map(o => [i, o.innerText]))""")

    def paste(self, cell, code: str):
        """Select the cell's code and paste `code` over it, as a learner does with Ctrl+A, Ctrl+V."""
        editor = cell.locator(".cm-content")
        editor.click()
        self.page.keyboard.press("Control+A")
        # the browser's own clipboard (the test's context may write it) and the learner's keys: a
        # paste is one edit, with none of the auto-indent or bracket closing that typing would get
        self.page.evaluate("text => navigator.clipboard.writeText(text)", code)
        self.page.keyboard.press("Control+V")
        lines = "el => [...el.querySelectorAll('.cm-line')].map(l => l.textContent).join('\\n').trim()"
        try:
            self.page.wait_for_function(f"([el, code]) => ({lines})(el) === code",
                                        arg=[editor.element_handle(), code.strip()], timeout=STEP_MS)
        except Exception:
            raise AssertionError(f"the pasted cell reads:\n{editor.evaluate(lines)}") from None
        self.page.keyboard.press("Escape")  # back to command mode, as after typing


@pytest.fixture
def open_notebook(lab_page, server, untouched):
    """Open a notebook from the repository in the JupyterLab page; close it and stop its kernel after."""
    opened = []

    def open_(path: str) -> Notebook:
        menu(lab_page, "File", "Open from Path")
        lab_page.locator(".jp-Dialog input").fill(path)
        lab_page.locator(".jp-Dialog .jp-mod-accept").click()
        lab_page.wait_for_selector(f"{PANEL} .jp-Cell", timeout=60_000)
        kernel_idle(lab_page)  # the kernel has started
        nb = Notebook(lab_page, path)
        opened.append(nb)
        return nb

    yield open_
    try:
        for _ in opened:
            menu(lab_page, "File", "Close Tab")
            lab_page.locator(".jp-Dialog button", has_text="Discard").click()  # the outputs are not saved
            lab_page.locator(".jp-Dialog").wait_for(state="detached")
    except Exception:  # a failed step left the page in some state: start the next test from a fresh one
        lab_page.goto(f"{server.url}/lab?reset", timeout=120_000)  # reset: no tabs to restore
        lab_page.wait_for_selector("#jp-main-statusbar", timeout=120_000)
    finally:
        server.shutdown_kernels()


# ---------------------------------------------------------------------------------------------
# a released lab


def _solution(grade_id: str) -> str:
    from autograder import samples
    nb = nbformat.read(samples.notebook_path("solutions", LAB), as_version=4)
    [cell] = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    return samples.solution_code(cell.source)


def test_released_lab_first_check_then_solution(open_notebook):
    nb = open_notebook(f"labs/{LAB}/{LAB}.ipynb")
    check = nb.cell("lab.check_add(add)")
    exercise = nb.cell("def add_kernel(")

    # Run All: the run stops at the first check, whose message says what to do
    nb.run_all()
    errors = nb.errors()
    shot(nb.page, "lab-run-all-first-check-fails", check)
    assert errors, "Run All showed no error: the released lab's first check should fail"
    first_cell, text = errors[0]
    assert "lab.check_add(add)" in nb.panel.locator(".jp-CodeCell").nth(first_cell).inner_text(), \
        f"the first error is not the first check's:\n{text}"
    assert "CheckFailed: add is not implemented yet: replace `raise NotImplementedError()` under YOUR CODE HERE" \
        in text, f"the first check shows no readable message:\n{text}"
    assert not text.rstrip().endswith("NotImplementedError"), text
    assert nb.prompts()[-1].strip() == "[ ]:", "the run should stop at the failing check"

    # a first try that forgets the program's offset: the check names the case, the errors, the hint
    solution = _solution("add_kernel")
    first_try = solution.replace("pid * BLOCK_SIZE + tl.arange", "tl.arange")
    assert first_try != solution
    nb.paste(exercise, first_try)
    nb.run_all()
    _, text = nb.errors()[0]
    shot(nb.page, "lab-first-try-names-case-and-hint", check)
    for expected in ("CheckFailed: add, case 'n=4097': 2049 of 4097 values are wrong.",
                     "first bad index (2048)", "max abs error",
                     "hint: mask the lanes past n_elements in both tl.load and tl.store"):
        assert expected in text, f"missing {expected!r} in what the learner sees:\n{text}"

    # the solution pasted in: the check passes, and Run All goes on to the next exercise
    nb.paste(exercise, solution)
    nb.run_all()
    passed = check.locator(".jp-OutputArea-output").first.inner_text()
    shot(nb.page, "lab-solution-passes", check)
    assert "add: all 4 cases passed." in passed, passed
    first_cell, text = nb.errors()[0]
    assert "softmax is not implemented yet" in text, f"after add passes, the next check should fail:\n{text}"


# ---------------------------------------------------------------------------------------------
# the demos and their widgets

# per module: (control's description, what to do with it, text the new output shows or None)
WIDGET_MOVES = {
    "00_gpu_warmup": [("dtype", ("select", "fp32 (4 B)"), None), ("BLOCK_SIZE", ("key", "ArrowRight"), None)],
    "01_generation": [("n_chars", ("key", "Home"), None)],   # no continuation: the fastest update
    "02_attention": [("head", ("key", "ArrowRight"), None)],
    "03_linear_attention_mamba": [("t", ("key", "ArrowRight"), "t=31:")],
    "04_kv_cache": [("t", ("key", "ArrowLeft"), None)],
    "05_dataset_cards": [("policy", ("select", 1), None)],
    "06_agents": [("step", ("key", "ArrowRight"), "step 2 of")],
    "07_interpretability": [("position", ("key", "ArrowLeft"), None)],
    "08_serving": [("step", ("key", "ArrowRight"), None)],
}


DEFAULT_MOVE = [(None, ("key", "ArrowRight"), None)]  # a new module: its first slider, one step


def _control(nb: Notebook, description: str | None):
    """The widget control labelled `description` (in the first interact that has one; None: the
    first slider) and that interact's output area."""
    if description is None:
        interact = nb.panel.locator(".widget-interact", has=nb.page.locator(".widget-slider")).first
        return interact.locator(".widget-slider").first, interact.locator(".widget-output").first
    label = nb.page.locator(".widget-label", has_text=re.compile(f"^{re.escape(description)}$"))
    interact = nb.panel.locator(".widget-interact", has=label).first
    return interact.locator(".widget-inline-hbox", has=label).first, interact.locator(".widget-output").first


def shown(control) -> str:
    """What the control shows: the dropdown's choice or the slider's readout."""
    return control.evaluate("""el => { const s = el.querySelector('select'), r = el.querySelector('.widget-readout');
                                       return s ? s.value : r ? r.textContent : el.innerText; }""")


# true once the element's HTML has not changed for 0.5 s, its images are decoded and the kernel is idle
SETTLED = """el => {
    const html = el.innerHTML, now = Date.now();
    const ready = [...el.querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0);
    const idle = (document.querySelector('#jp-main-statusbar') || {}).innerText?.includes('| Idle');
    if (html !== el.__html || !ready || !idle) { el.__html = html; el.__since = now; return false; }
    return now - el.__since > 500;
}"""


def settle(output):
    """Wait until an interact's output is rendered and stays still (a widget update clears the
    output, then the kernel sends the new plot and text one message at a time)."""
    output.locator(".jp-OutputArea-output").first.wait_for(timeout=60_000)
    output.page.wait_for_function(SETTLED, arg=output.element_handle(), timeout=RUN_ALL_MS, polling=100)


@pytest.mark.parametrize("module", MODULES)
def test_demo_runs_and_widgets_respond(open_notebook, module):
    nb = open_notebook(f"course/{module}/demo.ipynb")
    nb.run_all()
    errors = nb.errors()
    first = nb.panel.locator(".widget-interact").first
    first.wait_for()
    settle(first.locator(".widget-output").first)
    shot(nb.page, f"{module}-ran", first)
    assert not errors, f"{module}: the demo shows errors:\n" + "\n".join(t for _, t in errors)
    not_run = [p for p in nb.prompts() if not re.fullmatch(r"\[\d+\]:", p.strip())]
    assert not not_run, f"{module}: Run All left cells unrun: {nb.prompts()}"

    for description, (action, value), expected in WIDGET_MOVES.get(module, DEFAULT_MOVE):
        control, output = _control(nb, description)
        description = description or "slider"
        settle(output)
        before, shown_before = output.inner_html(), shown(control)
        if action == "select":
            select = control.locator("select")
            select.select_option(index=value) if isinstance(value, int) else select.select_option(label=value)
        else:  # the slider's handle takes the keyboard: one step (Home: to its minimum)
            control.locator(".noUi-handle").focus()
            nb.page.keyboard.press(value)
        changed = "([el, before]) => el.innerHTML !== before && el.querySelector('.jp-OutputArea-output') !== null"
        try:
            nb.page.wait_for_function(changed, arg=[output.element_handle(), before], timeout=60_000)
            settle(output)
        except Exception:
            shot(nb.page, f"{module}-{description}-no-change", control)
            raise AssertionError(f"{module}: the output did not change after {action} {value!r} on "
                                 f"{description!r} (the control shows {shown(control)!r})")
        shot(nb.page, f"{module}-{description}-moved", control)
        assert shown(control) != shown_before, f"{module}: {description!r} still shows {shown_before!r}"
        assert output.inner_html() != before
        if expected is not None:
            assert expected in output.inner_text(), f"{module}: expected {expected!r} in\n{output.inner_text()}"


# ---------------------------------------------------------------------------------------------
# the formgrader


def test_formgrader_lists_the_labs(server, browser):
    from autograder import grading

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.set_default_timeout(STEP_MS)
        page.goto(f"{server.url}/formgrader?token={server.token}", timeout=60_000)
        table = page.locator("#main-table")
        labs = grading.all_labs()
        for lab in labs:
            table.get_by_text(lab, exact=True).wait_for(timeout=60_000)
        shot(page, "formgrader-lists-the-labs")
        listed = table.inner_text()
        assert all(lab in listed for lab in labs), listed
    finally:
        page.close()
