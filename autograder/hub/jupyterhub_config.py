"""The course's JupyterHub: each learner is a Unix user of the machine, logs in with their password
(PAM, a local authenticator) and gets JupyterLab as themselves, in their home, with nbgrader's
exchange and the nbgrader extensions of their role already set.

A hub of your own loads this file and names the class, in /etc/jupyterhub/jupyterhub_config.py:

    c = get_config()
    load_subconfig("/path/to/the/course/autograder/hub/jupyterhub_config.py")
    c.Authenticator.allowed_users = {"alice", "bob"}      # the class list: Unix users
    c.Authenticator.admin_users = {"ta"}                  # instructors (they get the formgrader)

and runs `jupyterhub -f /etc/jupyterhub/jupyterhub_config.py` as root (PAM and starting servers as
other users need it). tests/test_hub.py starts exactly this with real users and a real proxy.

How the roles are made: every single-user server gets JUPYTER_CONFIG_PATH, which Jupyter reads
before anything installed. Students get student/ (nbgrader's formgrader, create-assignment toolbar
and course list switched off, server side and in JupyterLab), instructors instructor/ (all on);
both then read common/, whose nbgrader_config.py names the course and the exchange. Nothing in the
installed environment is edited, so one environment serves both roles.
"""
import os

c = get_config()  # noqa: F821 (given by JupyterHub when it reads this file)
HERE = os.path.dirname(os.path.abspath(__file__))

c.JupyterHub.authenticator_class = "pam"            # Unix users and their passwords
c.JupyterHub.spawner_class = "localprocess"         # each server runs as its user, in their home
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
c.Spawner.start_timeout = 120                       # a cold server imports nbgrader, JupyterLab


def _config_path(spawner) -> str:
    """Instructors (the hub's admins) get the formgrader; everyone else is a student."""
    role = "instructor" if spawner.user.admin else "student"
    return os.pathsep.join([os.path.join(HERE, role), os.path.join(HERE, "common")])


c.Spawner.environment = {
    "JUPYTER_CONFIG_PATH": _config_path,
    # common/nbgrader_config.py reads it; /srv/nbgrader/exchange, mode 777, as nbgrader documents
    "COURSE_EXCHANGE_ROOT": os.environ.get("COURSE_EXCHANGE_ROOT", "/srv/nbgrader/exchange"),
}
