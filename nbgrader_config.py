# nbgrader reads this file from the course root; the settings live in autograder/config.py.
from autograder.config import apply

c = get_config()  # noqa: F821 (provided by nbgrader)
apply(c)
