"""Reference kernels (Triton, numba-cuda) and their plain PyTorch references.

One module per kernel: the kernel, its launcher, and `torch_*` reference in one place.
Importing the package sets up the CPU interpreters when no GPU is present.
"""
from genfast import runtime

runtime.configure()
