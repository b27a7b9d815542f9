"""Back-of-the-envelope costs of generation that module 1's notes derive, as functions, so that
the figures in the text are computed (and tested in tests/test_notes_formulas.py), not typed.

Speculative decoding (Leviathan et al., 2023): a draft proposes k tokens, the target verifies
them in one pass; with each draft token accepted independently with probability a,

    expected tokens per target pass  E(a, k) = (1 - a^(k+1)) / (1 - a)
    wall-clock speed-up              S(a, k, c) = E(a, k) / (c k + 1)

where c is the cost of one draft step relative to one target step (the k draft steps and the
target's pass make one round). The best k is where S peaks: larger k buys fewer extra tokens
(a^k shrinks) for a linear cost c k.
"""
from __future__ import annotations


def expected_tokens_per_pass(a: float, k: int) -> float:
    """Tokens emitted per target pass: accepted draft tokens plus the one the target adds."""
    if a >= 1.0:
        return k + 1.0
    return (1.0 - a ** (k + 1)) / (1.0 - a)


def speculative_speedup(a: float, k: int, c: float) -> float:
    """Wall-clock speed-up over plain decoding with draft cost ratio c (Leviathan et al., Thm. 3.8)."""
    return expected_tokens_per_pass(a, k) / (c * k + 1.0)


def best_draft_length(a: float, c: float, k_max: int = 64) -> int:
    """The k in 1..k_max with the largest speed-up (0 if no k beats plain decoding)."""
    best = max(range(1, k_max + 1), key=lambda k: speculative_speedup(a, k, c))
    return best if speculative_speedup(a, best, c) > 1.0 else 0


def arithmetic_intensity(tokens: int, bytes_per_weight: float = 2.0) -> float:
    """FLOPs per byte of weights of a matmul step over `tokens` tokens: 2 FLOPs (multiply, add)
    per weight per token, each weight read once. Prefill of a 2k prompt: about 2000 (compute-bound);
    a decode step at batch 1: 1 (memory-bound: an H100 needs about 300 to keep its tensor cores busy)."""
    return 2.0 * tokens / bytes_per_weight


def beam_cache_bytes(beams: int, prompt: int, generated: int, bytes_per_token: int, shared_prefix: bool) -> int:
    """KV-cache bytes of beam search: one cache per beam (reordered by parent every step). With
    prefix sharing (paged blocks, copy-on-write) the prompt's cache is held once for all beams."""
    prompt_copies = 1 if shared_prefix else beams
    return (prompt_copies * prompt + beams * generated) * bytes_per_token
