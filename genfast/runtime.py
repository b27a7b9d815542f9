"""Where do kernels run: on a real GPU, or in the CPU interpreters?

Triton reads TRITON_INTERPRET and numba reads NUMBA_ENABLE_CUDASIM when they are
imported, so the decision has to be made before either is imported. Importing
`genfast` (as `autograder` and `kernels` do) calls `configure()`, so a notebook that starts with
`from genfast import checks` is set up correctly on a laptop, Colab or a GPU box.
"""
import os
import warnings


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def configure() -> None:
    """Use the CPU interpreters unless a CUDA GPU is there (COURSE_INTERPRET=1 forces them)."""
    if os.environ.get("COURSE_INTERPRET") == "1" or not cuda_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
        os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
    # Graded cells lose their points if anything reaches stderr (nbgrader's rule),
    # so library chatter that says nothing about the learner's code is silenced.
    for noisy in ("numba", "triton", "torch"):
        warnings.filterwarnings("ignore", module=noisy)


def on_gpu() -> bool:
    """True when kernels really run on a GPU (so timing them means something)."""
    return cuda_available() and os.environ.get("TRITON_INTERPRET") != "1"


def device() -> str:
    """The torch device for a lab's tensors: 'cuda' on a GPU, else 'cpu' (interpreter)."""
    return "cuda" if on_gpu() else "cpu"


def describe() -> str:
    if on_gpu():
        import torch
        where = f"GPU: {torch.cuda.get_device_name()} (kernels compiled and run on the device)"
    else:
        where = "CPU only: Triton kernels run in TRITON_INTERPRET=1, numba.cuda in NUMBA_ENABLE_CUDASIM=1"
    if os.environ.get("COURSE_SANDBOXED") == "1":
        where += "; graded in the course sandbox (no network, read-only files)"
    return where
