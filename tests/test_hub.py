"""The course's JupyterHub, started for real: autograder/hub/jupyterhub_config.py, Debian's
configurable-http-proxy, PAM logins of real Unix users (an instructor and two students, made here),
and JupyterLab servers the hub starts as each of them.

What a class meets: a wrong password is refused, a student's server opens JupyterLab in their home
with the Assignments tab (nbgrader's assignment list, the course id and exchange from the hub's
settings) but no formgrader, neither in the server nor in JupyterLab; through that tab's own REST
calls the student fetches the released lab and submits it into the exchange; another student
cannot open that student's server; the instructor's server has the formgrader.
"""
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import nbformat
import pytest
import requests

from autograder import config
from classroom import HUB_SETTINGS, classroom as make_classroom
from helpers import free_port

pytestmark = pytest.mark.classroom

ROOT = config.ROOT
LAB = "lab00_triton_warmup"
PROXY = "configurable-http-proxy"
DEBIAN_NODE_MODULES = "/usr/share/nodejs"  # Debian's proxy finds its modules there with any node


@pytest.fixture(scope="module")
def classroom():
    if not shutil.which(PROXY):
        pytest.skip(f"{PROXY} is missing (Debian: apt-get install node-configurable-http-proxy; `make system-deps`)")
    with make_classroom("course-hub-") as made:
        c, users = made, made["users"]
        # the instructor releases the lab into the exchange, as in the README's walk-through
        as_ta = dict(cwd=ROOT, env=c["course_env"], sees_course=True)
        users.nbgrader(c["instructor"], "generate_assignment", LAB, "--force", **as_ta)
        users.nbgrader(c["instructor"], "release_assignment", LAB, **as_ta)
        yield made


@pytest.fixture(scope="module")
def hub(classroom):
    """The hub, as root in a namespace that shows the Python environment and the hub's settings
    (so the servers it starts as each user see them too); stopped with everything it started."""
    c, users = classroom, classroom["users"]
    folder = c["base"] / "hub"
    folder.mkdir()
    folder.chmod(0o700)
    port, hub_port, api_port = free_port(), free_port(), free_port()
    (folder / "jupyterhub_config.py").write_text(f"""\
c = get_config()
load_subconfig({str(HUB_SETTINGS / "jupyterhub_config.py")!r})
c.Authenticator.allowed_users = {{{c["alice"]!r}, {c["bob"]!r}}}
c.Authenticator.admin_users = {{{c["instructor"]!r}}}
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
""")
    command, env, stash = users.namespaced(
        None, [users.python / "bin" / "jupyterhub", "-f", folder / "jupyterhub_config.py"],
        env=dict(NODE_PATH=DEBIAN_NODE_MODULES), sees_course=False)
    log = open(folder / "hub.log", "w")
    proc = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: requests.get(f"{url}/hub/health", timeout=5).status_code == 200, proc, folder, "the hub to start")
        shutil.rmtree(stash, ignore_errors=True)
        yield dict(url=url, log=folder / "hub.log", proc=proc, folder=folder)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the hub stops the servers it started and its proxy
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):  # whatever of its session is left
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _wait(ready, proc, folder: Path, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the hub exited while waiting for {what}:\n{(folder / 'hub.log').read_text()[-4000:]}"
        try:
            if ready():
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}:\n{(folder / 'hub.log').read_text()[-4000:]}")


def _cookie(session: requests.Session, name: str, path_prefix: str) -> str:
    """The cookie `name` set for the longest path that `path_prefix` starts with."""
    found = sorted((c for c in session.cookies if c.name == name and path_prefix.startswith(c.path)),
                   key=lambda c: len(c.path))
    assert found, f"no {name} cookie for {path_prefix}: {[(c.name, c.path) for c in session.cookies]}"
    return found[-1].value


def _log_in(url: str, user: str, password: str) -> tuple[requests.Session, requests.Response]:
    session = requests.Session()
    session.get(f"{url}/hub/login", timeout=30)
    response = session.post(f"{url}/hub/login", timeout=60, allow_redirects=False,
                            data=dict(username=user, password=password, _xsrf=_cookie(session, "_xsrf", "/hub/")))
    return session, response


def _lab_page(hub: dict, session: requests.Session, user: str) -> str:
    """Start `user`'s server (as the hub's home page does) and open JupyterLab on it."""
    session.get(f"{hub['url']}/hub/spawn/{user}", timeout=60)
    page = {}

    def opened() -> bool:
        r = session.get(f"{hub['url']}/user/{user}/lab", timeout=30)
        page["html"] = r.text
        return r.status_code == 200 and r.url.endswith(f"/user/{user}/lab") and "jupyter-config-data" in r.text
    _wait(opened, hub["proc"], hub["folder"], f"{user}'s JupyterLab")
    return page["html"]


def _page_config(html: str) -> dict:
    found = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', html, re.S)
    assert found, "JupyterLab's page has no config"
    return json.loads(found.group(1))


def _nbgrader_call(hub: dict, session: requests.Session, user: str, action: str | None = None) -> list | str:
    """What JupyterLab's Assignments tab calls: the list, or fetch/submit of the lab."""
    base = f"{hub['url']}/user/{user}/assignments"
    if action is None:
        r = session.get(base, params=dict(course_id=config.COURSE_ID), timeout=60)
    else:
        r = session.post(f"{base}/{action}", data=dict(course_id=config.COURSE_ID, assignment_id=LAB), timeout=120,
                         headers={"X-XSRFToken": _cookie(session, "_xsrf", f"/user/{user}/")})
    assert r.status_code == 200, (action, r.status_code, r.text[:2000])
    answer = r.json()
    assert answer["success"], f"{action or 'list'} failed for {user}: {answer.get('value')}"
    return answer["value"]


def _statuses(listing: list) -> dict:
    return {a["assignment_id"]: a["status"] for a in listing if a["course_id"] == config.COURSE_ID}


def test_a_wrong_password_is_refused(classroom, hub):
    _, response = _log_in(hub["url"], classroom["alice"], "not-" + classroom["users"].passwords[classroom["alice"]])
    assert response.status_code == 403 and "Invalid username or password" in response.text, response.status_code


def test_a_student_fetches_and_submits_from_the_hub(classroom, hub):
    c = classroom
    alice, bob = c["alice"], c["bob"]
    session, response = _log_in(hub["url"], alice, c["users"].passwords[alice])
    assert response.status_code == 302, (response.status_code, response.text[:1000])

    page = _page_config(_lab_page(hub, session, alice))
    disabled = page.get("disabledExtensions", [])
    for plugin in ("@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:create-assignment"):
        assert plugin in disabled, f"{plugin} is not switched off in a student's JupyterLab: {disabled}"
    assert "@jupyter/nbgrader:assignment-list" not in disabled
    assert session.get(f"{hub['url']}/user/{alice}/formgrader", timeout=30).status_code == 404

    assert _statuses(_nbgrader_call(hub, session, alice)) == {LAB: "released"}
    _nbgrader_call(hub, session, alice, "fetch")
    home = Path(c["users"].base / "home" / alice)
    fetched = home / LAB / f"{LAB}.ipynb"
    assert fetched.stat().st_uid == os.stat(home).st_uid, "the fetched lab belongs to the student"
    released = nbformat.read(c["exchange"] / config.COURSE_ID / "outbound" / LAB / f"{LAB}.ipynb", as_version=4)
    assert nbformat.read(fetched, as_version=4).cells == released.cells
    assert _statuses(_nbgrader_call(hub, session, alice)) == {LAB: "fetched"}
    _nbgrader_call(hub, session, alice, "submit")
    inbound = [p.name for p in (c["exchange"] / config.COURSE_ID / "inbound").iterdir()]
    assert [n for n in inbound if n.startswith(f"{alice}+{LAB}+")], inbound

    # bob, logged in, cannot open alice's server
    bobs, response = _log_in(hub["url"], bob, c["users"].passwords[bob])
    assert response.status_code == 302
    r = bobs.get(f"{hub['url']}/user/{alice}/lab", timeout=30)
    assert not (r.status_code == 200 and r.url.endswith(f"/user/{alice}/lab")), "bob opened alice's JupyterLab"
    assert r.status_code in (403, 404) or "/hub/" in r.url, (r.status_code, r.url)


def test_the_instructor_has_the_formgrader(classroom, hub):
    ta = classroom["instructor"]
    session, response = _log_in(hub["url"], ta, classroom["users"].passwords[ta])
    assert response.status_code == 302
    disabled = _page_config(_lab_page(hub, session, ta)).get("disabledExtensions", [])
    assert not [p for p in disabled if p.startswith("@jupyter/nbgrader:")], disabled
    r = session.get(f"{hub['url']}/user/{ta}/formgrader", timeout=60)
    assert r.status_code == 200 and "formgrader" in r.text.lower(), (r.status_code, r.text[:500])
