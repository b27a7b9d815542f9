"""Lab 03 reference kernels and derivations (linear attention, selective scan, ZOH, DeltaNet) on the CPU."""
from pathlib import Path

import pytest
import torch

from genfast import checks
from genfast.labs import lab03_linear_attention_mamba as lab
from kernels import linear_attention as la
from kernels import selective_scan as ss

LAB = "lab03_linear_attention_mamba"
ROOT = Path(__file__).resolve().parent.parent


def qkv(B, H, N, dk, dv=None, seed=0, dtype=torch.float32):
    dv = dk if dv is None else dv
    return (checks.randn(B, H, N, dk, seed=seed, dtype=dtype, scale=dk ** -0.5),
            checks.randn(B, H, N, dk, seed=seed + 1, dtype=dtype),
            checks.randn(B, H, N, dv, seed=seed + 2, dtype=dtype))


def head_gammas(H, seed=0):
    return 0.6 + 0.4 * torch.rand(H, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- linear attention, three forms
@pytest.mark.parametrize("gamma_kind", ["none", "head", "step"])
@pytest.mark.parametrize("normalize", [False, True])
def test_recurrent_equals_quadratic(gamma_kind, normalize):
    B, H, N, d = 2, 3, 21, 8
    q, k, v = qkv(B, H, N, d, seed=4)
    if normalize:  # the normaliser needs positive features, e.g. phi = elu + 1
        q, k = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
    gamma = {"none": None, "head": head_gammas(H), "step": 0.5 + 0.5 * torch.rand(B, H, N)}[gamma_kind]
    rec = la.torch_linear_attention_recurrent(q, k, v, gamma, normalize=normalize)
    quad = la.torch_linear_attention_quadratic(q, k, v, gamma, normalize=normalize)
    checks.compare(quad, rec, atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 4, 7, 16, 64])
@pytest.mark.parametrize("gamma_kind", ["none", "head", "step"])
def test_chunked_equals_recurrent(chunk, gamma_kind):
    B, H, N, d = 2, 2, 30, 8
    q, k, v = qkv(B, H, N, d, seed=chunk)
    gamma = {"none": None, "head": head_gammas(H), "step": 0.5 + 0.5 * torch.rand(B, H, N)}[gamma_kind]
    checks.compare(la.torch_linear_attention_chunked(q, k, v, gamma, chunk),
                   la.torch_linear_attention_recurrent(q, k, v, gamma), atol=1e-5)


def test_linear_attention_is_attention_without_softmax():
    q, k, v = qkv(1, 1, 12, 8, seed=3)
    scores = (q @ k.transpose(-1, -2)).tril()
    checks.compare(la.torch_linear_attention_quadratic(q, k, v), scores @ v, atol=1e-6)


# ---------------------------------------------------------------- the Triton kernel
@pytest.mark.parametrize("B,H,N,dk,dv", [(1, 1, 1, 16, 16), (2, 3, 37, 16, 16), (1, 2, 50, 32, 20),
                                         (1, 1, 16, 64, 64), (2, 1, 33, 8, 5)])
def test_chunked_kernel_matches_recurrent(B, H, N, dk, dv):
    q, k, v = qkv(B, H, N, dk, dv, seed=N)
    gamma = head_gammas(H, seed=N)
    checks.compare(la.chunked_linear_attention(q, k, v, gamma), la.torch_linear_attention_recurrent(q, k, v, gamma))


@pytest.mark.parametrize("chunk,block_dv", [(16, 16), (32, 16), (64, 32)])
def test_chunked_kernel_other_tiles_and_no_decay(chunk, block_dv):
    q, k, v = qkv(1, 2, 70, 16, 40, seed=chunk)
    for gamma in (None, 0.9):
        checks.compare(la.chunked_linear_attention(q, k, v, gamma, chunk=chunk, block_dv=block_dv),
                       la.torch_linear_attention_quadratic(q, k, v, gamma))


def test_chunked_kernel_strided_inputs():
    q, k, v = (checks.randn(2, 30, 2, 16, seed=i).transpose(1, 2) for i in range(3))  # (B, N, H, d) memory
    checks.compare(la.chunked_linear_attention(q, k, v, 0.95), la.torch_linear_attention_recurrent(q, k, v, 0.95),
                   atol=1e-4)


def test_cost_helpers():
    assert la.bytes_moved(1, 1, 10, 4, 2) == 4 * 10 * 4 * 2
    assert la.flops(1, 1, 128, 64, 64) < la.quadratic_flops(1, 1, 128 * 64, 64) / 32
    assert lab.attention_memory_bytes(16, 4096, 64) > lab.state_bytes(16, 64, 2)


# ---------------------------------------------------------------- the selective scan
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 1, 3, 4), (2, 13, 6, 4), (1, 20, 3, 16), (1, 9, 17, 2)])
def test_selective_scan_matches_loop(shape):
    inputs = lab.random_inputs(*shape, seed=sum(shape))
    checks.compare(ss.selective_scan(*inputs), ss.torch_selective_scan(*inputs), atol=1e-5)


def test_selective_scan_other_blocks_and_strides():
    x, delta, A, Bm, C = lab.random_inputs(1, 11, 4, 4, seed=7)
    x = x.transpose(1, 2).contiguous().transpose(1, 2)  # (batch, L, D) view of (batch, D, L) memory
    checks.compare(ss.selective_scan(x, delta, A, Bm, C, block_l=4, block_d=2),
                   ss.torch_selective_scan(x, delta, A, Bm, C), atol=1e-5)


def test_scan_operator_is_associative_and_the_parallel_scan_matches():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 5, generator=gen, dtype=torch.float64), torch.randn(3, 5, generator=gen, dtype=torch.float64)
    op = lambda x, y: (x[0] * y[0], y[0] * x[1] + y[1])
    left = op(op((a[0], b[0]), (a[1], b[1])), (a[2], b[2]))
    right = op((a[0], b[0]), op((a[1], b[1]), (a[2], b[2])))
    assert all(torch.allclose(l, r) for l, r in zip(left, right))
    a, b = torch.rand(37, 6, generator=gen, dtype=torch.float64), torch.randn(37, 6, generator=gen, dtype=torch.float64)
    cum_a, h = ss.torch_scan_hillis_steele(a, b)
    state, states = torch.zeros(6, dtype=torch.float64), []
    for t in range(37):
        state = a[t] * state + b[t]
        states.append(state)
    checks.compare(h, torch.stack(states), atol=1e-12)
    checks.compare(cum_a, torch.cumprod(a, 0), atol=1e-12)
    products, seq_states = ss.torch_scan_sequential(a, b)
    checks.compare(seq_states, torch.stack(states), atol=0.0)
    checks.compare(products, torch.cumprod(a, 0), atol=0.0)


def test_states_and_outputs_agree():
    inputs = lab.random_inputs(2, 9, 3, 4, seed=3, dtype=torch.float64)
    hs = ss.torch_selective_scan_states(*inputs)
    y = (hs * inputs[4][:, :, None, :]).sum(-1)
    checks.compare(y, ss.torch_selective_scan(*inputs), atol=1e-12)


# ---------------------------------------------------------------- ZOH discretisation
def test_zoh_matches_the_matrix_exponential_and_the_ode():
    gen = torch.Generator().manual_seed(1)
    S = 5
    a = -torch.rand(S, generator=gen, dtype=torch.float64) * 3 - 0.1
    Bv = torch.randn(S, generator=gen, dtype=torch.float64)
    delta = torch.tensor([0.37], dtype=torch.float64)
    A_bar, B_bar = ss.zoh(delta, a[None, :], Bv)  # D = 1 channel, S states
    A_m, B_m = ss.zoh_matrix(torch.diag(a), Bv[:, None], 0.37)
    checks.compare(A_bar[0], torch.diag(A_m), atol=1e-12)
    checks.compare(B_bar[0], B_m[:, 0], atol=1e-12)
    # integrate h' = a h + B x with x constant by many tiny Euler steps from h0
    h0, x = torch.randn(S, generator=gen, dtype=torch.float64), 0.8
    h, n = h0.clone(), 20000
    for _ in range(n):
        h = h + (0.37 / n) * (a * h + Bv * x)
    checks.compare(A_bar[0] * h0 + B_bar[0] * x, h, atol=1e-4)
    # Mamba's simplification B_bar ~ delta B is first-order: the error shrinks like delta^2
    errs = [(ss.zoh(torch.tensor([dt], dtype=torch.float64), a[None], Bv)[1] - dt * Bv).abs().max().item()
            for dt in (1e-2, 1e-3)]
    assert 50 < errs[0] / errs[1] < 200


def test_zoh_handles_a_zero_eigenvalue():
    A_bar, B_bar = ss.zoh(torch.tensor([0.5]), torch.zeros(1, 3), torch.ones(3))
    checks.compare(B_bar, torch.full((1, 3), 0.5), atol=1e-7)
    checks.compare(A_bar, torch.ones(1, 3), atol=0.0)


# ---------------------------------------------------------------- DeltaNet
def test_delta_rule_is_one_gradient_step():
    gen = torch.Generator().manual_seed(2)
    H = torch.randn(6, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    k, v, beta = torch.randn(4, generator=gen, dtype=torch.float64), torch.randn(6, generator=gen, dtype=torch.float64), 0.3
    loss = 0.5 * ((H @ k - v) ** 2).sum()
    loss.backward()
    delta_rule = H.detach() - beta * torch.outer(H.detach() @ k - v, k)
    checks.compare(delta_rule, H.detach() - beta * H.grad, atol=1e-12)
    checks.compare(la.delta_rule_gradient_step(H.detach(), k, v, beta), delta_rule, atol=1e-12)
    # with beta = 1 and a unit key the write is exact: the memory now maps k to v
    k = k / k.norm()
    H1 = H.detach() - torch.outer(H.detach() @ k - v, k)
    checks.compare(H1 @ k, v, atol=1e-12)


# ---------------------------------------------------------------- benchmark wiring
def test_bench_cases_are_well_formed():
    from kernels.benchmarks import BenchCase, randn
    for case in la.bench_cases(BenchCase, randn) + ss.bench_cases(BenchCase, randn):
        args = case.inputs(case.test_scale)
        checks.compare(case.kernel(*args), case.torch_op(*args), what=case.name)
        assert case.work(case.shape, case.dtype) > 0


# ---------------------------------------------------------------- the learner's checks (genfast)
def _delta_rule(H, k, v, beta):
    beta = torch.as_tensor(beta, dtype=H.dtype, device=H.device)
    return H - beta[..., None, None] * ((H @ k[..., None])[..., 0] - v)[..., :, None] * k[..., None, :]


def test_visible_checks_pass_the_references_from_the_shipped_fixtures():
    """What a learner's install runs: no reference passed, the expected outputs are the fixtures."""
    lab.check_lstm(lambda **kw: lab.lstm_reference(**kw).chunk(2, dim=-1))
    lab.check_linear_attention_forms(la.torch_linear_attention_quadratic, la.torch_linear_attention_recurrent)
    lab.check_chunked(la.torch_linear_attention_chunked)
    lab.check_chunked_kernel(la.chunked_linear_attention)
    lab.check_zoh(ss.zoh)
    lab.check_scan(ss.torch_scan_hillis_steele)
    lab.check_selective_scan(ss.selective_scan)
    lab.check_delta_rule(_delta_rule)


def test_hidden_checks_pass_the_references():
    """What the grader runs: the references passed in, hidden cases added."""
    lab.check_linear_attention_forms(la.torch_linear_attention_quadratic, la.torch_linear_attention_recurrent,
                                     reference=la.torch_linear_attention_recurrent,
                                     more=[([(1, 2, 33, 16)], "token", True), ([(3, 1, 20, 4)], "head", False)])
    lab.check_chunked(la.torch_linear_attention_chunked, reference=la.torch_linear_attention_recurrent,
                      more=[(2, 1, 9, 4, 1), (1, 1, 7, 4, 64)])
    lab.check_chunked_kernel(la.chunked_linear_attention, reference=la.torch_linear_attention_recurrent,
                             more=[(1, 1, 20, 16, 48)])
    lab.check_zoh(ss.zoh, reference=ss.zoh_matrix, more=[(4, 16, (1, 5))])
    lab.check_scan(ss.torch_scan_hillis_steele, reference=ss.torch_scan_sequential, more=[(33, 2, 2)])
    lab.check_selective_scan(ss.selective_scan, reference=ss.torch_selective_scan, more=[(3, 7, 5, 2)])
    lab.check_delta_rule(_delta_rule, reference=la.delta_rule_gradient_step, more=[((2, 3), 8, 16, False)])


def test_a_wrong_chunked_form_fails_with_the_case_and_the_hint():
    wrong = lambda q, k, v, gamma=None, chunk=16: la.torch_linear_attention_chunked(q, k, v, None, chunk)
    with pytest.raises(checks.CheckFailed, match=r"(?s)case 'B=2 H=2 N=16 d=8 chunk=4'.*hint: inter-chunk"):
        lab.check_chunked(wrong)


def test_a_case_without_a_fixture_says_so():
    with pytest.raises(LookupError, match="no expected output is shipped"):
        lab.check_scan(ss.torch_scan_hillis_steele, more=[(5, 5)])


def test_the_learner_module_holds_no_reference():
    for name in ("torch_linear_attention_recurrent", "torch_linear_attention_quadratic", "torch_linear_attention_chunked",
                 "chunked_linear_attention", "selective_scan", "torch_selective_scan", "zoh", "zoh_matrix",
                 "torch_scan_hillis_steele", "torch_scan_sequential", "delta_rule_gradient_step", "gradient_step"):
        assert not hasattr(lab, name), name


def test_the_reference_kernels_use_the_launchers_tiles():
    assert la.block_config is lab.chunked_block_config and ss.block_config is lab.scan_block_config


# ---------------------------------------------------------------- the notebook
