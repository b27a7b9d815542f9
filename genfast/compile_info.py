"""What a Triton kernel compiles to on a real GPU, found on any machine, GPU or not.

Triton compiles ahead of time without a GPU: `triton.compile(ASTSource(fn, signature,
constexprs), target=GPUTarget("cuda", 90, 32))` builds PTX and a cubin on a laptop, and the
`cuobjdump` that ships inside the triton wheel reads the cubin's registers, stack (register
spills), shared memory and SASS, where tensor-core instructions (HMMA on sm_80, HGMMA on sm_90)
can be counted. From registers and shared memory follows how many blocks of the kernel one SM
holds at once (occupancy).

This is the feedback a speed cell gives where there is no GPU: the learner's own kernel,
compiled for an A100 and an H100, next to the reference kernel's figures at the same launch
configuration (shipped in genfast/fixtures/compile_reference.json, written by
`python -m autograder compile-report --write-reference`). The course's compile report
(autograder/compile_report.py) uses the same functions for every kernel of the course.

Triton decides when it is imported whether `@triton.jit` interprets (TRITON_INTERPRET=1), so
a kernel defined in an interpreting notebook is compiled from its source in a fresh process.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import inspect
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

TARGETS = {"sm_80": 80, "sm_90": 90}
LAUNCH_OPTIONS = ("num_warps", "num_stages")
# per SM: registers, resident threads, resident blocks, shared memory a kernel may use (bytes)
SM_LIMITS = {"sm_80": dict(gpu="A100", registers=65536, threads=2048, blocks=32, shared=164 * 1024),
             "sm_90": dict(gpu="H100", registers=65536, threads=2048, blocks=32, shared=228 * 1024)}
REFERENCE_FIGURES = Path(__file__).parent / "fixtures" / "compile_reference.json"
COMPILE_TIMEOUT_S = 300


@dataclass
class KernelSignature:
    """How to compile one kernel of a lab: its argument types and its launch configurations on a
    GPU (the launcher's), and the compile report's name of the reference it races."""
    name: str                                         # the @triton.jit function's name in the notebook
    pointers: dict[str, str]                          # pointer arguments -> "*fp16", "*fp32", "*i64", ...
    configs: Callable[[], list[dict]]                 # constexprs + num_warps / num_stages, as on a GPU
    scalars: dict[str, str] = field(default_factory=dict)  # non-i32 scalar arguments -> "fp32", "i64"
    reference: str = ""                               # the reference kernel's name in the compile report

    def where(self, **settings) -> "KernelSignature":
        """The same kernel at only the configurations with these settings (a speed cell's own)."""
        configs = self.configs
        return dataclasses.replace(self, configs=lambda: [c for c in configs()
                                                          if all(c.get(k) == v for k, v in settings.items())])


@dataclass
class Build:
    """What one compiled kernel uses, per thread block."""
    target: str
    config: dict
    registers: int = -1
    spill_bytes: int = -1
    shared_bytes: int = -1
    mma_instructions: int = -1
    error: str = ""

    @property
    def blocks_per_sm(self) -> int:
        return blocks_per_sm(self.registers, self.shared_bytes, self.config.get("num_warps", 4), self.target)


@contextlib.contextmanager
def as_on_gpu():
    """Evaluate launch-configuration functions as they would on a GPU."""
    from . import runtime
    saved = runtime.on_gpu
    runtime.on_gpu = lambda: True
    try:
        yield
    finally:
        runtime.on_gpu = saved


def gpu_configs(signature: KernelSignature) -> list[dict]:
    with as_on_gpu():
        return [dict(c) for c in signature.configs()]


def blocks_per_sm(registers: int, shared_bytes: int, num_warps: int, target: str) -> int:
    """Resident blocks per SM: limited by registers (allocated per warp in units of 256), shared
    memory (1 KB reserved per block), threads and the block limit."""
    limits = SM_LIMITS[target]
    per_warp = math.ceil(max(registers, 1) * 32 / 256) * 256
    by_registers = limits["registers"] // (per_warp * num_warps)
    by_shared = limits["shared"] // (shared_bytes + 1024) if shared_bytes else limits["blocks"]
    return min(by_registers, by_shared, limits["threads"] // (32 * num_warps), limits["blocks"])


# compiling ----------------------------------------------------------------------------------
def _tools() -> Path:
    import triton
    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin"


def signature_of(fn, pointers: dict[str, str], scalars: dict[str, str], config: dict) -> tuple[dict, dict]:
    """Triton's (signature, constexprs) for `fn` from the argument types and a configuration."""
    signature, constexprs = {}, {}
    for name, param in zip(fn.arg_names, fn.params):
        if param.is_constexpr:
            signature[name] = "constexpr"
            if name in config:
                constexprs[name] = config[name]
            elif param.default is not inspect.Parameter.empty:
                constexprs[name] = param.default
        else:
            signature[name] = pointers.get(name) or scalars.get(name) or "i32"
    return signature, constexprs


def alignment_hints(signature: dict) -> dict:
    """Every pointer argument is 16-byte aligned, as each torch allocation is and as a real launch
    tells the compiler (vectorised and asynchronous loads depend on it). Integer arguments get no
    hint: a launch may also learn that N or a stride is a multiple of 16, so figures here are for
    the general case."""
    return {(i,): [["tt.divisibility", 16]] for i, kind in enumerate(signature.values()) if kind.startswith("*")}


def compile_one(fn, signature: dict, constexprs: dict, target: str, options: dict):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    source = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=alignment_hints(signature))
    return triton.compile(source, target=GPUTarget("cuda", TARGETS[target], 32), options=options)


def resources(cubin: bytes) -> tuple[int, int, int, int]:
    """(registers, stack bytes, shared bytes, tensor-core instructions) read from a cubin."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        usage = subprocess.run([str(_tools() / "cuobjdump"), "-res-usage", f.name],
                               capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([str(_tools() / "cuobjdump"), "-sass", f.name],
                              capture_output=True, text=True, check=True).stdout
    # one "Function" line per kernel in the cubin; the kernel itself is the one with most registers
    found = [tuple(int(x) for x in m) for m in re.findall(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", usage)]
    regs, stack, shared, local = max(found) if found else (0, 0, 0, 0)
    mma = len(re.findall(r"\b(HMMA|HGMMA|IMMA|QGMMA)\b", sass))
    return regs, max(stack, local), shared, mma


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def build(fn, pointers: dict, scalars: dict, config: dict, target: str) -> Build:
    """Compile `fn` (a JITFunction, Triton not interpreting) at one configuration for one target."""
    options = {k: config[k] for k in LAUNCH_OPTIONS if k in config}
    constexpr_config = {k: v for k, v in config.items() if k not in LAUNCH_OPTIONS}
    signature, constexprs = signature_of(fn, pointers, scalars, constexpr_config)
    try:
        kernel = compile_one(fn, signature, constexprs, target, options)
        regs, spill, _, mma = resources(kernel.asm["cubin"])
        return Build(target, config, regs, spill, kernel.metadata.shared, mma)
    except Exception as exc:  # a kernel that does not compile is a build that says why
        return Build(target, config, error=first_line(exc))


# a notebook's kernel, compiled in a fresh process ---------------------------------------------
def kernel_source(kernel) -> str:
    """A module's source holding `kernel` and every @triton.jit function and tl.constexpr global
    it reaches, from the learner's own definitions (decorators replaced by a plain @triton.jit)."""
    import triton.language as tl
    parts, constants, seen = [], [], set()

    def visit(jit):
        fn = jit.fn
        if fn.__name__ in seen:
            return
        seen.add(fn.__name__)
        source = textwrap.dedent(inspect.getsource(fn))
        node = ast.parse(source).body[0]
        body = "\n".join(source.splitlines()[node.lineno - 1:])  # from the `def` line: no autotune decorator
        parts.append("@triton.jit\n" + body)
        for name in fn.__code__.co_names:
            value = fn.__globals__.get(name)
            if hasattr(value, "fn") and hasattr(value, "arg_names"):  # another jit function
                visit(value)
            elif isinstance(value, tl.constexpr) and name not in seen:
                seen.add(name)
                constants.append(f"{name} = tl.constexpr({value.value!r})")

    visit(_jit_function(kernel))
    return "\n\n\n".join(["import math\nimport triton\nimport triton.language as tl", "\n".join(constants)]
                         + parts[::-1]) + "\n"


def find_kernel(learner_fn, signature: KernelSignature):
    """The learner's kernel: the global named `signature.name` where `learner_fn` was defined."""
    if hasattr(learner_fn, "arg_names") or hasattr(getattr(learner_fn, "fn", None), "arg_names"):
        return learner_fn  # the kernel itself
    kernel = getattr(learner_fn, "__globals__", {}).get(signature.name)
    return kernel if hasattr(kernel, "fn") else None


def _jit_function(kernel):
    while not hasattr(kernel, "arg_names"):  # an autotuner or heuristics wraps the jit function
        kernel = kernel.fn
    return kernel


def compile_kernel(kernel, signature: KernelSignature, targets=tuple(TARGETS),
                   timeout: float = COMPILE_TIMEOUT_S) -> list[Build]:
    """Build a notebook's kernel at each of its signature's GPU configurations, for each target,
    in a fresh process where Triton compiles (the notebook's Triton may be interpreting)."""
    configs = gpu_configs(signature)
    job = dict(source=kernel_source(kernel), name=signature.name, pointers=signature.pointers,
               scalars=signature.scalars, configs=configs, targets=list(targets))
    with tempfile.TemporaryDirectory(prefix="genfast-compile-") as folder:
        (Path(folder) / "job.json").write_text(json.dumps(job))
        env = dict(os.environ, TRITON_INTERPRET="0")
        proc = subprocess.run([sys.executable, "-m", "genfast.compile_info", folder], env=env, capture_output=True,
                              text=True, timeout=timeout)
        out = Path(folder) / "builds.json"
        if not out.exists():
            tail = (proc.stderr.strip().splitlines() or ["the compiler process stopped"])[-1]
            return [Build(t, c, error=tail[:200]) for c in configs for t in targets]
        return [Build(**b) for b in json.loads(out.read_text())]


def _run_job(folder: str) -> None:
    """The fresh process's side: load the source as a module, build every (config, target)."""
    import importlib.util
    job = json.loads((Path(folder) / "job.json").read_text())
    path = Path(folder) / "learner_kernel.py"  # triton.jit reads the source from a file
    path.write_text(job["source"])
    builds = []
    try:
        spec = importlib.util.spec_from_file_location("learner_kernel", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        fn = getattr(module, job["name"])
        builds = [build(fn, job["pointers"], job["scalars"], config, target)
                  for config in job["configs"] for target in job["targets"]]
    except Exception as exc:
        builds = [Build(t, c, error=first_line(exc)) for c in job["configs"] for t in job["targets"]]
    (Path(folder) / "builds.json").write_text(json.dumps([asdict(b) for b in builds]))


# the reference's figures, shipped ----------------------------------------------------------
def reference_build(reference: str, target: str, config: dict) -> Build | None:
    """The shipped figures of reference kernel `reference` at the configuration that agrees with
    `config` on every setting both name."""
    if not REFERENCE_FIGURES.exists():
        return None
    for row in json.loads(REFERENCE_FIGURES.read_text()).get(reference, []):
        if row["target"] == target and all(row["config"][k] == v for k, v in config.items() if k in row["config"]):
            return Build(**row)
    return None


def _summary(build: Build | None, show_mma: bool) -> str:
    if build is None:
        return "(no figures shipped for this configuration)"
    if build.error:
        return f"does not compile: {build.error}"
    spill = "no spills" if build.spill_bytes == 0 else f"SPILLS {build.spill_bytes} bytes"
    mma = f", {build.mma_instructions} tensor-core instructions" if show_mma else ""
    return (f"{build.registers:>3} registers, {spill}, {build.shared_bytes / 1024:.0f} KB shared memory, "
            f"{build.blocks_per_sm} block{'' if build.blocks_per_sm == 1 else 's'} per SM{mma}")


def describe(config: dict) -> str:
    """A launch configuration as one line, `BLOCK=1024 num_warps=4` (the compile report's too)."""
    return " ".join(f"{k}={v}" for k, v in config.items())


def laptop_report(kernel, signature: KernelSignature, targets=tuple(TARGETS)) -> str:
    """The learner's kernel as compiled for real GPUs, next to the reference's figures."""
    builds = compile_kernel(kernel, signature, targets)
    lines = []
    for config in gpu_configs(signature):
        lines.append(f"  launch config {describe(config)}")
        for b in (b for b in builds if b.config == config):
            ref = reference_build(signature.reference, b.target, config) if signature.reference else None
            show_mma = b.mma_instructions > 0 or (ref is not None and ref.mma_instructions > 0)
            gpu = f"{SM_LIMITS[b.target]['gpu']} ({b.target})"
            lines.append(f"    {gpu:<13} yours:     {_summary(b, show_mma)}")
            if signature.reference:
                lines.append(f"    {'':<13} reference: {_summary(ref, show_mma)}")
    advice = []
    if any(b.error for b in builds):
        advice.append("a kernel that does not compile for a GPU cannot be graded for speed: the message above says why")
    if any(b.spill_bytes > 0 for b in builds):
        advice.append("spilled registers live in slow local memory: smaller tiles, fewer live tensors "
                      "or more warps usually remove them")
    return "\n".join(lines + [f"  note: {a}" for a in advice])


def main(argv=None) -> None:
    _run_job((argv or sys.argv[1:])[0])


if __name__ == "__main__":
    main()
