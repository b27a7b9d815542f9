"""Paged decode attention: one new query per request over that request's keys and values, read from a
shared pool of fixed-size blocks through the request's block table (vLLM's PagedAttention).

The cache of every layer is a pool of `num_blocks` blocks of `block_size` token slots,
(num_blocks, block_size, H_kv, d). Request b owns the blocks block_tables[b, 0], block_tables[b, 1],
...: its token n lives in slot

    block = block_tables[b, n // block_size],     offset = n % block_size,

and it holds seq_lens[b] tokens: every block of its table is full except the last, which holds
seq_lens[b] - (blocks - 1) * block_size of them. The blocks need not be contiguous or in order:
that indirection is what lets a server hand out memory a block at a time, as requests grow, with
at most one partly filled block per request (the fragmentation of contiguous reservation is gone).

The attention itself is lab04's split-K decode ("flash-decoding"), GQA-aware: program
(b * H_kv + kv head, split) holds the G = H / H_kv query heads of that KV head as one tile (padded
to BLOCK_G >= 16 rows for tl.dot), streams the tokens [split * SPLIT_LEN, min((split + 1) *
SPLIT_LEN, seq_lens[b])) in tiles of BLOCK_N with the online softmax, and writes a normalised
partial output o_s and its log-sum-exp lse_s per query row; the combine is exact:

    LSE = log sum_s exp(lse_s),     o = sum_s exp(lse_s - LSE) o_s.

What paging changes is only the address of a key: a tile of BLOCK_N tokens (64 on a GPU: four
16-token blocks) gathers its rows through the table, one table entry per block it touches, each
row d contiguous values (256 bytes at d = 128, fp16: coalesced loads). Requests of very different
lengths share one launch: the grid has the splits of the longest request, and a program whose split
starts past its request's end stores o = 0, lse = -inf (its loop never runs), which the combine
weighs by exp(-inf) = 0. Every visited tile holds a visible key (it starts below the split's end),
so the running max is finite after the first tile and the -inf masking never makes a nan.

Work is proportional to the tokens really cached, not to the longest request: at the same total
tokens the paged kernel reads the same bytes as a contiguous cache, so it is expected to run about as
fast (`bench_cases`: 32 requests of mixed length up to 8k against lab04's contiguous kernel; the target
is at least 0.9x; not yet measured on a GPU when this was written).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from genfast.serving import (BENCH_BLOCK, BENCH_MAX_LEN, BENCH_REQUESTS, bench_lengths,  # noqa: F401  (genfast's)
                             contiguous_attention, paged_attention_spec, paged_config, random_paged_cache)
from kernels.kv_cache import _combine_kernel, block_g, decode_attention



@triton.jit
def _paged_decode_kernel(Q, K_POOL, V_POOL, TABLES, LENS, O_PART, LSE_PART,
                         H_KV, G, sm_scale, n_slots, SPLIT_LEN, stride_tb,
                         stride_kb, stride_kn, stride_kh, stride_vb, stride_vn, stride_vh,
                         BLOCK_SIZE: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr):
    """Program (row, split), row = b * H_KV + kv head. Q (B*H, D) contiguous, query rows row * G + g;
    K_POOL, V_POOL (num_blocks, BLOCK_SIZE, H_KV, D), last dim contiguous; TABLES (B, max_blocks)
    int32, LENS (B,) int32; O_PART (B*H, n_slots, D), LSE_PART (B*H, n_slots) fp32."""
    row = tl.program_id(0)
    split = tl.program_id(1)
    b = row // H_KV
    kvh = row % H_KV
    seq_len = tl.load(LENS + b)
    start = split * SPLIT_LEN
    end = tl.minimum(start + SPLIT_LEN, seq_len)
    offs_g = tl.arange(0, BLOCK_G)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    DT = Q.dtype.element_ty                        # the dots run in q's dtype (fp16/bf16 on a GPU)
    q_rows = row.to(tl.int64) * G + offs_g
    g_ok = offs_g < G
    q = tl.load(Q + q_rows[:, None] * D + offs_d[None, :], mask=g_ok[:, None], other=0.0)
    q = (q.to(tl.float32) * (sm_scale * 1.4426950408889634)).to(DT)
    table = TABLES + b.to(tl.int64) * stride_tb
    k_head = K_POOL + kvh.to(tl.int64) * stride_kh
    v_head = V_POOL + kvh.to(tl.int64) * stride_vh
    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], dtype=tl.float32)
    acc = tl.zeros([BLOCK_G, D], dtype=tl.float32)
    for n0 in range(start, end, BLOCK_N):
        n = n0 + offs_n
        ok = n < end
        block = tl.load(table + n // BLOCK_SIZE, mask=ok, other=0).to(tl.int64)   # the indirection
        slot = n % BLOCK_SIZE
        k_rows = block * stride_kb + slot * stride_kn                           # (BLOCK_N,)
        kt = tl.load(k_head + k_rows[None, :] + offs_d[:, None], mask=ok[None, :], other=0.0)   # (D, BLOCK_N)
        s = tl.dot(q, kt.to(DT))
        s = tl.where(ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v_rows = block * stride_vb + slot * stride_vn
        v = tl.load(v_head + v_rows[:, None] + offs_d[None, :], mask=ok[:, None], other=0.0)     # (BLOCK_N, D)
        acc = tl.dot(p.to(DT), v.to(DT), acc * alpha[:, None])
        m_i = m_new
    l_safe = tl.where(l_i > 0.0, l_i, 1.0)          # a split past the request's end: o = 0, lse = -inf
    out = O_PART + (q_rows[:, None] * n_slots + split) * D + offs_d[None, :]
    tl.store(out, acc / l_safe[:, None], mask=g_ok[:, None])
    lse = tl.where(l_i > 0.0, (m_i + tl.log2(l_safe)) * 0.6931471805599453, float("-inf"))
    tl.store(LSE_PART + q_rows * n_slots + split, lse, mask=g_ok)


def paged_partials(q, k_pool, v_pool, block_tables, seq_lens, max_len, mean_len=None, **override):
    """The split kernel alone: (o_part (B*H, S, d), lse_part (B*H, S)) fp32."""
    B, H, d = q.shape
    block_size, H_kv = k_pool.shape[1], k_pool.shape[2]
    assert d >= 16 and d & (d - 1) == 0, "head dim must be a power of two >= 16 (a tl.dot tile)"
    assert H % H_kv == 0 and k_pool.stride(-1) == 1 and v_pool.stride(-1) == 1
    cfg = dict(paged_config(B * H_kv, max_len, mean_len), **override)
    split_len = cfg.pop("SPLIT_LEN")
    n_splits = max(1, triton.cdiv(max_len, split_len))
    q = q.contiguous()
    tables = block_tables.to(torch.int32).contiguous()
    lens = seq_lens.to(torch.int32).contiguous()
    o_part = torch.empty(B * H, n_splits, d, device=q.device, dtype=torch.float32)
    lse_part = torch.empty(B * H, n_splits, device=q.device, dtype=torch.float32)
    _paged_decode_kernel[(B * H_kv, n_splits)](
        q, k_pool, v_pool, tables, lens, o_part, lse_part, H_kv, H // H_kv, 1.0 / math.sqrt(d), n_splits, split_len,
        tables.stride(0), k_pool.stride(0), k_pool.stride(1), k_pool.stride(2),
        v_pool.stride(0), v_pool.stride(1), v_pool.stride(2),
        BLOCK_SIZE=block_size, D=d, BLOCK_G=block_g(H // H_kv), **cfg)
    return o_part, lse_part


def paged_decode(q, k_pool, v_pool, block_tables, seq_lens, max_len=None, mean_len=None, out_dtype=None, **override):
    """Paged decode attention: q (B, H, d); pools (num_blocks, block_size, H_kv, d); block_tables
    (B, max_blocks) int; seq_lens (B,) int; max_len: the longest request (a host int: the grid needs it,
    and reading it from seq_lens would synchronise). -> (B, H, d) in q's dtype."""
    if max_len is None:
        max_len = int(seq_lens.max())
    B, H, d = q.shape
    o_part, lse_part = paged_partials(q, k_pool, v_pool, block_tables, seq_lens, max_len, mean_len, **override)
    n_slots = o_part.shape[1]
    out = torch.empty(B, H, d, device=q.device, dtype=out_dtype or q.dtype)
    _combine_kernel[(B * H,)](o_part, lse_part, out, n_slots, D=d, BLOCK_S=max(2, triton.next_power_of_2(n_slots)))
    return out


# ----------------------------------------------------------------------------------------------
# benchmark rows for `python -m autograder bench`
# ----------------------------------------------------------------------------------------------
def bench_cases(BenchCase, randn):
    """Two rows, B=32 requests of mixed length up to 8k, H=32 query heads on 8 KV heads (GQA), d=128, fp16,
    16-token blocks in shuffled order:

    * "paged decode": the paged kernel against torch (gather each request's blocks, SDPA per request);
    * "paged vs lab04": the paged kernel against lab04's contiguous split-K decode kernel on a
      contiguous cache of B=32 requests of the mean length: the same total tokens, the same bytes. The
      ratio (torch/kernel column: contiguous time / paged time) is what paging costs; it should be at
      least 0.9. So that the two outputs can be compared (the row checks them), every value of a request
      is the same vector in both caches (then o = that vector whatever the keys): the time does not
      depend on the values.

    shape = (B, H, max_len, d); the CPU test shrinks it."""
    def layout(shape, dtype, device):
        B, H, N, d = shape
        d = max(32, triton.next_power_of_2(d))   # lab04's kernel needs d >= 32; the CPU test shrinks d
        H_kv = max(1, H // 4)
        lengths = bench_lengths(B, N)
        nb = [triton.cdiv(n, BENCH_BLOCK) for n in lengths]
        order = torch.randperm(sum(nb), generator=torch.Generator().manual_seed(1)).to(device)
        tables = torch.zeros(B, max(nb), dtype=torch.int32, device=device)
        first = 0
        for b, k in enumerate(nb):
            tables[b, :k] = order[first:first + k].to(torch.int32)
            first += k
        q = randn(B, H_kv * 4, d, dtype=dtype, device=device, seed=0)
        k_pool = randn(sum(nb), BENCH_BLOCK, H_kv, d, dtype=dtype, device=device, seed=1)
        return lengths, tables, q, k_pool, H_kv, d

    def paged_inputs(shape, dtype, device):
        lengths, tables, q, k_pool, H_kv, d = layout(shape, dtype, device)
        v_pool = randn(*k_pool.shape, dtype=dtype, device=device, seed=2)
        lens = torch.tensor(lengths, dtype=torch.int32, device=device)
        return q, k_pool, v_pool, tables, lens, max(lengths), sum(lengths) // len(lengths)

    def versus_inputs(shape, dtype, device):
        lengths, tables, q, k_pool, H_kv, d = layout(shape, dtype, device)
        B = len(lengths)
        values = randn(B, H_kv, d, dtype=dtype, device=device, seed=3)
        v_pool = torch.empty_like(k_pool)
        for b, n in enumerate(lengths):
            v_pool[tables[b, :triton.cdiv(n, BENCH_BLOCK)].long()] = values[b]
        mean = sum(lengths) // B
        k = randn(B, H_kv, mean, d, dtype=dtype, device=device, seed=4)
        v = values[:, :, None, :].expand(B, H_kv, mean, d).contiguous()
        lens = torch.tensor(lengths, dtype=torch.int32, device=device)
        return q, k_pool, v_pool, tables, lens, max(lengths), mean, k, v

    def torch_paged(q, k_pool, v_pool, tables, lens, max_len, mean_len):
        B, H, d = q.shape
        H_kv = k_pool.shape[2]
        out = []
        for b in range(B):
            n = int(lens[b])
            blocks = tables[b, :triton.cdiv(n, BENCH_BLOCK)].long()
            k = k_pool[blocks].reshape(-1, H_kv, d)[:n].transpose(0, 1)[None]
            v = v_pool[blocks].reshape(-1, H_kv, d)[:n].transpose(0, 1)[None]
            out.append(torch.nn.functional.scaled_dot_product_attention(q[b][None, :, None], k, v,
                                                                         enable_gqa=H_kv != H)[0, :, 0])
        return torch.stack(out)

    def bytes_of(shape, dtype):
        B, H, N, d = shape
        lengths = bench_lengths(B, N)
        H_kv = max(1, H // 4)
        return 2 * sum(lengths) * H_kv * d * dtype.itemsize + 2 * B * H * d * dtype.itemsize

    shape = (BENCH_REQUESTS, 32, BENCH_MAX_LEN, 128)
    return [
        BenchCase("paged decode", shape, torch.float16, paged_inputs,
                  lambda q, kp, vp, t, l, m, mean: paged_decode(q, kp, vp, t, l, m, mean), torch_paged, bytes_of,
                  test_scale=0.02),
        BenchCase("paged vs lab04", shape, torch.float16, versus_inputs,
                  lambda q, kp, vp, t, l, m, mean, k, v: paged_decode(q, kp, vp, t, l, m, mean),
                  lambda q, kp, vp, t, l, m, mean, k, v: decode_attention(q, (k, v)), bytes_of, test_scale=0.02),
    ]


if __name__ == "__main__":
    from genfast import checks, runtime
    dtype = torch.float16 if runtime.on_gpu() else torch.float32
    dev = runtime.device()
    for lengths, H, H_kv, bs in (([1, 16, 17, 100], 4, 4, 16), ([5, 64, 33], 8, 2, 8), ([200, 3], 4, 1, 16)):
        (kp, vp, t, l), contiguous = random_paged_cache(lengths, H_kv, 32, bs, dtype=dtype, device=dev)
        q = torch.randn(len(lengths), H, 32, device=dev, dtype=dtype)
        got = paged_decode(q, kp, vp, t, l, max(lengths))
        checks.compare(got, contiguous_attention(q, contiguous).to(dtype), what=f"paged decode {lengths}",
                       **({} if dtype == torch.float32 else dict(atol=1e-2, rtol=1e-2)))
        print(f"paged decode, lengths {lengths}, H={H} H_kv={H_kv}, block {bs}: ok")
    if runtime.on_gpu():   # the two bench rows: paged against torch, and against lab04's contiguous kernel
        from kernels import benchmarks
        bandwidth = benchmarks.copy_bandwidth()
        for case in bench_cases(benchmarks.BenchCase, benchmarks.randn):
            print(benchmarks.run_case(case, bandwidth)[0])
    else:
        print("benchmarks need a GPU: on one, this compares the paged kernel with torch and with lab04's contiguous "
              "kernel at the same total tokens")
