"""The course's grading machinery: checks, benchmarks, nbgrader pipeline and CLI.

Importing it decides, once, whether kernels run on a GPU or in the CPU interpreters.
"""
from . import runtime

runtime.configure()
