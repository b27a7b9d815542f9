"""The course's grading machinery (instructor side): nbgrader pipeline, sandbox, code policy
enforcement, the hidden-test seam to the reference kernels, similarity report and CLI.

The learner-side pieces it grades with (checks, runtime, bench, policy) live in `genfast`.
"""
import genfast  # noqa: F401  (picks GPU or CPU interpreters before anything imports triton)
