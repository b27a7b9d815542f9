"""Lab 02 reference kernels (FlashAttention forward, RoPE, backward from LSE), on the CPU interpreter."""
import json
import math
import re

import pytest
import torch

from genfast import checks
from genfast.labs import lab02_attention as lab
from kernels import attention

LAB = "lab02_attention"


def qkv(B, H, N, d, seed=0, dtype=torch.float32):
    return tuple(checks.randn(B, H, N, d, seed=seed + i, dtype=dtype) for i in range(3))


def check_flash(q, k, v, causal, *, atol_lse=None, atol_o=None, **kwargs):
    """The Triton kernel's O and LSE against the naive PyTorch attention on the same inputs."""
    o, lse = attention.flash_attention(q, k, v, causal, **kwargs)
    scale = {"scale": kwargs["scale"]} if "scale" in kwargs else {}
    ref_o, ref_lse = attention.torch_attention(q, k, v, causal, **scale)
    checks.compare(o, ref_o, atol=atol_o, what="O")
    checks.compare(lse, ref_lse, atol=atol_lse, what="LSE")


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("B,H,N,d", [(1, 1, 1, 16), (2, 3, 37, 16), (1, 2, 100, 64), (1, 1, 64, 32),
                                     (2, 1, 17, 128)])
def test_flash_matches_naive(B, H, N, d, causal):
    check_flash(*qkv(B, H, N, d, seed=N), causal)


def test_flash_other_block_sizes_and_scale():
    q, k, v = qkv(1, 2, 75, 32, seed=5)
    for causal in (False, True):
        check_flash(q, k, v, causal, scale=0.3, BLOCK_M=64, BLOCK_N=32)


def test_flash_non_contiguous_inputs_use_strides():
    # (B, N, H, d) memory viewed as (B, H, N, d), as a model's projections produce it
    q, k, v = (checks.randn(2, 40, 2, 16, seed=i).transpose(1, 2) for i in range(3))
    check_flash(q, k, v, True)


def test_flash_large_scores_do_not_overflow():
    q, k, v = qkv(1, 1, 50, 16, seed=9)
    check_flash(q * 30, k * 30, v, False, atol_o=1e-4, atol_lse=1e-3)


def test_reference_matches_torch_sdpa():
    q, k, v = qkv(2, 2, 33, 16)
    for causal in (False, True):
        o, lse = attention.torch_attention(q, k, v, causal)
        sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        checks.compare(o, sdpa, atol=1e-5)
        s = q @ k.transpose(-1, -2) / 4.0
        if causal:
            s = s.masked_fill(torch.ones(33, 33, dtype=torch.bool).triu(1), float("-inf"))
        checks.compare(lse, torch.logsumexp(s, -1), atol=1e-5)


def test_multi_head_reference_is_per_head_attention():
    x = checks.randn(2, 9, 32, seed=1)
    w_qkv, w_o = checks.randn(32, 96, seed=2) / 6, checks.randn(32, 32, seed=3) / 6
    out = attention.torch_multi_head_attention(x, w_qkv, w_o, n_heads=4, causal=True)
    q, k, v = (x @ w_qkv).split(32, dim=-1)
    heads = []
    for h in range(4):
        sl = slice(8 * h, 8 * h + 8)
        heads.append(attention.torch_attention(q[..., sl], k[..., sl], v[..., sl], True)[0])
    checks.compare(out, torch.cat(heads, -1) @ w_o, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_backward_from_lse_matches_autograd(causal):
    q, k, v = (t.double().requires_grad_() for t in qkv(2, 2, 21, 16, seed=3))
    o, lse = attention.torch_attention(q, k, v, causal)
    do = checks.randn(*o.shape, seed=11).double()
    o.backward(do)
    dq, dk, dv = attention.attention_backward(q.detach(), k.detach(), v.detach(), o.detach(),
                                              lse.detach(), do, causal)
    for got, want, name in ((dq, q.grad, "dQ"), (dk, k.grad, "dK"), (dv, v.grad, "dV")):
        checks.compare(got, want, atol=1e-10, rtol=1e-8, what=name)


def test_backward_from_flash_lse():
    q, k, v = qkv(1, 2, 30, 16, seed=4)
    o, lse = attention.flash_attention(q, k, v, True)
    do = checks.randn(*o.shape, seed=7)
    grads = attention.attention_backward(q, k, v, o, lse, do, True)
    qr, kr, vr = (t.clone().requires_grad_() for t in (q, k, v))
    attention.torch_attention(qr, kr, vr, True)[0].backward(do)
    for got, want in zip(grads, (qr.grad, kr.grad, vr.grad)):
        checks.compare(got, want, atol=1e-4, rtol=1e-3)


def test_rope_relative_position_invariance():
    d, n = 32, 50
    cos, sin = attention.rope_cos_sin(n, d)
    q, k = checks.randn(d, seed=1), checks.randn(d, seed=2)
    rq = attention.apply_rope(q.expand(n, d), cos, sin)
    rk = attention.apply_rope(k.expand(n, d), cos, sin)
    scores = rq @ rk.T  # scores[p, p'] depends only on p' - p
    for offset in (-7, 0, 3, 20):
        diag = torch.diagonal(scores, offset)
        assert torch.allclose(diag, diag[0].expand_as(diag), atol=1e-4), f"offset {offset}"


def test_rope_is_a_rotation():
    cos, sin = attention.rope_cos_sin(10, 16, base=500.0)
    x = checks.randn(3, 10, 16, seed=3)
    r = attention.apply_rope(x, cos, sin)
    checks.compare(r.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    checks.compare(r[:, 0], x[:, 0])  # position 0 is not rotated
    # pair i of position p is turned by p * base^(-2i/d)
    angle = torch.atan2(r[0, 4, 1 + 8], r[0, 4, 1]) - torch.atan2(x[0, 4, 1 + 8], x[0, 4, 1])
    want = 4 * 500.0 ** (-2 / 16)
    assert abs(math.remainder(angle.item() - want, 2 * math.pi)) < 1e-4


def test_flops_and_bytes():
    assert attention.flops(4, 16, 4096, 64) == 4 * 4 * 16 * 4096**2 * 64
    assert attention.flops(1, 1, 10, 8, causal=True) == attention.flops(1, 1, 10, 8) // 2
    assert attention.naive_bytes(1, 1, 4096, 64) > 10 * lab.flash_bytes(1, 1, 4096, 64)


def test_bench_cases_build_and_run_small():
    from kernels import benchmarks
    cases = attention.bench_cases(benchmarks.BenchCase, benchmarks.randn)
    assert len(cases) == 4 and all(c.unit == "TFLOP/s" for c in cases)
    case = cases[1]
    q, k, v = case.make_inputs((1, 2, 40, 64), torch.float32, "cpu")
    o = case.kernel(q, k, v)
    checks.compare(o, attention.torch_attention(q, k, v, True)[0])
    assert case.work(case.shape, case.dtype) == attention.flops(4, 16, 4096, 64, causal=True)


def test_bench_cases_run_at_the_cpu_test_scale_in_bf16():
    """What tests/test_benchmarks.py does with every row once they are in benchmarks.CASES."""
    from kernels import benchmarks
    for case in attention.bench_cases(benchmarks.BenchCase, benchmarks.randn):
        args = case.inputs(case.test_scale)
        assert args[0].dtype == torch.bfloat16 and args[0].shape[-1] in attention.HEAD_DIMS
        checks.compare(case.kernel(*args), case.torch_op(*args), what=case.label)


# the learner's checks: the shipped expected outputs agree with the references -----------------
def test_visible_checks_pass_the_references_against_the_fixtures():
    lab.check_naive(attention.torch_attention)
    lab.check_multi_head(attention.torch_multi_head_attention)
    lab.check_cost_model(attention.naive_bytes, lambda ns, ts: 2.0)
    lab.check_rope(attention.rope_cos_sin, attention.apply_rope)
    lab.check_flash(attention.flash_attention)
    lab.check_flash_head_dims(attention.flash_attention)
    lab.check_backward(attention.attention_backward)


def test_fixture_and_reference_paths_check_the_same_outputs():
    """Each visible case's shipped output equals the reference's on the same inputs."""
    for B, H, N, d, causal in lab.FLASH_SHAPES:
        inputs = lab.attention_inputs(B, H, N, d, causal)
        shipped = lab._shipped(lab.attention_key(lab.attention_name(B, H, N, d, causal)))
        o, lse = attention.torch_attention(**inputs)
        assert torch.equal(shipped["o"], o) and torch.equal(shipped["lse"], lse)


def test_visible_checks_name_the_failing_case_and_give_the_hint():
    def no_mask(q, k, v, causal=False):
        return attention.torch_attention(q, k, v, False)
    with pytest.raises(checks.CheckFailed, match=r"(?s)naive_attention output O, case 'B=2 H=3 N=10 d=16 causal "
                                                 r"float32'.*max abs error.*hint: mask with -inf"):
        lab.check_naive(no_mask)
    with pytest.raises(checks.CheckFailed, match="hint: if N <= BLOCK_N"):
        lab.check_flash(no_mask)


def test_checks_without_a_shipped_case_ask_for_the_reference():
    with pytest.raises(LookupError, match="no expected output is shipped"):
        lab.check_naive(attention.torch_attention, shapes=[(1, 1, 3, 16, True)])
    lab.check_naive(attention.torch_attention, shapes=[(1, 1, 3, 16, True)], reference=attention.torch_attention)


def test_one_block_config_for_the_given_launcher_and_the_reference():
    assert attention.block_config is lab.block_config

def test_released_notebook_names_neither_kernels_nor_the_grader():
    from autograder import samples
    released = json.loads(samples.notebook_path(samples.release_dir(), LAB).read_text())
    for cell in released["cells"]:
        source = "".join(cell["source"])
        assert not re.search(r"\bkernels\b", source), source
        assert "GRADER" not in source, source
