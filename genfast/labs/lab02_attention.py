"""Checks for lab02_attention: naive and multi-head attention, the cost model, RoPE, the
FlashAttention forward kernel, the backward pass from the saved LSE in PyTorch, and the
FlashAttention backward in Triton (the dK/dV and dQ kernels, and a model trained through them).

Every spec of this lab is itself a graded function (naive attention is what the learner
writes, and the spec of the others), so the visible checks compare with expected outputs
shipped in genfast/fixtures/lab02_attention.pt, computed by the instructor's references on
the cases below. The grader passes those references in as `reference` and then checks any
case, the hidden ones too. The Triton backward is checked against torch.autograd through
torch's own attention (F.scaled_dot_product_attention), computed in the check: that is no
answer to any of the lab's functions. Also here: the launch configurations of the given
FlashAttention launchers (`block_config`, `backward_block_config`, shared with the reference
kernels) and the memory formula of FlashAttention for the plot.
"""
import math
import os

import torch
import torch.nn.functional as F

from genfast import bench, checks, fixtures, runtime
from genfast.compile_info import KernelSignature

LAB = "lab02_attention"


# launch configuration and sizes ---------------------------------------------------------
def block_config(head_dim: int, causal: bool) -> dict:
    """A fixed launch configuration: H100-class tiles on a GPU, small tiles in the interpreter
    (there an N = 50 test needs several key blocks and a ragged end)."""
    if runtime.on_gpu():  # one of the reference's autotune configurations: no spills on sm_80/sm_90
        if head_dim <= 64:
            return dict(BLOCK_M=128, BLOCK_N=32, num_stages=3, num_warps=4)
        return dict(BLOCK_M=128, BLOCK_N=32, num_stages=3, num_warps=8)
    return dict(BLOCK_M=32, BLOCK_N=16)


def backward_block_config(head_dim: int) -> dict:
    """Tiles of the two backward kernels: "dkdv" takes BLOCK_N keys and streams BLOCK_M queries,
    "dq" takes BLOCK_M queries and streams BLOCK_N keys. On a GPU, the largest tiles that compile
    without register spills on sm_80 and sm_90 (python -m autograder compile-report: dK and dV
    are two fp32 accumulators, so dkdv's tiles are the tighter); small tiles in the interpreter
    (several blocks and a ragged end in the tests). Each kernel's own tile is a multiple of the
    streamed one, so the causal diagonal is whole streamed blocks."""
    if runtime.on_gpu():
        if head_dim <= 64:
            return dict(dkdv=dict(BLOCK_M=32, BLOCK_N=64, num_warps=8, num_stages=1),
                        dq=dict(BLOCK_M=64, BLOCK_N=32, num_warps=8, num_stages=2))
        return dict(dkdv=dict(BLOCK_M=32, BLOCK_N=32, num_warps=8, num_stages=2),
                    dq=dict(BLOCK_M=32, BLOCK_N=32, num_warps=8, num_stages=2))
    return dict(dkdv=dict(BLOCK_M=16, BLOCK_N=32), dq=dict(BLOCK_M=32, BLOCK_N=16))


def flash_bytes(B, H, N, d, element_size=4):
    """Memory FlashAttention holds: Q, K, V, O and one fp32 LSE per row."""
    return 4 * B * H * N * d * element_size + B * H * N * 4


def flash_dtypes() -> list:
    """fp16 and bf16 on a GPU (what the kernel is for); fp32 in the CPU interpreter."""
    return [torch.float16, torch.bfloat16] if runtime.on_gpu() else [torch.float32]


# inputs (shared with the fixture builder, so the shipped outputs match these cases) -------
def attention_name(B, H, N, d, causal, dtype=torch.float32) -> str:
    return f"B={B} H={H} N={N} d={d} {'causal' if causal else 'full'} {str(dtype)[6:]}"


def attention_inputs(B, H, N, d, causal, dtype=torch.float32, scale=1.0) -> dict:
    """q, k, v of shape (B, H, N, d) (q and k times `scale`) and the causal flag."""
    return dict(q=checks.randn(B, H, N, d, seed=N + d, dtype=dtype, scale=scale),
                k=checks.randn(B, H, N, d, seed=N + d + 1, dtype=dtype, scale=scale),
                v=checks.randn(B, H, N, d, seed=N + d + 2, dtype=dtype), causal=causal)


def attention_key(name: str, scale=1.0) -> str:
    return f"attention {name}" + ("" if scale == 1.0 else f" scale={scale:g}")


def mha_name(B, N, C, h, causal) -> str:
    return f"B={B} N={N} C={C} heads={h} {'causal' if causal else 'full'}"


def mha_inputs(B, N, C, h, causal) -> dict:
    return dict(x=checks.randn(B, N, C, seed=N), w_qkv=checks.randn(C, 3 * C, seed=C, scale=C ** -0.5),
                w_o=checks.randn(C, C, seed=C + 1, scale=C ** -0.5), n_heads=h, causal=causal)


def rope_table_name(n, d, base) -> str:
    return f"n={n} d={d} base={base:g}"


def rope_x(shape) -> torch.Tensor:
    return checks.randn(*shape, seed=len(shape))


def backward_name(B, H, N, d, causal) -> str:
    return f"B={B} H={H} N={N} d={d} causal={causal}"


def backward_inputs(B, H, N, d):
    """q, k, v (fp64, requiring grad) and the upstream gradient do."""
    q, k, v = (checks.randn(B, H, N, d, seed=N + i, dtype=torch.float64).requires_grad_() for i in range(3))
    return q, k, v, checks.randn(B, H, N, d, seed=99, dtype=torch.float64)


def _shipped(key: str):
    return fixtures.load(LAB, key)


def _on_device(x):
    return x.to(runtime.device()) if isinstance(x, torch.Tensor) else x


def _check_cases(fn, cases, expected, *, name, atol=None, rtol=None, hint=""):
    """As checks.check_function, with the expected output of each case from `expected(case, inputs)`."""
    __tracebackhide__ = True
    cases = list(cases)
    for case in cases:
        inputs = case.make_inputs()
        actual = checks.call(fn, name=name, case=case.name, hint=hint, **inputs)
        max_abs = checks.compare(actual, expected(case, inputs), atol=atol, rtol=rtol,
                                 what=f"{name}, case '{case.name}'", hint=hint)
        print(f"  ok  {case.name:<44} max abs error {max_abs:.2e}")
    print(f"{name}: all {len(cases)} cases passed.")


# 1. naive attention and the (O, LSE) comparison ------------------------------------------
NAIVE_SHAPES = [(1, 1, 1, 16, False), (1, 1, 1, 16, True), (2, 3, 10, 16, False), (2, 3, 10, 16, True)]
NAIVE_HINT = "mask with -inf where j > i (strictly above the diagonal) before the softmax; lse = logsumexp over the last dim"


def check_attention(fn, shapes, dtype=torch.float32, *, name, hint="", atol=None, rtol=None, lse_atol=1e-4,
                    scale=1.0, reference=None):
    """fn(q, k, v, causal) must return (O, LSE) for each (B, H, N, d, causal) in `shapes`; both are
    compared with naive attention (`reference`, or its outputs shipped for the lab's cases)."""
    __tracebackhide__ = True
    print(checks.precision(dtype, atol=atol, rtol=rtol) + f" (LSE: atol={lse_atol:g})")
    for B, H, N, d, causal in shapes:
        case = attention_name(B, H, N, d, causal, dtype)
        inputs = attention_inputs(B, H, N, d, causal, dtype, scale)
        out = checks.call(fn, name=name, case=case, hint=hint, **inputs)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise checks.CheckFailed(f"{name} must return a tuple (output, lse), got {type(out).__name__}")
        if reference is None:
            want = _shipped(attention_key(case, scale))
            o_ref, lse_ref = want["o"], want["lse"]
        else:
            o_ref, lse_ref = reference(**inputs)
        err_o = checks.compare(out[0], o_ref, atol=atol, rtol=rtol, what=f"{name} output O, case '{case}'", hint=hint)
        err_l = checks.compare(out[1], lse_ref, atol=lse_atol, rtol=1e-4, what=f"{name} LSE, case '{case}'", hint=hint)
        print(f"  ok  {case:<36} max abs error O {err_o:.1e}, LSE {err_l:.1e}")
    print(f"{name}: all {len(shapes)} cases passed.")


def check_naive(naive_attention, shapes=NAIVE_SHAPES, scale=1.0, reference=None):
    check_attention(naive_attention, shapes, scale=scale, name="naive_attention", hint=NAIVE_HINT,
                    reference=reference)


# 2. multi-head attention ----------------------------------------------------------------
MHA_SHAPES = [(1, 1, 16, 1, True), (2, 7, 32, 4, True), (2, 7, 32, 2, False)]
MHA_HINT = "head t owns channels t*d ... (t+1)*d-1: reshape to (B, N, h, d) and then transpose to (B, h, N, d)"


def check_multi_head(multi_head_attention, shapes=MHA_SHAPES, reference=None):
    cases = [checks.Case(mha_name(*s), lambda s=s: mha_inputs(*s)) for s in shapes]
    expected = ((lambda case, inputs: _shipped(f"mha {case.name}")) if reference is None
                else (lambda case, inputs: reference(**inputs)))
    _check_cases(multi_head_attention, cases, expected, atol=1e-5, hint=MHA_HINT, name="multi_head_attention")


# 3. the cost model ----------------------------------------------------------------------
NAIVE_BYTES_ARGS = [(1, 1, 1000, 64)]
NAIVE_BYTES_HINT = "4 matrices N x d and 2 matrices N x N"
# (what, ns, times, the least-squares slope)
FITS = [("t = 3 N^2", [1, 2, 4, 8], [3, 12, 48, 192], 2.0)]
FIT_HINT = "fit a line to (log N, log t) by least squares; return its slope"


def check_naive_bytes(naive_attention_bytes, args=NAIVE_BYTES_ARGS, reference=None):
    __tracebackhide__ = True
    for a in args:
        expected = _shipped(f"naive_bytes {a}") if reference is None else reference(*a)
        checks.check_value(f"naive_attention_bytes{a}", naive_attention_bytes, *a, expected=expected,
                           hint=NAIVE_BYTES_HINT)


def check_fit_exponent(fit_exponent, fits=FITS):
    __tracebackhide__ = True
    for what, ns, times, expected in fits:
        checks.check_value(f"fit_exponent of {what}", fit_exponent, ns, times, expected=expected, rel=1e-6,
                           hint=FIT_HINT)


def check_cost_model(naive_attention_bytes, fit_exponent, reference=None):
    check_naive_bytes(naive_attention_bytes, reference=reference)
    check_fit_exponent(fit_exponent)


# 4. RoPE --------------------------------------------------------------------------------
ROPE_TABLES = [(1, 16, 10000.0), (40, 16, 10000.0), (9, 64, 500.0)]
ROPE_X_SHAPES = [(5, 16), (2, 3, 12, 32)]
ROPE_HINT = "theta_i = base ** (-2 i / d) for i = 0 .. d/2 - 1; pair i is (x[..., i], x[..., i + d/2])"


def check_rope_tables(rope_cos_sin, tables=ROPE_TABLES, atol=1e-5, rtol=None, reference=None):
    """rope_cos_sin(n, d, base) against the reference tables (or the shipped ones), cos and sin stacked."""
    cases = [checks.Case(rope_table_name(*t), lambda t=t: dict(n=t[0], d=t[1], base=t[2])) for t in tables]
    if reference is None:
        expected = lambda case, inputs: _shipped(f"rope_cos_sin {case.name}")
    else:
        expected = lambda case, inputs: torch.stack(reference(inputs["n"], inputs["d"], inputs["base"],
                                                              device=runtime.device()))
    _check_cases(lambda n, d, base: torch.stack(rope_cos_sin(n, d, base)), cases, expected, atol=atol, rtol=rtol,
                 name="rope_cos_sin", hint=ROPE_HINT)


def check_apply_rope(apply_rope, shapes=ROPE_X_SHAPES, reference=None):
    """apply_rope(x, cos, sin) with the reference tables; `reference` = (rope_cos_sin, apply_rope)."""
    def inputs(s):
        if reference is None:
            want = _shipped(f"apply_rope x {tuple(s)}")
            cos, sin = _on_device(want["cos"]), _on_device(want["sin"])
        else:
            cos, sin = reference[0](s[-2], s[-1], device=runtime.device())
        return dict(x=rope_x(s), cos=cos, sin=sin)

    cases = [checks.Case(f"x {tuple(s)}", lambda s=s: inputs(s)) for s in shapes]
    expected = ((lambda case, inputs: _shipped(f"apply_rope {case.name}")["out"]) if reference is None
                else (lambda case, inputs: reference[1](**inputs)))
    _check_cases(apply_rope, cases, expected, atol=1e-5, name="apply_rope", hint=ROPE_HINT)


def check_rope_relative(rope_cos_sin, apply_rope):
    """The property that matters: the score of two rotated vectors depends only on their distance."""
    __tracebackhide__ = True
    cos, sin = checks.call(rope_cos_sin, 24, 32, name="rope_cos_sin")
    q1, k1 = checks.randn(32, seed=1), checks.randn(32, seed=2)
    scores = checks.call(apply_rope, q1.expand(24, 32), cos, sin, name="apply_rope") @ \
        checks.call(apply_rope, k1.expand(24, 32), cos, sin, name="apply_rope").T
    for offset in (-5, 0, 7):
        diag = torch.diagonal(scores, offset)
        checks.compare(diag, diag[0].expand_as(diag).clone(), atol=1e-4, what=f"score q(p).k(p+{offset}) over p",
                       hint="the score of two rotated vectors must depend only on their distance")
    print("RoPE scores depend only on the relative position.")


def check_rope(rope_cos_sin, apply_rope, reference=None):
    """The tables, the rotation and the relative-position property; `reference` = (rope_cos_sin, apply_rope)."""
    check_rope_tables(rope_cos_sin, reference=reference and reference[0])
    check_apply_rope(apply_rope, reference=reference)
    check_rope_relative(rope_cos_sin, apply_rope)


# 5. FlashAttention forward ------------------------------------------------------------
FLASH_SHAPES = [(1, 1, 1, 16, False), (1, 1, 1, 16, True), (1, 1, 16, 16, False), (2, 2, 50, 16, False),
                (2, 2, 50, 16, True)]
FLASH_HEAD_DIM_SHAPES = [(1, 1, 33, 64, True), (1, 1, 17, 128, False)]
FLASH_HINT = ("if N <= BLOCK_N (16 here) passes and longer inputs fail, check that BOTH the running sum l_i and the "
              "accumulator acc are multiplied by alpha = exp2(m_old - m_new) whenever the max changes; if only causal "
              "cases fail, check the mask j <= i on the diagonal tile and the loop bounds; if only the last rows fail, "
              "check the masks for N not a multiple of the block")


def check_flash(flash, shapes=FLASH_SHAPES, scale=1.0, half_lse_atol=2e-2, reference=None):
    """flash(q, k, v, causal) -> (O, LSE) in every dtype of flash_dtypes()."""
    for dtype in flash_dtypes():
        check_attention(flash, shapes, dtype, scale=scale, name="flash", hint=FLASH_HINT,
                        lse_atol=1e-4 if dtype == torch.float32 else half_lse_atol, reference=reference)


def check_flash_head_dims(flash, shapes=FLASH_HEAD_DIM_SHAPES, reference=None):
    """Head dims 64 and 128, N not a multiple of the block."""
    check_flash(flash, shapes, reference=reference)


# the learner's kernel as compiled for a GPU (bf16, the launcher's configurations), for the compile report
FLASH_KERNEL = KernelSignature(
    "flash_fwd_kernel", {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "O": "*bf16", "LSE": "*fp32"},
    lambda: [dict(block_config(d, causal), HEAD_DIM=d, CAUSAL=causal) for d in (64, 128) for causal in (False, True)],
    {"sm_scale": "fp32"}, reference="attention._attn_fwd (reference, fixed config)")


def speed_flash(flash, reference=None):
    """B=4 H=16 N=4096 d=64 causal bf16: the learner's kernel against the reference kernel."""
    inputs = lambda seed: tuple(bench.randn(4, 16, 4096, 64, seed=seed + i, dtype=torch.bfloat16) for i in range(3))
    output = lambda fn: None if fn is None else (lambda q, k, v: fn(q, k, v, True)[0])
    return bench.speed_points(output(flash), output(reference), inputs=inputs, points=2,
                              name="FlashAttention forward (B=4 H=16 N=4096 d=64 causal bf16)",
                              kernel=flash, signature=FLASH_KERNEL.where(HEAD_DIM=64, CAUSAL=True))


# 6. bonus: backward from the LSE --------------------------------------------------------
BACKWARD_SHAPES = [(1, 1, 1, 16, True), (2, 2, 9, 16, False), (1, 2, 12, 32, True)]
BACKWARD_HINT = "P = exp(S - lse); dS = P * (dP - rowsum(dO * O)); do not forget the scale in dq and dk"


def check_backward(attention_backward, shapes=BACKWARD_SHAPES, reference=None):
    """(dq, dk, dv) against torch.autograd through naive attention (`reference`), or the shipped gradients."""
    __tracebackhide__ = True
    for B, H, N, d, causal in shapes:
        case = backward_name(B, H, N, d, causal)
        q, k, v, do = backward_inputs(B, H, N, d)
        if reference is None:
            want = {key: _on_device(t) for key, t in _shipped(f"backward {case}").items()}
            o, lse, grads = want["o"], want["lse"], (want["dq"], want["dk"], want["dv"])
        else:
            o, lse = reference(q, k, v, causal)
            o.backward(do)
            grads = (q.grad, k.grad, v.grad)
        got = checks.call(attention_backward, q.detach(), k.detach(), v.detach(), o.detach(), lse.detach(), do,
                          causal, name="attention_backward")
        if not (isinstance(got, (tuple, list)) and len(got) == 3):
            raise checks.CheckFailed(f"attention_backward must return (dq, dk, dv), got {type(got).__name__}")
        for g, want_g, what in zip(got, grads, ("dq", "dk", "dv")):
            checks.compare(g, want_g, atol=1e-9, rtol=1e-7, what=f"{what}, case {case}", hint=BACKWARD_HINT)
        print(f"  ok  {case}")
    print("attention_backward matches torch.autograd.")


# 7. FlashAttention backward in Triton ---------------------------------------------------
FLASH_BACKWARD_SHAPES = [(1, 1, 1, 16, True), (2, 2, 37, 32, False), (1, 2, 65, 64, True), (2, 1, 64, 16, False),
                         (1, 1, 50, 128, True), (1, 1, 33, 64, False)]
# a GPU's tiles are larger (32-64 rows): several blocks and a ragged end need longer inputs there
FLASH_BACKWARD_GPU_SHAPES = [(2, 3, 200, 64, True), (1, 2, 257, 128, False), (1, 1, 130, 64, False)]
# the gradients sum N products of rounded inputs: half precision needs tolerances of its own
BACKWARD_TOLERANCES = {torch.float32: (2e-5, 1e-4), torch.float16: (2e-2, 2e-2), torch.bfloat16: (8e-2, 5e-2)}
BACKWARD_HINTS = {
    "dv": "dV = P^T dO needs nothing but P, so P is wrong: in flash_bwd_dkdv_kernel, P^T = exp2(qk_scale * K Q^T - "
          "LSE * log2(e)) (the saved LSE is a natural log: exp2 needs it in base 2 as well); on the transposed tile "
          "(keys x queries) the causal mask keeps query >= key: rows[None, :] >= offs_n[:, None]; causal programs "
          "start at the diagonal query block (start_n) and mask it; check the masks of query rows >= N_CTX",
    "dk": "dK = scale * dS^T Q with dS^T = P^T * (dP^T - D), dP^T = V dO^T: in flash_bwd_dkdv_kernel multiply dk by "
          "sm_scale before storing it, and subtract D (delta, one number per query row: delta[None, :] on the "
          "transposed tile)",
    "dq": "dQ = scale * dS K with dS = P * (dP - D), P = exp2(qk_scale * Q K^T - LSE * log2(e)) (the saved LSE is a "
          "natural log), dP = dO V^T: in flash_bwd_dq_kernel multiply dq by sm_scale before storing it, subtract D "
          "(delta[:, None]); the causal mask keeps key <= query (offs_m[:, None] >= cols[None, :]); causal: the key "
          "blocks [0, start_m) need no mask, the diagonal ones do, the blocks right of the tile are never read",
}


def flash_backward_shapes() -> list:
    """The visible cases: fp32 in the interpreter; on a GPU also inputs long enough for its tiles."""
    return FLASH_BACKWARD_SHAPES + (FLASH_BACKWARD_GPU_SHAPES if runtime.on_gpu() else [])


def _scale_diagnosis(got, want, scale) -> str:
    """'your dK is 8 times too large'-style help when the gradient is off by exactly the scale."""
    g, w = got.detach().double().flatten().cpu(), want.detach().double().flatten().cpu()
    if not torch.isfinite(g).all() or float(w @ w) == 0.0:
        return ""
    ratio = float(g @ w) / float(w @ w)  # least-squares factor between yours and the expected
    for factor, what in ((1 / scale, "missing"), (scale, "applied twice")):
        if abs(ratio / factor - 1) < 0.02 and (g - factor * w).abs().max() <= 0.02 * factor * w.abs().max():
            return (f"\n  note: yours is {factor:.4g} x the expected gradient: "
                    f"the factor sm_scale = {scale:.4g} is {what}")
    return ""


def check_flash_backward(flash_backward, shapes=None, dtypes=None, scale=None, forward=None):
    """flash_backward(q, k, v, o, lse, do, causal, scale=...) -> (dq, dk, dv) against torch.autograd
    through torch's attention, in every dtype of flash_dtypes(). o and lse come from `forward(q, k,
    v, causal, scale)` (the grader passes the reference FlashAttention forward) or, without one,
    from the check's own fp64 attention."""
    __tracebackhide__ = True

    # the spec lives inside the check: O and LSE of attention are lab answers (naive_attention),
    # so no function of the learner package may hand them out
    def spec(q, k, v, do, causal=False, scale=None):
        """The check's spec, in fp64: O and LSE (natural log) of softmax(scale q k^T) v, and the
        gradients torch.autograd takes through torch's attention (F.scaled_dot_product_attention)."""
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
        o = F.scaled_dot_product_attention(*leaves, is_causal=causal, scale=scale)
        grads = torch.autograd.grad(o, leaves, do.double())
        with torch.no_grad():
            s = (leaves[0] @ leaves[1].transpose(-1, -2)) * scale
            if causal:
                n = s.shape[-1]
                s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device=s.device).triu(1), float("-inf"))
            lse = torch.logsumexp(s, dim=-1)
        return o.detach(), lse, grads

    for dtype in dtypes or flash_dtypes():
        atol, rtol = BACKWARD_TOLERANCES[dtype]
        print(checks.precision(dtype, atol=atol, rtol=rtol))
        for i, (B, H, N, d, causal) in enumerate(shapes or flash_backward_shapes()):
            case = attention_name(B, H, N, d, causal, dtype) + ("" if scale is None else f" scale={scale:g}")
            q, k, v, do = (checks.randn(B, H, N, d, seed=N * d + 10 * i + j, dtype=dtype) for j in range(4))
            o, lse, want = spec(q, k, v, do, causal, scale)
            if forward is not None:
                o, lse = forward(q, k, v, causal, scale)
            got = checks.call(flash_backward, q, k, v, o.to(dtype), lse.float(), do, causal, scale=scale,
                              name="flash_backward", case=case)
            if not (isinstance(got, (tuple, list)) and len(got) == 3):
                raise checks.CheckFailed(f"flash_backward must return (dq, dk, dv), got {type(got).__name__}")
            errors, failures = {}, {}
            for name, g, w in zip(("dq", "dk", "dv"), got, want):
                try:
                    errors[name] = checks.compare(g, w, atol=atol, rtol=rtol, what=f"{name}, case '{case}'")
                except checks.CheckFailed as exc:
                    failures[name] = str(exc) + (_scale_diagnosis(g, w, scale or 1 / math.sqrt(d))
                                                 if isinstance(g, torch.Tensor) and g.shape == w.shape else "")
            if failures:
                first = next(n for n in ("dv", "dk", "dq") if n in failures)  # dV first: it needs P only
                status = ", ".join(f"{n} {'WRONG' if n in failures else 'ok'}" for n in ("dq", "dk", "dv"))
                kind = ("causal" if causal else "not causal") + (f", N = {N}" if N > 1 else ", one token")
                raise checks.CheckFailed(f"flash_backward, case '{case}' ({kind}): {status}\n"
                                         f"{failures[first]}\n  hint: {BACKWARD_HINTS[first]}")
            print(f"  ok  {case:<40} max abs error dq {errors['dq']:.1e}, dk {errors['dk']:.1e}, "
                  f"dv {errors['dv']:.1e}")
    print("flash_backward matches torch.autograd.")


def _copy_model(attn, causal, seed, steps, lr=0.1, B=4, N=24, d=16):
    """One attention layer (q, k, v = x W_q, x W_k, x W_v) trained by Adam to output each token's
    previous vector; returns (first gradients, loss before, loss after `steps` steps)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 1, N, d, generator=gen).to(runtime.device())
    target = torch.roll(x, 1, dims=2)
    target[:, :, 0] = 0
    params = [torch.nn.Parameter((torch.randn(d, d, generator=gen) * 0.3).to(runtime.device())) for _ in range(3)]

    def loss():
        out = attn(x @ params[0], x @ params[1], x @ params[2], causal)
        return ((out - target) ** 2).mean()

    first = loss()
    grads = torch.autograd.grad(first, params)
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss().backward()
        opt.step()
    with torch.no_grad():
        return grads, first.item(), loss().item()


def check_flash_training(flash_attn, causal=True, seed=0, steps=15):
    """A model trains through flash_attn(q, k, v, causal) (your autograd Function): its first
    gradients equal those through torch's attention, and the loss falls."""
    __tracebackhide__ = True
    torch_attn = lambda q, k, v, causal: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    want, torch_first, torch_last = _copy_model(torch_attn, causal, seed, steps)
    # fp32: exact in the interpreter; a GPU's tl.dot takes fp32 inputs as TF32 (10-bit mantissas)
    atol, rtol = (1e-5, 1e-4) if not runtime.on_gpu() else (2e-2 * max(w.abs().max().item() for w in want), 2e-2)
    print(checks.precision(torch.float32, atol=atol, rtol=rtol))
    grads = checks.call(lambda: _copy_model(flash_attn, causal, seed, 0)[0], name="flash_attn",
                        hint="flash_attn(q, k, v, causal) returns FlashAttention.apply(q, k, v, causal)")
    for g, w, name in zip(grads, want, ("W_q", "W_k", "W_v")):
        checks.compare(g, w, atol=atol, rtol=rtol,
                       what=f"the model's first gradient of {name} ({'causal' if causal else 'full'})",
                       hint="flash and flash_backward must pass their own checks first; then "
                            "FlashAttention.backward must return the gradients of forward's inputs in their order: "
                            "dq, dk, dv, and None for causal")
    _, first, last = checks.call(lambda: _copy_model(flash_attn, causal, seed, steps), name="flash_attn")
    print(f"  {steps} Adam steps: loss {first:.3f} -> {last:.3f} (through torch's attention: {torch_first:.3f} -> "
          f"{torch_last:.3f})")
    if not last < 0.7 * first:
        raise checks.CheckFailed(f"the loss did not fall through flash_attn: {first:.3f} -> {last:.3f} in {steps} "
                                 f"steps; through torch's attention {torch_first:.3f} -> {torch_last:.3f}")
    print("A model trains through your FlashAttention.")


# the learner's backward kernels as compiled for a GPU (bf16, the launcher's tiles), for the compile report
BACKWARD_POINTERS = {name: "*bf16" for name in ("Q", "K", "V", "DO", "DQ", "DK", "DV")}
BACKWARD_POINTERS.update(LSE="*fp32", DELTA="*fp32")


def _backward_configs(kernel: str) -> list:
    return [dict(backward_block_config(d)[kernel], HEAD_DIM=d, CAUSAL=causal) for d in (64, 128)
            for causal in (False, True)]


FLASH_BWD_DKDV_KERNEL = KernelSignature("flash_bwd_dkdv_kernel", BACKWARD_POINTERS, lambda: _backward_configs("dkdv"),
                                        {"sm_scale": "fp32"}, reference="flash_backward._bwd_dkdv (reference)")
FLASH_BWD_DQ_KERNEL = KernelSignature("flash_bwd_dq_kernel", BACKWARD_POINTERS, lambda: _backward_configs("dq"),
                                      {"sm_scale": "fp32"}, reference="flash_backward._bwd_dq (reference)")


def speed_flash_backward(flash_backward, forward, reference=None):
    """B=4 H=16 N=4096 d=64 causal bf16: the learner's backward against the reference backward.
    Each timed call gets fresh q, k, v, dO and the (o, lse) that `forward` saved for them: the
    forward runs when the inputs are made, outside the timed call."""
    def inputs(seed):
        q, k, v, do = (bench.randn(4, 16, 4096, 64, seed=seed + i, dtype=torch.bfloat16) for i in range(4))
        o, lse = forward(q, k, v, True)
        return q, k, v, o, lse, do

    backward = lambda fn: None if fn is None else (lambda q, k, v, o, lse, do: tuple(fn(q, k, v, o, lse, do, True)))
    signatures = [s.where(HEAD_DIM=64, CAUSAL=True) for s in (FLASH_BWD_DKDV_KERNEL, FLASH_BWD_DQ_KERNEL)]
    points = bench.speed_points(backward(flash_backward), backward(reference), inputs=inputs, points=2, rtol=2e-2,
                                name="FlashAttention backward (B=4 H=16 N=4096 d=64 causal bf16)",
                                kernel=flash_backward, signature=signatures[0])
    # speed_points reports one kernel's compile figures; the backward has two
    if not runtime.on_gpu() and os.environ.get("COURSE_GRADING") != "1" \
            and os.environ.get("COURSE_COMPILE_FEEDBACK") != "0":
        bench.print_compile_feedback(flash_backward, signatures[1])
    return points
