"""The FlashAttention-2 backward in Triton (kernels/flash_backward.py): dQ, dK, dV against
torch.autograd through naive attention, causal and not, N not a multiple of the blocks, every head
dim; and a tiny model that trains through the autograd Function. fp32 in the CPU interpreter; on
a GPU (`make gpu-check` runs this file there) fp16 and bf16 on tensor cores, with fp32 accumulation."""
import pytest
import torch

from genfast import runtime

from kernels.attention import flash_attention, torch_attention
from kernels.flash_backward import backward_block_config, flash_attn, flash_backward

SHAPES = [(1, 1, 1, 16, True), (2, 2, 37, 32, False), (1, 2, 65, 64, True), (2, 1, 64, 16, False),
          (1, 1, 50, 128, True), (1, 1, 33, 64, False)]


DTYPES = [torch.float16, torch.bfloat16] if runtime.on_gpu() else [torch.float32]
# gradients sum N products of rounded inputs: half precision needs a tolerance of its own
TOLERANCE = {torch.float32: dict(atol=2e-5, rtol=1e-4), torch.float16: dict(atol=2e-2, rtol=2e-2),
             torch.bfloat16: dict(atol=8e-2, rtol=5e-2)}


def _autograd(q, k, v, do, causal, scale=None):
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    o = torch_attention(*leaves, causal, scale)[0]
    return torch.autograd.grad(o, leaves, do.double())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,H,N,d,causal", SHAPES)
def test_gradients_match_autograd(B, H, N, d, causal, dtype):
    gen = torch.Generator().manual_seed(N * d)
    q, k, v, do = (torch.randn(B, H, N, d, generator=gen).to(runtime.device(), dtype) for _ in range(4))
    o, lse = flash_attention(q, k, v, causal)
    for name, got, want in zip("qkv", flash_backward(q, k, v, o, lse, do, causal), _autograd(q, k, v, do, causal)):
        assert torch.allclose(got.double(), want, **TOLERANCE[dtype]), \
            f"d{name}: max error {(got.double() - want).abs().max():.2e} at B={B} H={H} N={N} d={d} causal={causal}"


def test_the_blocks_tested_here_leave_ragged_ends():
    cfg = backward_block_config(64)
    for kernel in ("dkdv", "dq"):
        assert any(N % cfg[kernel]["BLOCK_M"] and N % cfg[kernel]["BLOCK_N"] for _, _, N, _, _ in SHAPES)
        assert any(N > 2 * cfg[kernel]["BLOCK_N"] for _, _, N, _, _ in SHAPES)  # several blocks


def test_scale_and_non_contiguous_inputs():
    gen, dtype = torch.Generator().manual_seed(1), DTYPES[0]
    q, k, v, do = (torch.randn(2, 40, 3, 32, generator=gen).to(runtime.device(), dtype).transpose(1, 2)
                   for _ in range(4))  # (B, H, N, d) views of (B, N, H, d) tensors
    o, lse = flash_attention(q, k, v, True, scale=0.3)
    got = flash_backward(q, k, v, o, lse, do, True, scale=0.3)
    for g, w in zip(got, _autograd(q, k, v, do, True, scale=0.3)):
        assert torch.allclose(g.double(), w, **TOLERANCE[dtype])


@pytest.mark.skipif(runtime.on_gpu(), reason="fp32 end to end: on a GPU tl.dot would use TF32")
def test_a_tiny_model_trains_through_the_autograd_function():
    """One attention layer learns to copy the previous token's embedding: the loss falls, and its
    first gradients equal those of the same model on torch's attention."""
    torch.manual_seed(0)
    N, d = 24, 16
    x = torch.randn(4, 1, N, d)
    target = torch.roll(x, 1, dims=2)
    target[:, :, 0] = 0

    def model(attn):
        torch.manual_seed(1)
        wq, wk, wv = (torch.nn.Parameter(torch.randn(d, d) * 0.3) for _ in range(3))
        step = lambda: ((attn(x @ wq, x @ wk, x @ wv) - target) ** 2).mean()
        return [wq, wk, wv], step

    params, loss = model(lambda q, k, v: flash_attn(q, k, v, True))
    ref_params, ref_loss = model(lambda q, k, v: torch_attention(q, k, v, True)[0])
    got = torch.autograd.grad(loss(), params)
    want = torch.autograd.grad(ref_loss(), ref_params)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-5, rtol=1e-4)
    opt = torch.optim.Adam(params, lr=0.05)
    first = loss().item()
    for _ in range(40):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    assert loss().item() < 0.6 * first, (first, loss().item())
