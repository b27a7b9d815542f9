"""The formulas the course notes state, checked numerically (issue 15: each correction of the
text that has a number behind it is checked here, against a count or a direct computation)."""
import math

import torch

from kernels import attention, linear_attention


# module 2: FlashAttention's IO complexity -----------------------------------------------------
def test_flash_attention_moves_theta_n2_d2_over_m_bytes_and_naive_theta_nd_plus_n2():
    N, d = 4096, 64
    t = attention.hbm_traffic(N, d, block_m=128, element_size=2)
    assert t["naive"] == (4 * N * d + 4 * N * N) * 2
    assert t["flash"] == (2 * N * d + (N // 128) * 2 * N * d) * 2 + N * 4
    assert t["ratio"] > 3  # the lab's tiles: several times fewer bytes
    # K/V are streamed once per query tile: twice the tile (twice the SRAM M) halves that stream
    stream = lambda block_m: attention.hbm_traffic(N, d, block_m)["flash"] - (2 * N * d * 2 + N * 4)
    assert stream(64) == 2 * stream(128) == 4 * stream(256)
    # block_m ~ M / d: at fixed SRAM the stream grows like N^2 d^2 / M (d doubles -> 4x at fixed M)
    M = 128 * 64
    assert math.isclose(attention.hbm_traffic(N, 128, M // 128)["flash"] - (2 * N * 128 * 2 + N * 4),
                        4 * stream(M // 64))
    # the naive form's N^2 term dominates: 4x the bytes for 2x the length, flash's ~4x too but smaller
    assert attention.hbm_traffic(2 * N, d, 128)["naive"] > 3.9 * t["naive"]
    # causal: key blocks right of the diagonal are never read, about half the stream
    causal = attention.hbm_traffic(N, d, 128, causal=True)
    assert 0.5 < (causal["flash"] - 2 * N * d * 2) / (t["flash"] - 2 * N * d * 2) < 0.53
    # N not a multiple of the tile: the last, partial tile streams all keys too
    assert attention.hbm_traffic(130, 16, 64)["flash"] == (2 * 130 * 16 + 3 * 2 * 130 * 16) * 2 + 130 * 4


# module 3: the chunked kernel re-reads q and k once per block of value columns ------------------
def test_chunked_linear_attention_reads_q_and_k_dv_over_block_dv_times():
    B, H, N = 1, 1, 4096
    assert linear_attention.bytes_moved(B, H, N, 64, 2) == 4 * N * 64 * 2          # one block: a copy
    assert linear_attention.bytes_moved(B, H, N, 64, 2, block_dv=32) == 6 * N * 64 * 2
    assert linear_attention.bytes_moved(B, H, N, 128, 2, block_dv=32) == 10 * N * 128 * 2
    assert linear_attention.gpu_block_dv(64) == linear_attention.gpu_block_dv(128) == 32


def test_gated_decay_is_computed_in_log_space_where_the_naive_ratio_fails():
    N, gamma = 64, 0.01
    L = torch.arange(1, N + 1, dtype=torch.float32) * math.log(gamma)  # cumulative log-decay
    naive = torch.exp(L)[:, None] / torch.exp(L)[None, :]                # exp(L_t) / exp(L_s)
    assert torch.isnan(naive.tril()).any()  # 0 / 0 once exp(L) underflows (about 20 tokens)
    D = linear_attention.decay_matrix(gamma, 1, 1, N, "cpu")[0, 0]
    assert torch.isfinite(D).all() and (D.triu(1) == 0).all()
    t, s = torch.tril_indices(N, N)
    expected = torch.tensor(gamma, dtype=torch.float64) ** (t - s).double()
    assert torch.allclose(D[t, s].double(), expected, rtol=1e-4, atol=1e-30)


# module 1: speculative decoding, prefill vs decode, beam search ------------------------------------
def test_speculative_decoding_speedup_and_best_draft_length():
    from genfast import costs
    assert math.isclose(costs.expected_tokens_per_pass(0.8, 4), 3.3616)   # the notes' "about 3.4"
    # E(a, k) against a direct sum over the first rejection: sum_{i=0..k} a^i
    for a in (0.3, 0.6, 0.9):
        assert math.isclose(costs.expected_tokens_per_pass(a, 5), sum(a ** i for i in range(6)))
    # a free draft (c = 0) gains E(a, k); a draft as costly as the target never pays
    assert math.isclose(costs.speculative_speedup(0.8, 4, 0.0), costs.expected_tokens_per_pass(0.8, 4))
    assert all(costs.speculative_speedup(0.9, k, 1.0) < 1 for k in range(1, 20))
    assert costs.best_draft_length(0.9, 1.0) == 0
    # the notes: a = 0.8, c = 0.05 -> best k = 8, S about 3.1; a worse draft wants a shorter k
    assert costs.best_draft_length(0.8, 0.05) == 8
    assert math.isclose(costs.speculative_speedup(0.8, 8, 0.05), 3.09, abs_tol=0.01)
    assert costs.best_draft_length(0.6, 0.05) < costs.best_draft_length(0.8, 0.05)


def test_speculative_speedup_matches_a_simulation():
    """Simulated rounds with independent acceptances reproduce E(a, k)."""
    import random
    from genfast import costs
    rng, a, k, rounds = random.Random(0), 0.7, 4, 200_000
    emitted = 0
    for _ in range(rounds):
        accepted = 0
        while accepted < k and rng.random() < a:
            accepted += 1
        emitted += accepted + 1  # the target adds one token (a correction or the bonus)
    assert math.isclose(emitted / rounds, costs.expected_tokens_per_pass(a, k), rel_tol=0.01)


def test_prefill_is_compute_bound_and_decode_memory_bound():
    from genfast import costs
    h100_ridge = 989e12 / 3.35e12  # bf16 dense FLOP/s over HBM bytes/s: about 295 FLOPs per byte
    assert costs.arithmetic_intensity(2048) > h100_ridge > costs.arithmetic_intensity(1) == 1.0
    assert costs.arithmetic_intensity(64) < h100_ridge  # a batch of 64 decode steps is still memory-bound


def test_beam_search_holds_a_cache_per_beam_unless_the_prefix_is_shared():
    from genfast import costs
    per_token = 2 * 12 * 12 * 64 * 2  # K and V, 12 layers, 12 heads of 64, fp16
    assert costs.beam_cache_bytes(4, 1000, 100, per_token, False) == 4 * 1100 * per_token
    assert costs.beam_cache_bytes(4, 1000, 100, per_token, True) == 1400 * per_token
