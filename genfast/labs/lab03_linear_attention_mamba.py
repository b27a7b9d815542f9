"""Checks for lab03_linear_attention_mamba: the LSTM step, linear attention (parallel, recurrent,
chunked, the chunked Triton kernel), ZOH and the parallel scan, Mamba's selective scan in Triton,
and the delta rule.

Also here, because the notebook's given code uses them: `log_decay` and `log2_gamma` (a decay
given as None, a float, one per head or one per token, as the forms and the kernel want it), the
launchers' tile sizes (`chunked_block_config`, `scan_block_config`, shared with the reference
kernels so that both race with the same tiles), Mamba-shaped inputs (`random_inputs`), RetNet's
decays, and the memory counts and the timing plot of the figures.

The references of the graded parts (the recurrent form of linear attention, ZOH by the matrix
exponential, the sequential scan, the selective-scan loop, the delta rule's gradient step by
autograd) are each a graded function or equal to one, so they are the instructor's: the visible
checks compare with their outputs on the lab's cases, shipped in
genfast/fixtures/lab03_linear_attention_mamba.pt; the grader passes the references in as
`reference` and adds hidden cases (`more`). The LSTM step is checked against torch.nn.LSTMCell.
"""
import time

import torch
import torch.nn.functional as F
import triton

from genfast import bench, checks, fixtures, runtime
from genfast.compile_info import KernelSignature

LAB = "lab03_linear_attention_mamba"


# support for the given code ---------------------------------------------------------------
def log_decay(gamma, B: int, H: int, N: int, device, dtype=torch.float32) -> torch.Tensor:
    """log gamma_t as a (B, H, N) tensor from None (no decay), a float, (H,) or (B, H, N)."""
    if gamma is None:
        return torch.zeros(B, H, N, device=device, dtype=dtype)
    g = torch.as_tensor(gamma, device=device, dtype=dtype)
    if g.ndim == 0:
        g = g.expand(H)
    if g.ndim == 1:
        assert g.shape == (H,), f"gamma must have one value per head ({H}), got {tuple(g.shape)}"
        g = g[None, :, None].expand(B, H, N)
    assert g.shape == (B, H, N), f"gamma must be a float, (H,) or (B, H, N); got {tuple(g.shape)}"
    assert bool((g > 0).all()) and bool((g <= 1).all()), "decays must lie in (0, 1]"
    return torch.log(g)


def log2_gamma(gamma, H: int, device) -> torch.Tensor:
    """(H,) fp32 tensor of log2(gamma_h) from None, a float or an (H,) tensor (the kernel's input)."""
    if gamma is None:
        return torch.zeros(H, device=device, dtype=torch.float32)
    g = torch.as_tensor(gamma, dtype=torch.float32, device=device).expand(H).contiguous()
    assert bool((g > 0).all()) and bool((g <= 1).all()), "decays must lie in (0, 1]"
    return torch.log2(g)


def chunked_block_config(d_k: int, d_v: int) -> dict:
    """Chunk and tile sizes of the chunked kernel: 64- or 32-token chunks on a GPU, 16 in the interpreter."""
    block_dk = triton.next_power_of_2(max(d_k, 16))
    if runtime.on_gpu():
        # 32 value columns a program, 8 warps; 64-token chunks for d_k <= 64, 32 above: the larger
        # tiles spill registers on sm_80/sm_90 (python -m autograder compile-report)
        return dict(CHUNK=64 if block_dk <= 64 else 32, BLOCK_DK=block_dk,
                    BLOCK_DV=min(32, triton.next_power_of_2(max(d_v, 16))), num_warps=8, num_stages=2)
    return dict(CHUNK=16, BLOCK_DK=block_dk, BLOCK_DV=triton.next_power_of_2(max(d_v, 16)))


def scan_block_config(D: int, S: int) -> dict:
    """Tiles of the selective scan: 16 channels x 32 steps on a GPU (8 for a state of 64), 16 x 8 in the interpreter
    (small, and several blocks)."""
    block_s = triton.next_power_of_2(max(S, 2))
    if runtime.on_gpu():
        return dict(BLOCK_L=32 if block_s <= 16 else 8, BLOCK_D=16, BLOCK_S=block_s, num_warps=4)  # no spills
    return dict(BLOCK_L=8, BLOCK_D=min(16, triton.next_power_of_2(max(D, 2))), BLOCK_S=block_s)


def retnet_gammas(H: int) -> torch.Tensor:
    """RetNet's per-head decays 1 - 2^(-5 - 7 h / (H - 1)), h = 0 .. H-1."""
    return 1.0 - 2.0 ** (-5.0 - torch.arange(H, dtype=torch.float32) * 7.0 / max(H - 1, 1))


def random_inputs(batch, L, D, S, dtype=torch.float32, device="cpu", seed=0):
    """Inputs shaped like Mamba's: delta = softplus(.) > 0, A = -(1 .. S) per channel (S4D-real init)
    scaled by a random factor, B and C ~ N(0, 1). A stays fp32 whatever `dtype`."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, L, D, generator=gen)
    delta = F.softplus(torch.randn(batch, L, D, generator=gen) - 1.0)
    A = -torch.arange(1, S + 1, dtype=torch.float32)[None, :] * torch.exp(0.5 * torch.randn(D, 1, generator=gen))
    Bmat, C = torch.randn(batch, L, S, generator=gen), torch.randn(batch, L, S, generator=gen)
    return tuple(t.to(device=device, dtype=dtype) if t is not A else t.to(device=device)
                 for t in (x, delta, A, Bmat, C))


def state_bytes(H, d, element_size=4):
    """Memory an RNN-form layer keeps per sequence: one d x d state per head, whatever N."""
    return H * d * d * element_size


def attention_memory_bytes(H, N, d, element_size=2):
    """Memory softmax attention keeps per sequence and layer: keys and values of all N tokens."""
    return 2 * H * N * d * element_size


def plot_form_times(forms: dict, ns=(256, 512, 1024, 2048), heads=4, d=32, ax=None):
    """Time each form (`label: fn(q, k, v)`) once per N on one CPU core, inputs (1, heads, N, d),
    and plot the milliseconds against N on log-log axes."""
    import matplotlib.pyplot as plt
    times = {label: [] for label in forms}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for n in ns:
            q, k, v = (torch.randn(1, heads, n, d) for _ in range(3))
            for label, fn in forms.items():
                start = time.perf_counter()
                checks.call(fn, q, k, v, name=label)
                times[label].append(time.perf_counter() - start)
    except checks.CheckFailed as exc:
        print(f"not plotted: {exc}")
        return None
    finally:
        torch.set_num_threads(threads)
    if ax is None:
        ax = plt.figure(figsize=(5, 3.6)).gca()
    for (label, ts), style in zip(times.items(), ("^-", "v-", "o-", "s-")):
        ax.loglog(ns, [t * 1e3 for t in ts], style, label=label)
    ax.set(xlabel="N (tokens)", ylabel=f"ms ({heads} heads, d={d}, 1 core)", title="time of one layer's mixing")
    ax.legend(fontsize=7)
    plt.tight_layout()
    plt.show()
    return times


# the lab's cases (shared with the fixture builder, so the shipped outputs match them) ------
def _randn(*shape, device, **kwargs) -> torch.Tensor:
    return checks.randn(*shape, **kwargs).to(device)


def lstm_cases(shapes, device=None):
    device = device or runtime.device()
    return [checks.Case(f"batch={bt} m={m} n={n}", lambda bt=bt, m=m, n=n: dict(
                x=_randn(bt, m, seed=m, device=device), h=_randn(bt, n, seed=n, device=device),
                c=_randn(bt, n, seed=n + 1, device=device),
                w_ih=_randn(4 * n, m, seed=2, scale=0.5, device=device),
                w_hh=_randn(4 * n, n, seed=3, scale=0.5, device=device), b=_randn(4 * n, seed=4, device=device)))
            for bt, m, n in shapes]


def la_cases(shapes, gamma_kind="none", positive=False, device=None):
    """q, k, v (B, H, N, d), gamma None / per head / per token, normalised (phi = elu + 1) or not."""
    device = device or runtime.device()

    def make(B, H, N, d):
        q, k = _randn(B, H, N, d, seed=N, scale=d ** -0.5, device=device), _randn(B, H, N, d, seed=N + 1, device=device)
        if positive:  # phi = elu + 1 keeps the normaliser positive
            q, k = F.elu(q) + 1, F.elu(k) + 1
        gen = torch.Generator().manual_seed(N)
        gamma = {"none": None, "head": (0.6 + 0.4 * torch.rand(H, generator=gen)).to(device),
                 "token": (0.5 + 0.5 * torch.rand(B, H, N, generator=gen)).to(device)}[gamma_kind]
        return dict(q=q, k=k, v=_randn(B, H, N, d, seed=N + 2, device=device), gamma=gamma, normalize=positive)
    return [checks.Case(f"B={B} H={H} N={N} d={d} gamma={gamma_kind}{' normalised' if positive else ''}",
                        lambda B=B, H=H, N=N, d=d: make(B, H, N, d)) for B, H, N, d in shapes]


def chunked_cases(shapes, decay=True, device=None):
    device = device or runtime.device()

    def make(B, H, N, d, chunk):
        gen = torch.Generator().manual_seed(N + chunk)
        gamma = (0.6 + 0.4 * torch.rand(H, generator=gen)).to(device) if decay else None
        return dict(q=_randn(B, H, N, d, seed=N, scale=d ** -0.5, device=device),
                    k=_randn(B, H, N, d, seed=N + 1, device=device),
                    v=_randn(B, H, N, d, seed=N + 2, device=device), gamma=gamma, chunk=chunk)
    return [checks.Case(f"B={B} H={H} N={N} d={d} chunk={c}{'' if decay else ' no decay'}",
                        lambda B=B, H=H, N=N, d=d, c=c: make(B, H, N, d, c)) for B, H, N, d, c in shapes]


def kernel_cases(shapes, dtype=torch.float32, decay=True, device=None):
    device = device or runtime.device()

    def make(B, H, N, dk, dv):
        gen = torch.Generator().manual_seed(N)
        gamma = (0.7 + 0.3 * torch.rand(H, generator=gen)).to(device) if decay else None
        return dict(q=_randn(B, H, N, dk, seed=N, scale=dk ** -0.5, dtype=dtype, device=device),
                    k=_randn(B, H, N, dk, seed=N + 1, dtype=dtype, device=device),
                    v=_randn(B, H, N, dv, seed=N + 2, dtype=dtype, device=device), gamma=gamma)
    return [checks.Case(f"B={B} H={H} N={N} dk={dk} dv={dv} {str(dtype)[6:]}{'' if decay else ' no decay'}",
                        lambda B=B, H=H, N=N, dk=dk, dv=dv: make(B, H, N, dk, dv)) for B, H, N, dk, dv in shapes]


def zoh_inputs(D, S, lead):
    """A (D, S) <= 0 with one zero eigenvalue, delta (*lead, D) > 0, Bmat (*lead, S); fp64, CPU."""
    gen = torch.Generator().manual_seed(D * S)
    A = -torch.rand(D, S, generator=gen, dtype=torch.float64) * 4
    A[0, 0] = 0.0  # a zero eigenvalue: B_bar = delta * B in the limit
    delta = torch.rand(*lead, D, generator=gen, dtype=torch.float64) + 0.05
    Bmat = torch.randn(*lead, S, generator=gen, dtype=torch.float64)
    return delta, A, Bmat


def zoh_indices(lead):
    """The leading positions the ZOH check looks at: the first and the last."""
    return [(0,) * len(lead), tuple(n - 1 for n in lead)]


def zoh_expected(delta, A, Bmat, idx, zoh_matrix):
    """(A_bar, B_bar) at leading position idx, each (D, S), channel by channel from `zoh_matrix`
    (the ZOH of a dense A by the augmented matrix exponential)."""
    rows = [zoh_matrix(torch.diag(A[d]), Bmat[idx][:, None], delta[idx][d].item()) for d in range(A.shape[0])]
    return torch.stack([torch.diagonal(A_m) for A_m, _ in rows]), torch.stack([B_m[:, 0] for _, B_m in rows])


def scan_inputs(shape):
    """a in (0, 1) and b ~ N(0, 1) of `shape` (steps along dim 0); fp64, CPU."""
    gen = torch.Generator().manual_seed(shape[0])
    return (torch.rand(*shape, generator=gen, dtype=torch.float64),
            torch.randn(*shape, generator=gen, dtype=torch.float64))


def sel_scan_cases(shapes, dtype=torch.float32, device=None):
    device = device or runtime.device()

    def make(batch, L, D, S):
        x, delta, A, Bmat, C = random_inputs(batch, L, D, S, dtype=dtype, device=device, seed=L + D)
        return dict(x=x, delta=delta, A=A, Bmat=Bmat, C=C)
    return [checks.Case(f"batch={b} L={L} D={D} S={S} {str(dtype)[6:]}", lambda b=b, L=L, D=D, S=S: make(b, L, D, S))
            for b, L, D, S in shapes]


def delta_cases(shapes, device=None):
    device = device or runtime.device()

    def make(lead, dv, dk, scalar):
        gen = torch.Generator().manual_seed(dv * dk)
        beta = 0.7 if scalar else torch.rand(*lead, generator=gen, dtype=torch.float64).to(device)
        return dict(H=_randn(*lead, dv, dk, seed=1, dtype=torch.float64, device=device),
                    k=_randn(*lead, dk, seed=2, dtype=torch.float64, device=device),
                    v=_randn(*lead, dv, seed=3, dtype=torch.float64, device=device), beta=beta)
    return [checks.Case(f"H {(*lead, dv, dk)}, beta {'float' if s else 'tensor'}",
                        lambda lead=lead, dv=dv, dk=dk, s=s: make(lead, dv, dk, s)) for lead, dv, dk, s in shapes]


# the visible cases of each check --------------------------------------------------------------
LSTM_SHAPES = [(1, 1, 1), (3, 5, 4)]
FORMS_GROUPS = [([(1, 1, 1, 4), (2, 3, 9, 8)], "none", False), ([(1, 1, 1, 4), (2, 3, 9, 8)], "head", False),
                ([(1, 1, 1, 4), (2, 3, 9, 8)], "token", False), ([(2, 2, 12, 8)], "head", True)]
CHUNKED_SHAPES = [(1, 1, 1, 4, 4), (2, 2, 16, 8, 4), (2, 3, 21, 8, 8)]
CHUNKED_NO_DECAY_SHAPES = [(1, 2, 10, 4, 3)]
KERNEL_SHAPES = [(1, 1, 1, 16, 16), (1, 1, 16, 16, 16), (2, 2, 50, 16, 16), (1, 2, 37, 32, 32)]
KERNEL_NO_DECAY_SHAPES = [(1, 1, 40, 16, 16)]
ZOH_CASES = [(1, 1, ()), (3, 4, (2,)), (2, 8, (2, 3))]
SCAN_SHAPES = [(1, 3), (2, 1), (13, 4), (64, 2)]
SEL_SCAN_SHAPES = [(1, 1, 1, 1), (1, 8, 4, 4), (2, 13, 6, 4), (1, 20, 3, 16)]
DELTA_SHAPES = [((), 3, 2, True), ((4,), 5, 3, False)]


def kernel_dtypes() -> list:
    """The chunked kernel is checked in bf16 on a GPU (what it is for), fp32 in the interpreter."""
    return [torch.bfloat16] if runtime.on_gpu() else [torch.float32]


def scan_dtypes() -> list:
    return [torch.float32, torch.bfloat16] if runtime.on_gpu() else [torch.float32]


def _shipped(key: str):
    return fixtures.load(LAB, key)


def _check_cases(fn, cases, reference, prefix, *, name, hint="", atol=None, rtol=None):
    """As checks.check_function, the expected output of each case from `reference(**inputs)` (the
    grader's) or, with no reference (a learner's install), shipped under '<prefix>/<case name>'."""
    __tracebackhide__ = True
    cases = list(cases)
    for case in cases:
        inputs = case.make_inputs()
        actual = checks.call(fn, name=name, case=case.name, hint=hint, **inputs)
        expected = reference(**inputs) if reference is not None else _shipped(f"{prefix}/{case.name}")
        max_abs = checks.compare(actual, expected, atol=atol, rtol=rtol, what=f"{name}, case '{case.name}'", hint=hint)
        print(f"  ok  {case.name:<44} max abs error {max_abs:.2e}")
    print(f"{name}: all {len(cases)} cases passed.")


# 1. the LSTM step -------------------------------------------------------------------------
LSTM_HINT = "the gates come in the order i, f, g, o; sigmoid on i, f, o and tanh on g; h_new uses the NEW c"


def lstm_reference(x, h, c, w_ih, w_hh, b):
    """torch.nn.LSTMCell with these weights (bias_hh = 0): (h_new, c_new) concatenated."""
    cell = torch.nn.LSTMCell(x.shape[-1], h.shape[-1]).to(x.device)
    with torch.no_grad():
        cell.weight_ih.copy_(w_ih), cell.weight_hh.copy_(w_hh), cell.bias_ih.copy_(b), cell.bias_hh.zero_()
        return torch.cat(cell(x, (h, c)), dim=-1)


def check_lstm(lstm_step, more=()):
    checks.check_function(lambda **kw: torch.cat(lstm_step(**kw), dim=-1), lstm_reference,
                          lstm_cases(LSTM_SHAPES + list(more)), name="lstm_step", atol=1e-5, hint=LSTM_HINT)


# 2. linear attention: parallel and recurrent forms --------------------------------------------
FORMS_HINT = ("D[t, s] = exp(L_t - L_s) for s <= t and 0 above the diagonal, L = cumsum(log gamma); in the "
              "recurrence, decay the old state BEFORE adding k_t v_t^T, and decay z the same way")


def check_linear_attention_forms(linear_attention_parallel, linear_attention_recurrent, reference=None, more=()):
    """Both forms against the recurrent reference on each (shapes, gamma kind, normalised) group
    (FORMS_GROUPS, then `more`); then, with gamma = None, the parallel form against (Q K^T masked) V."""
    __tracebackhide__ = True
    for fn in (linear_attention_parallel, linear_attention_recurrent):
        for shapes, kind, positive in FORMS_GROUPS + list(more):
            _check_cases(fn, la_cases(shapes, kind, positive), reference, "forms",
                         name=getattr(fn, "__name__", "your function"), atol=1e-5, hint=FORMS_HINT)
    # attention without the softmax: with gamma = None the parallel form is the masked product
    q, k, v = (checks.randn(1, 1, 6, 4, seed=i) for i in range(3))
    checks.compare(checks.call(linear_attention_parallel, q, k, v, name="linear_attention_parallel"),
                   (q @ k.transpose(-1, -2)).tril() @ v, atol=1e-5, what="linear_attention_parallel vs (Q K^T masked) V")
    print("parallel form == recurrent form == masked (Q K^T) V")


# 3. the chunked form in PyTorch ---------------------------------------------------------------
CHUNKED_HINT = ("inter-chunk: row i of the chunk reads the carried state with gamma^(i+1); the state ages by "
                "gamma^C per chunk and token j of the chunk enters it with gamma^(C-1-j); the last chunk may be "
                "shorter than C")


def check_chunked(linear_attention_chunked, reference=None, more=()):
    """Against the recurrent form (`reference(q, k, v, gamma)`) with a per-head decay, then with none."""
    __tracebackhide__ = True
    ref = reference and (lambda q, k, v, gamma, chunk: reference(q, k, v, gamma))
    _check_cases(linear_attention_chunked, chunked_cases(CHUNKED_SHAPES + list(more)), ref, "chunked",
                 name="linear_attention_chunked", atol=1e-5, hint=CHUNKED_HINT)
    _check_cases(linear_attention_chunked, chunked_cases(CHUNKED_NO_DECAY_SHAPES, decay=False), ref, "chunked",
                 name="linear_attention_chunked", atol=1e-5, hint=CHUNKED_HINT)


# 4. the chunked Triton kernel -----------------------------------------------------------------
KERNEL_HINT = ("if N <= CHUNK passes and longer inputs fail, look at the inter-chunk part: decay_q = gamma^(i+1), "
               "decay_k = gamma^(C-1-j), decay_chunk = gamma^C, and the read uses the state from BEFORE the update; "
               "if only the last rows fail, mask the loads and the store with rows < N")


def kernel_tolerance(dtype) -> dict:
    return dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=6e-2, rtol=3e-2)


def check_chunked_kernel(chunked_la, reference=None, more=()):
    """Against the recurrent form (`reference(q, k, v, gamma)`), bf16 on a GPU and fp32 in the interpreter."""
    __tracebackhide__ = True
    for dtype in kernel_dtypes():
        print(checks.precision(dtype, **kernel_tolerance(dtype)))
        _check_cases(chunked_la, kernel_cases(KERNEL_SHAPES + list(more), dtype), reference, "kernel",
                     name="chunked_la", hint=KERNEL_HINT, **kernel_tolerance(dtype))
        _check_cases(chunked_la, kernel_cases(KERNEL_NO_DECAY_SHAPES, dtype, decay=False), reference, "kernel",
                     name="chunked_la", hint=KERNEL_HINT, **kernel_tolerance(dtype))


# the learner's kernels as compiled for a GPU (the launchers' configurations), for the compile report
CHUNKED_KERNEL = KernelSignature(
    "chunked_la_kernel", {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "O": "*bf16", "LOG2_GAMMA": "*fp32"},
    lambda: [chunked_block_config(d, d) for d in (64, 128)],
    reference="linear_attention._chunked_linear_attention_fwd (reference)")
SCAN_KERNEL = KernelSignature(
    "selective_scan_kernel", {name: "*fp32" for name in ("X", "DELTA", "A", "BM", "CM", "Y")},
    lambda: [scan_block_config(512, s) for s in (16, 64)], reference="selective_scan._selective_scan_fwd (reference)")


def speed_chunked_kernel(chunked_la, reference=None):
    """B=4 H=16 N=4096 d=64 bf16 with RetNet's decays, fresh GPU-made inputs for every timed call."""
    def inputs(seed):
        q, k, v = (bench.randn(4, 16, 4096, 64, seed=seed + i, dtype=torch.bfloat16, scale=0.125 if i < 2 else 1.0)
                   for i in range(3))
        return q, k, v, retnet_gammas(16).to(q.device)
    return bench.speed_points(chunked_la, reference, inputs=inputs, points=2,
                              name="chunked linear attention (B=4 H=16 N=4096 d=64 bf16)",
                              signature=CHUNKED_KERNEL.where(BLOCK_DK=64))


# 5. ZOH and the parallel scan ------------------------------------------------------------------
def check_zoh(zoh_discretize, reference=None, more=()):
    """A_bar and B_bar, channel by channel, against the ZOH by the matrix exponential
    (`reference`: zoh_matrix(A (S, S), B (S, m), delta)) at the first and last leading positions."""
    __tracebackhide__ = True
    for D, S, lead in ZOH_CASES + list(more):
        delta, A, Bmat = zoh_inputs(D, S, lead)
        A_bar, B_bar = checks.call(zoh_discretize, delta, A, Bmat, name="zoh_discretize")
        for idx in zoh_indices(lead):
            if reference is not None:
                A_exp, B_exp = zoh_expected(delta, A, Bmat, idx, reference)
            else:
                A_exp, B_exp = (_shipped(f"zoh/D={D} S={S} lead={lead} at {idx}/{part}") for part in ("A_bar", "B_bar"))
            for d in range(D):
                checks.compare(A_bar[idx][d], A_exp[d], atol=1e-10, what=f"A_bar[{idx}, {d}]",
                               hint="A_bar = exp(delta A)")
                checks.compare(B_bar[idx][d], B_exp[d], atol=1e-10, what=f"B_bar[{idx}, {d}]",
                               hint="B_bar = (exp(delta A) - 1) / A * B, and delta * B where A == 0")
        print(f"  ok  zoh_discretize D={D} S={S} leading dims {lead}: matches the matrix exponential")


SCAN_HINT = "round with offset o: b[t] <- a[t] * b[t-o] + b[t] and a[t] <- a[t] * a[t-o], both from the OLD values"


def check_scan(parallel_scan, reference=None, more=()):
    """The states h_t = a_t h_{t-1} + b_t and the running products of a, against `reference(a, b)`
    (the sequential loop: (products, states))."""
    __tracebackhide__ = True
    for shape in SCAN_SHAPES + list(more):
        a, b = scan_inputs(shape)
        got = checks.call(parallel_scan, a, b, name="parallel_scan")
        if reference is not None:
            products, states = reference(a, b)
        else:
            products, states = (_shipped(f"scan/{tuple(shape)}/{part}") for part in ("products", "states"))
        checks.compare(got[1], states, atol=1e-10, what=f"parallel_scan states, L={shape[0]}", hint=SCAN_HINT)
        checks.compare(got[0], products, atol=1e-10, what=f"parallel_scan products, L={shape[0]}", hint=SCAN_HINT)
        print(f"  ok  parallel_scan {tuple(shape)}")


# 6. the selective scan in Triton ----------------------------------------------------------------
SEL_SCAN_HINT = ("if L <= BLOCK_L (8 here) passes and longer inputs fail, the state is not carried between blocks: "
                 "fold h into the first step (b_1 <- a_1 h + b_1) and take the new h from the last step; if everything "
                 "fails, check the order in scan_combine: (a1, b1) is the EARLIER element, the result is "
                 "(a1 a2, a2 b1 + b2)")


def check_selective_scan(sel_scan, reference=None, more=()):
    """Against the sequential loop (`reference(x, delta, A, Bmat, C)`), fp32 (and bf16 on a GPU)."""
    __tracebackhide__ = True
    for dtype in scan_dtypes():
        tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else {}
        print(checks.precision(dtype, dot=False, **tol))
        _check_cases(sel_scan, sel_scan_cases(SEL_SCAN_SHAPES + list(more), dtype), reference, "sel_scan",
                     name="sel_scan", hint=SEL_SCAN_HINT, **tol)


def speed_selective_scan(sel_scan, reference=None):
    """batch=4 L=1024 D=512 S=16 fp32, inputs distributed as `random_inputs` but made on the GPU,
    fresh for every timed call."""
    def inputs(seed, batch=4, L=1024, D=512, S=16):
        x, scale = bench.randn(batch, L, D, seed=seed), torch.exp(0.5 * bench.randn(D, 1, seed=seed + 2))
        A = -torch.arange(1, S + 1, dtype=torch.float32, device=x.device)[None, :] * scale
        return (x, F.softplus(bench.randn(batch, L, D, seed=seed + 1) - 1.0), A,
                bench.randn(batch, L, S, seed=seed + 3), bench.randn(batch, L, S, seed=seed + 4))
    return bench.speed_points(sel_scan, reference, inputs=inputs, points=2,
                              name="selective scan (batch=4 L=1024 D=512 S=16 fp32)",
                              signature=SCAN_KERNEL.where(BLOCK_S=16))


# 7. the delta rule --------------------------------------------------------------------------------
DELTA_HINT = "err = H k - v (a d_v vector); the update is the outer product err k^T, scaled by beta"


def check_delta_rule(delta_rule_step, reference=None, more=()):
    """Against one gradient step of autograd on 1/2 ||H k - v||^2 (`reference(H, k, v, beta)`), then the
    exact write: with beta = 1 and a unit key the memory returns v for k."""
    __tracebackhide__ = True
    _check_cases(delta_rule_step, delta_cases(DELTA_SHAPES + list(more)), reference, "delta",
                 name="delta_rule_step", atol=1e-10, hint=DELTA_HINT)
    k_unit = F.normalize(checks.randn(6, seed=5, dtype=torch.float64), dim=0)
    v_new = checks.randn(4, seed=6, dtype=torch.float64)
    H_new = checks.call(delta_rule_step, checks.randn(4, 6, seed=7, dtype=torch.float64), k_unit, v_new, 1.0,
                        name="delta_rule_step")
    checks.compare(H_new @ k_unit, v_new, atol=1e-10, what="H_t k_t after a step with beta = 1 and a unit key",
                   hint="with beta = 1 and |k| = 1 the memory must return exactly v for k")
    print("the delta rule is one gradient step on 1/2 ||H k - v||^2, and with beta = 1 it writes exactly")
