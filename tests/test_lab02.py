"""Lab 02 reference kernels (FlashAttention forward, RoPE, backward from LSE), on the CPU interpreter."""
import math

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
    """Each visible case's shipped output equals the reference's on the same inputs (up to the last
    bits: torch's CPU attention takes other paths on other processors, AVX-512 or AMX)."""
    for B, H, N, d, causal in lab.FLASH_SHAPES:
        inputs = lab.attention_inputs(B, H, N, d, causal)
        shipped = lab._shipped(lab.attention_key(lab.attention_name(B, H, N, d, causal)))
        o, lse = attention.torch_attention(**inputs)
        torch.testing.assert_close(shipped["o"], o)
        torch.testing.assert_close(shipped["lse"], lse)


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


# 7. FlashAttention backward in Triton: the learner's kernels, the given launcher, the checks --------
from kernels import flash_backward as flash_bwd  # noqa: E402


def _backward_cells(nb, folder):
    """The namespace the notebook's section 7 builds: the two kernel cells and the given cell
    after them (preprocess, launcher, autograd Function), with the reference forward as `flash`.
    Each cell is run from a file of its own (Triton reads a kernel's source from its file)."""
    import triton
    import triton.language as tl
    index = {c.metadata.get("nbgrader", {}).get("grade_id"): i for i, c in enumerate(nb.cells)}
    given = nb.cells[index["flash_bwd_dq"] + 1]
    assert "def flash_backward(" in given.source and "nbgrader" not in given.metadata
    ns = dict(lab=lab, math=math, torch=torch, triton=triton, tl=tl,
              flash=lambda q, k, v, causal=False: attention.flash_attention(q, k, v, causal))
    for name, cell in (("dkdv", nb.cells[index["flash_bwd_dkdv"]]), ("dq", nb.cells[index["flash_bwd_dq"]]),
                       ("given", given)):
        path = folder / f"{name}.py"
        path.write_text(cell.source)
        exec(compile(cell.source, str(path), "exec"), ns)
    return ns


@pytest.fixture(scope="module")
def solution_backward(tmp_path_factory):
    from autograder import samples
    return _backward_cells(samples.make_sample(LAB, "reference"), tmp_path_factory.mktemp("solution"))


def test_the_solution_kernels_pass_the_backward_checks(solution_backward):
    lab.check_flash_backward(solution_backward["flash_backward"])
    lab.check_flash_backward(solution_backward["flash_backward"], [(1, 3, 97, 32, True), (1, 1, 45, 128, False)],
                             scale=0.3, forward=flash_bwd.flash_attention)  # as the hidden block does
    lab.check_flash_training(solution_backward["flash_attn"])


def test_the_reference_passes_the_backward_checks():
    lab.check_flash_backward(flash_bwd.flash_backward)
    lab.check_flash_training(flash_bwd.flash_attn)


def test_the_backward_check_hands_out_no_attention_output():
    """naive_attention's answer (O and LSE) must not be a function of the learner package: the
    backward check's fp64 spec is nested inside it, and the check fails a backward whose dV misses P."""
    assert not any(callable(getattr(lab, name)) and "attention_grads" in name for name in dir(lab))
    wrong = lambda q, k, v, o, lse, do, causal, scale=None: tuple(
        g * (1.5 if i == 2 else 1.0) for i, g in enumerate(flash_bwd.flash_backward(q, k, v, o, lse, do, causal, scale)))
    with pytest.raises(checks.CheckFailed, match="dv WRONG"):
        lab.check_flash_backward(wrong)


def test_a_backward_without_the_scale_in_dk_is_caught_with_the_message(tmp_path):
    from autograder import samples
    buggy = _backward_cells(samples.make_sample(LAB, "buggy"), tmp_path)
    with pytest.raises(checks.CheckFailed, match=r"(?s)case 'B=2 H=2 N=37 d=32 full float32'.*dq ok, dk WRONG, dv ok"
                                                 r".*max abs error.*the factor sm_scale = 0.1768 is missing"
                                                 r".*hint: dK = scale \* dS\^T Q"):
        lab.check_flash_backward(buggy["flash_backward"])


@pytest.mark.parametrize("mistake,match", [
    (("dkdv", "- lse[None, :] * 1.4426950408889634)", "- lse[None, :])"), r"dv WRONG.*natural log"),
    (("dkdv", "rows[None, :] >= offs_n[:, None]", "rows[None, :] <= offs_n[:, None]"),
     r"causal.*dv WRONG.*transposed tile"),
    (("dq", "ds = p * (dp - delta[:, None])", "ds = p * dp"), r"dq WRONG, dk ok, dv ok.*subtract D"),
    (("given", "return dq, dk, dv, None", "return dk, dq, dv, None"), r"first gradient of W_q.*in their order"),
], ids=["lse-in-the-wrong-base", "causal-mask-not-transposed", "D-not-subtracted", "gradients-swapped"])
def test_the_usual_backward_bugs_are_named(mistake, match, tmp_path):
    from autograder import samples
    nb = samples.make_sample(LAB, "reference")
    cell, old, new = mistake
    index = {c.metadata.get("nbgrader", {}).get("grade_id"): i for i, c in enumerate(nb.cells)}
    target = nb.cells[index["flash_bwd_dq"] + 1] if cell == "given" else nb.cells[index[f"flash_bwd_{cell}"]]
    assert old in target.source
    target.source = target.source.replace(old, new)
    ns = _backward_cells(nb, tmp_path)
    with pytest.raises(checks.CheckFailed, match="(?s)" + match):
        if cell == "given":
            lab.check_flash_training(ns["flash_attn"])
        else:
            lab.check_flash_backward(ns["flash_backward"])


def test_the_released_stubs_score_zero_with_a_message_not_a_crash(tmp_path):
    from autograder import samples
    empty = _backward_cells(samples.make_sample(LAB, "untouched"), tmp_path)
    with pytest.raises(checks.CheckFailed, match="not implemented yet"):
        lab.check_flash_backward(empty["flash_backward"])
    with pytest.raises(checks.CheckFailed, match="not implemented yet"):
        lab.check_flash_training(empty["flash_attn"])


def test_one_backward_block_config_for_the_given_launcher_and_the_reference():
    assert flash_bwd.backward_block_config is lab.backward_block_config
    from genfast.compile_info import gpu_configs
    for signature, kernel in ((lab.FLASH_BWD_DKDV_KERNEL, "dkdv"), (lab.FLASH_BWD_DQ_KERNEL, "dq")):
        configs = gpu_configs(signature)
        assert len(configs) == 4 and all(c["BLOCK_M"] >= 32 and "num_warps" in c for c in configs)
        for c in configs:  # each kernel's own tile is a multiple of the streamed one (the causal diagonal)
            own, streamed = (c["BLOCK_N"], c["BLOCK_M"]) if kernel == "dkdv" else (c["BLOCK_M"], c["BLOCK_N"])
            assert own % streamed == 0


def test_the_backward_speed_cell_on_a_cpu_shows_both_kernels_compiled(solution_backward, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_COMPILE_FEEDBACK", "1")
    monkeypatch.delenv("COURSE_GRADING", raising=False)
    assert lab.speed_flash_backward(solution_backward["flash_backward"], solution_backward["flash"]) == 0.0
    out = capsys.readouterr().out
    assert "skipped: no GPU here" in out
    for name in ("flash_bwd_dkdv_kernel", "flash_bwd_dq_kernel"):
        assert f"What your {name} compiles to on real GPUs" in out, out
    assert out.count("yours:") == 4 and "does not compile" not in out and "SPILLS" not in out, out
    monkeypatch.setenv("COURSE_GRADING", "1")
    assert lab.speed_flash_backward(solution_backward["flash_backward"], solution_backward["flash"]) == 0.0
    assert "compiles to" not in capsys.readouterr().out


def test_labs_matches_a_fresh_release_of_solutions(tmp_path, monkeypatch):
    import nbformat
    from autograder import config, grading
    monkeypatch.setenv("COURSE_GRADING_DIR", str(tmp_path / "grading"))
    monkeypatch.setenv("COURSE_RELEASE_DIR", str(tmp_path / "release"))
    grading.release([LAB])
    fresh = nbformat.read(tmp_path / "release" / LAB / f"{LAB}.ipynb", as_version=4)
    committed = nbformat.read(config.ROOT / "labs" / LAB / f"{LAB}.ipynb", as_version=4)
    assert fresh == committed, f"labs/{LAB} is stale: run `python -m autograder release {LAB}`"
