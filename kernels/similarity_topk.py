"""Fused similarity + top-k for retrieval memory (lab 06): scores = Q D^T, k best per query.

Retrieval reads every document vector once per query batch and keeps k numbers per query. The
plain way, `(q @ D.T).topk(k)`, writes the whole (n_queries, n_docs) score matrix to memory and
reads it back; fused, the scores never leave registers and memory traffic is the document matrix,
read once. That makes the kernel memory-bound: its speed limit is HBM bandwidth.

Grid (cdiv(n_queries, BLOCK_M), n_splits): program (pid_m, s) owns BLOCK_M queries and one
contiguous split of the documents, and walks that split BLOCK_N documents at a time:

1. scores tile (BLOCK_M, BLOCK_N) = Q_tile @ D_tile^T with `tl.dot` (tensor cores on a GPU), over
   the dimension BLOCK_D at a time, fp32 accumulation; documents past the split's end -> -inf;
2. merge the tile into the running top-K of each query, held in registers as (BLOCK_M, K_PAD)
   scores and indices: K rounds of "take the largest score among the running list and the tile,
   the *lowest* document index holding it (ties go to the lower index), knock it out".

Each split writes its K best (score, index) per query, -inf / -1 where it had fewer than K
documents. A small torch merge (`merge_candidates`) sorts the n_splits * K candidates of each query
with a stable descending sort; splits are in document order and each split's list is sorted by
(score desc, index asc), so ties still go to the lower index. The result equals
`torch_similarity_topk`. The tiles, the splits and the merge are `genfast.agents.topk_launch`'s,
shared with the notebook's launcher.

Traffic: the document matrix (n_docs * dim elements) dominates; bench_cases reports GB/s over it.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from genfast.agents.topk_launch import block_config, bytes_moved, merge_candidates, split_documents  # noqa: F401
from kernels.agents.retrieval import topk_scores

BIG_INDEX = tl.constexpr(2147483647)  # a jit function may only read constexpr globals


def torch_similarity_topk(q: torch.Tensor, docs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: (scores, indices) of the min(k, n) largest q . d per query, ties to the lower index
    (the agent's retrieval top-k, in fp32)."""
    return topk_scores(q.float(), docs.float(), k)


@triton.jit
def _topk_kernel(Q, D, OUT_S, OUT_I, n_queries, n_docs, dim, docs_per_split,
                 stride_qm, stride_qd, stride_dn, stride_dd, stride_om, stride_os,
                 K: tl.constexpr, K_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    pid_m = tl.program_id(0)
    split = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < n_queries
    offs_d = tl.arange(0, BLOCK_D)
    offs_k = tl.arange(0, K_PAD)
    best_s = tl.full([BLOCK_M, K_PAD], float("-inf"), tl.float32)   # running top-K, sorted
    best_i = tl.full([BLOCK_M, K_PAD], -1, tl.int32)
    start = split * docs_per_split
    end = tl.minimum(start + docs_per_split, n_docs)
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = offs_n < end
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for d0 in range(0, dim, BLOCK_D):
            d_ok = d0 + offs_d < dim
            d_tile = tl.load(D + offs_n[:, None].to(tl.int64) * stride_dn + (d0 + offs_d)[None, :] * stride_dd,
                             mask=n_ok[:, None] & d_ok[None, :], other=0.0)
            q_tile = tl.load(Q + offs_m[:, None] * stride_qm + (d0 + offs_d)[None, :] * stride_qd,
                             mask=m_ok[:, None] & d_ok[None, :], other=0.0).to(d_tile.dtype)
            acc = tl.dot(q_tile, tl.trans(d_tile), acc, input_precision=PRECISION)
        acc = tl.where(n_ok[None, :], acc, float("-inf"))
        # merge the tile into the running list: K rounds of arg-max over both
        new_s = tl.full([BLOCK_M, K_PAD], float("-inf"), tl.float32)
        new_i = tl.full([BLOCK_M, K_PAD], -1, tl.int32)
        for r in tl.static_range(K):
            top = tl.maximum(tl.max(acc, axis=1), tl.max(best_s, axis=1))
            idx = tl.minimum(tl.min(tl.where(acc == top[:, None], offs_n[None, :], BIG_INDEX), axis=1),
                             tl.min(tl.where(best_s == top[:, None], best_i, BIG_INDEX), axis=1))
            idx = tl.where(top == float("-inf"), -1, idx)
            new_s = tl.where(offs_k[None, :] == r, top[:, None], new_s)
            new_i = tl.where(offs_k[None, :] == r, idx[:, None], new_i)
            acc = tl.where(offs_n[None, :] == idx[:, None], float("-inf"), acc)
            best_s = tl.where(best_i == idx[:, None], float("-inf"), best_s)
        best_s, best_i = new_s, new_i
    out = offs_m[:, None].to(tl.int64) * stride_om + split * stride_os + offs_k[None, :]
    keep = m_ok[:, None] & (offs_k[None, :] < K)
    tl.store(OUT_S + out, best_s, mask=keep)
    tl.store(OUT_I + out, best_i, mask=keep)


def similarity_topk(q: torch.Tensor, docs: torch.Tensor, k: int, block_n: int | None = None,
                    programs: int | None = None):
    """(scores fp32, indices int64), each (n_queries, min(k, n_docs)); q (m, d), docs (n, d)."""
    m, dim = q.shape
    n = docs.shape[0]
    k_eff = min(k, n)
    if k_eff <= 0 or m == 0:
        return (torch.empty(m, 0, device=q.device), torch.empty(m, 0, dtype=torch.long, device=q.device))
    cfg = block_config(m, n, dim)
    cfg.update({key: v for key, v in (("BLOCK_N", block_n), ("programs", programs)) if v})
    n_splits, docs_per_split = split_documents(m, n, cfg)
    cand_s = torch.empty(m, n_splits, k_eff, dtype=torch.float32, device=q.device)
    cand_i = torch.empty(m, n_splits, k_eff, dtype=torch.int32, device=q.device)
    launch = {key: v for key, v in cfg.items() if key != "programs"}
    # fp32 inputs: exact fp32 products (tf32 could reorder near-ties against the fp32 reference)
    precision = "ieee" if docs.dtype == torch.float32 else "tf32"
    _topk_kernel[(triton.cdiv(m, cfg["BLOCK_M"]), n_splits)](
        q, docs, cand_s, cand_i, m, n, dim, docs_per_split, *q.stride(), *docs.stride(),
        cand_s.stride(0), cand_s.stride(1), K=k_eff, K_PAD=triton.next_power_of_2(k_eff),
        PRECISION=precision, **launch)
    return merge_candidates(cand_s, cand_i, k_eff)


def bench_cases(BenchCase, randn):
    """BenchCase rows: 32 queries against 1M documents of dimension 128 (fp16 and fp32), top-8,
    vs torch's (q @ D.T).topk(8) (which writes and rereads the score matrix); GB/s over the
    document matrix. Both return the top-k scores in the input dtype (compared by the benchmark test)."""
    def inputs(shape, dtype, device):
        m, n, d = shape
        return randn(m, d, dtype=dtype, device=device, seed=0), randn(n, d, dtype=dtype, device=device, seed=1)

    cases = []
    for dt in (torch.float16, torch.float32):
        cases.append(BenchCase(
            "similarity top-k", (32, 1 << 20, 128), dt, inputs,
            lambda q, docs: similarity_topk(q, docs, 8)[0].to(q.dtype),
            lambda q, docs: (q @ docs.T).topk(8).values,
            lambda s, d: bytes_moved(*s, d.itemsize), test_scale=0.002))
    return cases
