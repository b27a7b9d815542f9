"""genfast: what a learner installs to do the labs of "How LLMs generate text, and how to make that fast".

Checks, the runtime switch (GPU or CPU interpreters), the benchmark helper, the code
policy, each lab's check helpers and fixtures, and the shipped models, checkpoints and
environments. No implementation of anything a lab grades lives here: the reference
kernels and answer-equal references are the instructor's (`kernels/`, not installed
with this package). Importing genfast decides, once, whether kernels run on a GPU or
in the CPU interpreters.
"""
from . import runtime

runtime.configure()
