"""The course's grading machinery (instructor side): nbgrader pipeline, sandbox, code policy
enforcement, the hidden-test seam to the reference kernels, similarity report and CLI.

The learner-side pieces it grades with (checks, runtime, bench, policy) live in `genfast`.
Importing this package imports nothing heavy: nbgrader loads `autograder.config` from
nbgrader_config.py, and the sandbox launcher is `python -m autograder.sandbox`, both once per
submission, neither needing torch. The modules that run kernels import `genfast` (or
`kernels`, which imports it) first, which picks the GPU or the CPU interpreters.
"""
