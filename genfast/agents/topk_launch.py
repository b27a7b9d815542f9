"""Launch helpers of the fused similarity + top-k kernel (lab 06): tiles, document splits, and
the merge of the splits' candidates.

Grid (cdiv(n_queries, BLOCK_M), n_splits): program (pid_m, s) owns BLOCK_M queries and one
contiguous split of the documents. Each split writes its K best (score, index) per query,
-inf / -1 where it had fewer than K documents; `merge_candidates` sorts the n_splits * K
candidates of each query with a stable descending sort. Splits are in document order and each
split's list is sorted by (score desc, index asc), so ties still go to the lower index.

One copy for the notebook's launcher and the instructor's reference kernel, so that both race
with the same configuration.
"""
from __future__ import annotations

import torch
import triton

from genfast import runtime


def block_config(n_queries: int, n_docs: int, dim: int) -> dict:
    """Tiles. A GPU gets about four programs per SM so that every SM streams documents; the
    interpreter gets few, large splits (each program is slow Python there)."""
    block_d = max(16, min(64, triton.next_power_of_2(dim)))
    block_m = max(16, min(64, triton.next_power_of_2(n_queries)))
    if runtime.on_gpu():
        sms = torch.cuda.get_device_properties(0).multi_processor_count
        # 64 documents a tile with 8 warps: 128 with 4 spilled registers (compile-report)
        return dict(BLOCK_M=block_m, BLOCK_N=64, BLOCK_D=block_d, programs=4 * sms, num_warps=8)
    return dict(BLOCK_M=block_m, BLOCK_N=64, BLOCK_D=block_d, programs=4)


def split_documents(n_queries: int, n_docs: int, cfg: dict) -> tuple[int, int]:
    """(n_splits, docs_per_split): enough programs in total, each split a multiple of BLOCK_N."""
    query_tiles = triton.cdiv(n_queries, cfg["BLOCK_M"])
    tiles = triton.cdiv(n_docs, cfg["BLOCK_N"])
    splits = max(1, min(tiles, triton.cdiv(cfg["programs"], query_tiles)))
    docs_per_split = triton.cdiv(tiles, splits) * cfg["BLOCK_N"]
    return triton.cdiv(n_docs, docs_per_split), docs_per_split


def merge_candidates(cand_s: torch.Tensor, cand_i: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_queries, n_splits, K) candidates -> the k best per query (stable: ties to lower index)."""
    m = cand_s.shape[0]
    values, order = torch.sort(cand_s.reshape(m, -1), dim=1, descending=True, stable=True)
    return values[:, :k], cand_i.reshape(m, -1).gather(1, order[:, :k]).long()


def bytes_moved(n_queries: int, n_docs: int, dim: int, itemsize: int) -> int:
    """The document matrix, the queries, and the (negligible) candidates."""
    return (n_docs + n_queries) * dim * itemsize
