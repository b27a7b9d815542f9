"""Where there is no GPU, a speed cell shows what the learner's own kernel compiles to on an
A100 and an H100 (registers, spills, shared memory, blocks per SM, tensor-core instructions),
next to the reference kernel's shipped figures (genfast/compile_info.py)."""
import importlib.util
import textwrap

import pytest

from genfast import bench, compile_info
from genfast.compile_info import KernelSignature

KERNELS = '''
import triton
import triton.language as tl

SCALE = tl.constexpr(2.0)


@triton.jit
def _twice(x):
    return x * SCALE


@triton.jit
def scale_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, _twice(tl.load(x_ptr + offs, mask=offs < n)), mask=offs < n)


@triton.jit
def broken_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, n)  # not a constexpr: no GPU compiler accepts this
    tl.store(out_ptr + offs, tl.load(x_ptr + offs))


def scale(x):
    return x
'''
SIGNATURE = KernelSignature("scale_kernel", {"x_ptr": "*fp32", "out_ptr": "*fp32"},
                            lambda: [dict(BLOCK=1024, num_warps=4)], reference="vector_add.add_kernel (reference)")


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    """The kernels as a learner's notebook defines them: interpreted (TRITON_INTERPRET=1)."""
    path = tmp_path_factory.mktemp("nb") / "learner_cells.py"
    path.write_text(textwrap.dedent(KERNELS))
    spec = importlib.util.spec_from_file_location("learner_cells", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_blocks_per_sm_follows_registers_shared_memory_and_threads():
    assert compile_info.blocks_per_sm(32, 0, 8, "sm_90") == 8        # 2048 threads / 256
    assert compile_info.blocks_per_sm(255, 0, 8, "sm_90") == 1       # 8192 registers a warp x 8 warps
    assert compile_info.blocks_per_sm(128, 0, 4, "sm_80") == 4       # 4096 x 4 = 16384 registers a block
    assert compile_info.blocks_per_sm(32, 100 * 1024, 4, "sm_90") == 2  # 228 KB / 101 KB
    assert compile_info.blocks_per_sm(32, 100 * 1024, 4, "sm_80") == 1  # 164 KB / 101 KB


def test_the_source_holds_the_kernel_its_helpers_and_constants(notebook):
    source = compile_info.kernel_source(notebook.scale_kernel)
    assert "def scale_kernel" in source and "def _twice" in source and "SCALE = tl.constexpr(2.0)" in source
    assert "def broken_kernel" not in source  # only what the kernel reaches


def test_the_learners_kernel_is_compiled_for_both_gpus_next_to_the_reference(notebook):
    builds = compile_info.compile_kernel(notebook.scale_kernel, SIGNATURE)
    assert {b.target for b in builds} == {"sm_80", "sm_90"}
    assert all(not b.error and b.registers > 0 and b.spill_bytes == 0 for b in builds), builds
    text = compile_info.laptop_report(notebook.scale_kernel, SIGNATURE)
    assert "launch config BLOCK=1024 num_warps=4" in text
    assert text.count("yours:") == 2 and text.count("reference:") == 2, text
    assert "H100 (sm_90)" in text and "A100 (sm_80)" in text and "blocks per SM" in text
    # the shipped reference row agrees with this config on every setting both name (num_warps=4 vs 8: none)
    assert "no figures shipped" in text


def test_a_kernel_that_does_not_compile_says_why_and_raises_nothing(notebook):
    broken = KernelSignature("broken_kernel", SIGNATURE.pointers, SIGNATURE.configs)
    text = compile_info.laptop_report(notebook.broken_kernel, broken)
    assert "does not compile" in text and "cannot be graded for speed" in text, text


def test_the_speed_cell_prints_it_on_a_cpu_but_not_when_graded(notebook, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_COMPILE_FEEDBACK", "1")
    monkeypatch.delenv("COURSE_GRADING", raising=False)
    assert bench.speed_points(notebook.scale, None, points=1, name="scale", signature=SIGNATURE) == 0.0
    out = capsys.readouterr().out
    assert "skipped: no GPU here" in out and "What your scale_kernel compiles to on real GPUs" in out
    assert "yours:" in out
    monkeypatch.setenv("COURSE_GRADING", "1")
    assert bench.speed_points(notebook.scale, lambda: None, points=1, name="scale", signature=SIGNATURE) == 0.0
    assert "compiles to" not in capsys.readouterr().out
    monkeypatch.delenv("COURSE_GRADING")
    monkeypatch.setenv("COURSE_COMPILE_FEEDBACK", "0")
    bench.speed_points(notebook.scale, None, points=1, name="scale", signature=SIGNATURE)
    assert "compiles to" not in capsys.readouterr().out


def test_no_kernel_of_that_name_is_a_message(capsys, monkeypatch):
    monkeypatch.setenv("COURSE_COMPILE_FEEDBACK", "1")
    monkeypatch.delenv("COURSE_GRADING", raising=False)
    bench.speed_points(lambda: None, None, points=1, name="scale", signature=SIGNATURE)
    assert "no @triton.jit function named scale_kernel" in capsys.readouterr().out
