"""Checks for lab01_generation: greedy decoding, temperature, top-k, top-p, repetition penalty,
beam search, speculative decoding and the fused Triton sampling kernel.

Each check takes the learner's function as an argument. Where the spec is not itself an answer
it is computed here: the argmax after every prefix of a greedy output, exhaustive search and the
exact continuation distribution of tiny bigram models, the worked repetition-penalty example.
Where the spec *is* what the learner writes (the softmax with a temperature, top-k / top-p
filtering, the fused sampler's PyTorch reference and its filtered distribution), the visible
cases compare with expected outputs shipped in
genfast/fixtures/lab01_generation.pt, and the grader passes the instructor's reference in as
`reference` (its hidden tests run the same cases and more). Also here: the support the tests
and the notebook share (the bigram models, the noise, the sampling kernel's launch settings).
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Callable

import torch

from genfast import bench, checks, fixtures, runtime
from genfast.compile_info import KernelSignature
from genfast.policy import PolicyViolation
from genfast.tinylm import load

LAB = "lab01_generation"
PROMPT = "ROMEO:\nWhat light through yonder w"


# the shipped model ------------------------------------------------------------------
@functools.cache
def shipped_model(name: str = "shakespeare"):
    """(model, tokenizer) of a shipped checkpoint on the lab's device (loaded once)."""
    return load(name, runtime.device())


@torch.no_grad()
def prefix_logits(model, ids, n=1):
    """Logits (n, V) of the next token after each of the last n prefixes of the 1-D `ids`
    (the notebook's own `prefix_logits`; the checks use this copy)."""
    block = getattr(getattr(model, "config", None), "block_size", None)
    context = ids[-block:] if block else ids
    return model(context[None])[0, -n:].float()


def next_logits(model, ids):
    """Logits (V,) of the token that follows the 1-D token sequence `ids`."""
    return prefix_logits(model, ids, 1)[0]


def model_logits(text: str = PROMPT, n: int = 8) -> torch.Tensor:
    """(n, V) logits of the shipped model after each of the last n prefixes of `text`."""
    model, tok = shipped_model()
    return prefix_logits(model, tok.encode(text).to(runtime.device()), n)


def _expected(key: str, case: str):
    return fixtures.load(LAB, f"{key}/{case}", what=f"case {case!r} of {key}")


# 2. greedy decoding -----------------------------------------------------------------
GREEDY_HINT = "each new token is the argmax of next_logits(model, ids) for the ids so far"
GREEDY_CASES = [("ROMEO:\n", 30), ("First Citizen:\nBefore we proceed", 20)]  # (prompt, n_new)


def check_greedy(greedy_generate, cases=GREEDY_CASES):
    """Every new token must be the argmax after the prefix before it (one model call per
    prefix, from windows of at most block_size tokens, as next_logits does)."""
    __tracebackhide__ = True
    model, tok = shipped_model()
    for prompt_text, n_new in cases:
        p = tok.encode(prompt_text).to(runtime.device())
        out = checks.call(greedy_generate, model, p, n_new)
        if n_new == 0:
            if len(out) != len(p):
                raise checks.CheckFailed("greedy_generate with n_new=0 must return the prompt unchanged")
            continue
        if out.shape != (len(p) + n_new,):
            raise checks.CheckFailed(f"greedy_generate returned shape {tuple(out.shape)} for a prompt of "
                                     f"{len(p)} tokens and n_new={n_new}; expected ({len(p) + n_new},)")
        if not torch.equal(out[:len(p)].cpu(), p.cpu()):
            raise checks.CheckFailed("greedy_generate must return the prompt followed by the new tokens")
        expected = torch.stack([next_logits(model, out[:t]).argmax() for t in range(len(p), len(out))])
        checks.check_equal(out[len(p):], expected, what=f"greedy tokens after {prompt_text[:20]!r}",
                           hint=GREEDY_HINT)
        print(f"  ok  {prompt_text[:20]!r} -> {tok.decode(out[len(p):])!r}")
    checks.passed("greedy_generate: all tests passed.")


# 3. temperature ---------------------------------------------------------------------
TEMPERATURE_HINT = "divide the logits by T, subtract the row max, then exp and normalise"


def temperature_case(name, shape, temperature, scale=2.0, seed=0) -> checks.Case:
    return checks.Case(name, lambda: dict(logits=checks.randn(*shape, seed=seed, scale=scale),
                                          temperature=temperature))


TEMPERATURE_CASES = [
    temperature_case("T=1, one row of 79", (79,), 1.0),
    temperature_case("T=0.5, 4 rows of 50", (4, 50), 0.5, seed=1),
    temperature_case("T=2, 3 rows of 10", (3, 10), 2.0, seed=2),
]


def check_temperature(temperature_probs, reference=None, cases=TEMPERATURE_CASES):
    """reference: None (shipped expected outputs) or the grader's (logits, temperature) -> probs."""
    __tracebackhide__ = True
    if reference is None:
        expected = lambda case, inputs: _expected("temperature", case.name)
    else:
        expected = lambda case, inputs: reference(**inputs)
    _check_cases(temperature_probs, expected, cases, atol=1e-6, rtol=1e-4, hint=TEMPERATURE_HINT)


# 4. top-k and top-p -----------------------------------------------------------------
TOP_K_HINT = "find the k-th largest value of each row (torch.topk) and mask logits below it with -inf"
TOP_P_HINT = ("sort descending, softmax, cumulative sum; keep a token when the mass BEFORE it is < p "
              "(the token that crosses p stays); then undo the sort")


def filter_case(name, shape, seed=0, scale=2.0, **kw) -> checks.Case:
    return checks.Case(name, lambda: dict(logits=checks.randn(*shape, seed=seed, scale=scale), **kw))


TOP_K_CASES = [
    filter_case("k=5 of 79", (79,), k=5),
    filter_case("k=3, 4 rows of 20", (4, 20), seed=1, k=3),
    filter_case("k=1 (greedy)", (3, 50), seed=2, k=1),
]
TOP_P_CASES = [
    filter_case("p=0.9 of 79", (79,), p=0.9),
    filter_case("p=0.5, 4 rows of 20", (4, 20), seed=1, p=0.5),
    filter_case("p=1e-4 keeps only the likeliest", (3, 50), seed=2, p=1e-4),
]


def _check_cases(fn, expected: Callable, cases, *, hint="", name=None, atol=None, rtol=None) -> None:
    """checks.check_function, with the expected output of each case from `expected(case, inputs)`."""
    __tracebackhide__ = True
    name = name or getattr(fn, "__name__", "your function")
    cases = list(cases)
    for case in cases:
        inputs = case.make_inputs()
        actual = checks.call(fn, name=name, case=case.name, hint=hint, **inputs)
        max_abs = checks.compare(actual, expected(case, inputs), atol=atol, rtol=rtol,
                                 what=f"{name}, case '{case.name}'", hint=hint)
        print(f"  ok  {case.name:<44} max abs error {max_abs:.2e}")
    print(f"{name}: all {len(cases)} cases passed.")


def check_top_k(top_k_filter, reference=None, cases=TOP_K_CASES):
    """reference: None (shipped expected outputs) or the grader's filtered-logits reference
    (logits, temperature, top_k, top_p)."""
    __tracebackhide__ = True
    if reference is None:
        expected = lambda case, inputs: _expected("top_k", case.name)
    else:
        expected = lambda case, inputs: reference(inputs["logits"], 1.0, inputs["k"], 1.0)
    _check_cases(top_k_filter, expected, cases, hint=TOP_K_HINT)


def check_top_p(top_p_filter, reference=None, cases=TOP_P_CASES):
    __tracebackhide__ = True
    if reference is None:
        expected = lambda case, inputs: _expected("top_p", case.name)
    else:
        expected = lambda case, inputs: reference(inputs["logits"], 1.0, 0, inputs["p"])
    _check_cases(top_p_filter, expected, cases, hint=TOP_P_HINT)


# 5. repetition penalty --------------------------------------------------------------
PENALTY_HINT = "positive logits are divided by the penalty, the others multiplied, each seen token once"


def penalty_case(name, n_vocab, n_prev, penalty, seed=0, prev_seed=0) -> checks.Case:
    """Random logits (n_vocab,) and n_prev random previous ids."""
    def make():
        prev = torch.randint(0, n_vocab, (n_prev,), generator=torch.Generator().manual_seed(prev_seed))
        return dict(logits=checks.randn(n_vocab, seed=seed), prev_ids=prev.to(runtime.device()), penalty=penalty)
    return checks.Case(name, make)


def check_repetition_penalty(repetition_penalty, reference=None, cases=()):
    """The worked example, then `cases` against `reference` (the grader's)."""
    __tracebackhide__ = True
    dev = runtime.device()
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0, -0.2], device=dev)
    out = checks.call(repetition_penalty, logits, torch.tensor([0, 1, 1, 4], device=dev), 2.0)
    checks.compare(out, torch.tensor([1.0, -2.0, 0.5, 3.0, -0.4], device=dev),
                   what="repetition_penalty([2, -1, 0.5, 3, -0.2], prev=[0, 1, 1, 4], 2.0)", hint=PENALTY_HINT)
    checks.compare(logits, torch.tensor([2.0, -1.0, 0.5, 3.0, -0.2], device=dev),
                   what="the input logits after repetition_penalty", hint="work on a copy (logits.clone())")
    if cases:
        if reference is None:
            raise ValueError("these cases need the reference repetition penalty")
        checks.check_function(repetition_penalty, reference, cases)
    checks.passed("repetition_penalty: all tests passed.")


# 6. beam search, on bigram models ---------------------------------------------------
class BigramLM:
    """logits of the next token = table[last token]: a language model with no memory."""

    def __init__(self, table):
        self.table = table

    def __call__(self, idx):            # (B, T) -> (B, T, V), like the transformer
        return self.table[idx]


def exhaustive_best(lm, prompt, n_new):
    """The most likely continuation of n_new tokens, by trying all V**n_new of them."""
    logp = torch.log_softmax(lm.table.float(), dim=-1)
    n_vocab = lm.table.shape[0]
    best, best_score = None, -math.inf
    for code in range(n_vocab ** n_new):
        seq = [(code // n_vocab ** j) % n_vocab for j in reversed(range(n_new))]
        prev, score = int(prompt[-1]), 0.0
        for t in seq:
            score, prev = score + logp[prev, t].item(), t
        if score > best_score:
            best, best_score = seq, score
    return torch.cat([prompt, torch.tensor(best, device=prompt.device)]), best_score


BEAM_HINT = ("keep the beam_size best extensions over ALL sequences of the beam, scored by "
             "their total log-probability")
# (table seed, V, n_new, beam_size, what the answer must equal: "greedy" or "exact")
BEAM_CASES = [(1, 5, 3, 1, "greedy"),     # beam 1 = greedy
              (2, 5, 3, 25, "exact")]     # beam V^(n-1) = exhaustive search


def _check_beam(beam_search, greedy_generate, seed, n_vocab, n_new, beam_size, target):
    __tracebackhide__ = True
    lm = BigramLM(checks.randn(n_vocab, n_vocab, seed=seed, scale=2.0))
    prompt = torch.tensor([0], device=runtime.device())
    out, score = checks.call(beam_search, lm, prompt, n_new, beam_size)
    logp = torch.log_softmax(lm.table.float(), dim=-1)
    true_score = sum(logp[out[t - 1], out[t]].item() for t in range(1, len(out)))
    if abs(float(score) - true_score) > 1e-4:
        raise checks.CheckFailed(f"beam_search returned score {float(score):.5f} but its sequence "
                                 f"{out.tolist()} has log-probability {true_score:.5f}")
    if target == "exact":
        expected, _ = exhaustive_best(lm, prompt, n_new)
    else:  # beam 1: the same tokens as your greedy_generate
        expected = checks.call(greedy_generate, lm, prompt, n_new)
    checks.check_equal(out, expected, what=f"beam_search(V={n_vocab}, n_new={n_new}, beam={beam_size})",
                       hint=BEAM_HINT)
    print(f"  ok  V={n_vocab} n_new={n_new} beam={beam_size}: {out.tolist()} (log p = {true_score:.3f})")


def check_beam_search(beam_search, greedy_generate, cases=BEAM_CASES, traps=()):
    """`greedy_generate` is yours (beam 1 must agree with it). `traps`: (table, n_new, beam_size,
    expected ids after the prompt [0]) where greedy is not optimal."""
    __tracebackhide__ = True
    for case in cases:
        _check_beam(beam_search, greedy_generate, *case)
    dev = runtime.device()
    for table, n_new, beam_size, expected in traps:
        out, _ = checks.call(beam_search, BigramLM(torch.tensor(table, device=dev)), torch.tensor([0], device=dev),
                             n_new, beam_size)
        checks.check_equal(out, torch.tensor(expected, device=dev), what="beam_search where greedy fails",
                           hint="compare the beam's candidates by their total score, not by the last step's")
    checks.passed("beam_search: all tests passed.")


# 7. speculative decoding ------------------------------------------------------------
def sequence_distribution(lm, prompt_token, n_new):
    """Exact probability of each n_new-token continuation, indexed by the base-V number it spells."""
    p = torch.softmax(lm.table.float(), dim=-1).cpu()
    n_vocab = p.shape[0]
    dist = p[prompt_token]
    for _ in range(n_new - 1):
        dist = (dist[:, None] * p[torch.arange(dist.numel()) % n_vocab]).flatten()
    return dist


def spell(seqs, n_vocab):
    """(N, n) token sequences -> base-V numbers, matching sequence_distribution."""
    weights = n_vocab ** torch.arange(seqs.shape[1] - 1, -1, -1, device=seqs.device)
    return (seqs * weights).sum(-1)


SPECULATIVE_HINT = ("accept with probability min(1, p/q); on a rejection sample from "
                    "max(0, p - q) normalised, not from p or q")
SPECULATIVE_CASES = [(4, 3, 2, 1500, 0)]   # (V, n_new, k, n_samples, seed)


def check_speculative(speculative_generate, cases=None):
    """Many continuations of a bigram target with a deliberately bad bigram draft, against the
    target's exact distribution (chi-square). Thousands of calls: in a grading kernel the visible
    call (no `cases`) is silent, as a speed check's is, and the grader's run of the same cases
    and more is the one that counts (it would otherwise run the visible case twice)."""
    __tracebackhide__ = True
    if cases is None:
        if os.environ.get("COURSE_GRADING") == "1":
            print("speculative_generate: the grader's check below runs the visible case and the hidden ones.")
            return
        cases = SPECULATIVE_CASES
    dev = runtime.device()
    for n_vocab, n_new, k, n_samples, seed in cases:
        target_lm = BigramLM(checks.randn(n_vocab, n_vocab, seed=seed, scale=1.5))
        draft_lm = BigramLM(checks.randn(n_vocab, n_vocab, seed=seed + 100, scale=1.5))
        gen = torch.Generator(device=dev).manual_seed(seed)
        prompt = torch.tensor([0], device=dev)
        outs = torch.stack([checks.call(speculative_generate, target_lm, draft_lm, prompt, n_new, k, gen)[1:]
                            for _ in range(n_samples)])
        checks.check_distribution(spell(outs, n_vocab), sequence_distribution(target_lm, 0, n_new),
                                  what=f"speculative samples (V={n_vocab}, n_new={n_new}, k={k})",
                                  hint=SPECULATIVE_HINT)
    checks.passed("speculative_generate samples the target's distribution.")


class CountingLM(BigramLM):
    """A bigram model that counts its forward passes."""
    calls = 0

    def __call__(self, idx):
        self.calls += 1
        return super().__call__(idx)


CALLS_CASES = [(8, 3, 2)]   # (n_new, k, target passes expected with a perfect draft)


def check_speculative_calls(speculative_generate, cases=CALLS_CASES):
    __tracebackhide__ = True
    dev = runtime.device()
    for n_new, k, expected_calls in cases:
        lm = CountingLM(checks.randn(5, 5, seed=3))
        perfect_draft = BigramLM(lm.table)      # draft == target: every proposal is accepted
        out = checks.call(speculative_generate, lm, perfect_draft, torch.tensor([0], device=dev), n_new, k,
                          torch.Generator(device=dev).manual_seed(0))
        if len(out) != n_new + 1:
            raise checks.CheckFailed(f"speculative_generate returned {len(out)} tokens for a 1-token prompt "
                                     f"and n_new={n_new}; expected {n_new + 1}")
        if lm.calls != expected_calls:
            raise checks.CheckFailed(
                f"with a perfect draft, n_new={n_new} and k={k}, the target ran {lm.calls} forward passes; "
                f"expected {expected_calls} (each round: k accepted tokens + 1 bonus token from ONE target pass)."
                f"\n  hint: score all k proposals with a single prefix_logits(target, proposal, k + 1)")
        print(f"  ok  perfect draft, n_new={n_new}, k={k}: {lm.calls} target passes")
    checks.passed("speculative_generate verifies k proposals per target pass.")


# 8. the fused sampling kernel -------------------------------------------------------
def sample_launch_config(n_vocab: int) -> dict:
    """BLOCK_V (how many logits the fused sampling kernel reads at a time: it loops over the row
    in blocks of BLOCK_V) and num_warps. The notebook's launcher and the reference kernel both use
    this. On a GPU: 1024 columns with 8 warps (4 a thread; a search pass's (1024, 16) accumulator
    is 64 registers a thread, and the kernel does not spill on sm_80 or sm_90); a row shorter than
    that gets one block of the next power of two. In the interpreter, where each block costs a
    few Python-level operations, 32: the lab's rows of 79 logits still take three blocks, the
    last one ragged."""
    block_v = min(1024 if runtime.on_gpu() else 32, 1 << max(0, n_vocab - 1).bit_length())
    return dict(BLOCK_V=block_v, num_warps=8 if block_v >= 1024 else 4)


def noise(B, n_vocab, seed):
    """Uniform noise (B, V) in (0, 1), the same on every device."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, n_vocab, generator=g).clamp_(1e-10, 1 - 1e-7).to(runtime.device())


@dataclass
class SampleCase:
    """One exact case of the sampler: `logits` (B, V) or a function that makes them; the noise
    is noise(B, V, seed)."""
    name: str
    logits: torch.Tensor | Callable[[], torch.Tensor]
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def make_logits(self) -> torch.Tensor:
        return self.logits() if callable(self.logits) else self.logits


SAMPLE_CASES = [
    SampleCase("no filter, 4 rows of 100", lambda: checks.randn(4, 100, seed=0, scale=2.0)),
    SampleCase("V=79 not a power of two, top-k 10", lambda: checks.randn(3, 79, seed=1, scale=2.0), 0.8,
               top_k=10, seed=1),
    SampleCase("top-p 0.9", lambda: checks.randn(3, 200, seed=2, scale=2.0), top_p=0.9, seed=2),
    SampleCase("top-k 1 is greedy", lambda: checks.randn(3, 50, seed=3), top_k=1, seed=3),
    SampleCase("V=1", lambda: checks.randn(2, 1, seed=4), top_p=0.5, seed=4),
]
SAMPLE_HINT = ("same noise, same tokens: check the -inf padding, the thresholds (ties are kept) "
               "and the Gumbel noise -log(-log u)")


def _check_sample(fused_sample, reference, case: SampleCase):
    __tracebackhide__ = True
    logits = case.make_logits()
    T, k, p = case.temperature, case.top_k, case.top_p
    u = noise(*logits.shape, case.seed)
    try:
        got = fused_sample(logits, T, k, p, u)
    except checks.CheckFailed:
        raise
    except PolicyViolation as exc:
        raise checks.CheckFailed(str(exc)) from None
    except Exception as exc:
        if isinstance(exc, NotImplementedError) or "NotImplementedError" in str(exc):  # the released stub
            raise checks.CheckFailed("fused_sample_kernel or largest_key is not implemented yet: replace "
                                     "`raise NotImplementedError()` under YOUR CODE HERE with your code.") from None
        raise checks.CheckFailed(f"fused_sample_kernel crashed on '{case.name}' (B, V = {tuple(logits.shape)}, "
                                 f"T={T}, top_k={k}, top_p={p}): {type(exc).__name__}: {exc}") from None
    want = _expected("fused_sample", case.name) if reference is None else reference(logits, T, k, p, u)
    checks.check_equal(got, want, what=f"token ids, case '{case.name}' (T={T}, top_k={k}, top_p={p})",
                       hint=SAMPLE_HINT)
    print(f"  ok  {case.name:<40} {got.tolist()[:6]}")


def check_fused_sample(fused_sample, reference=None, cases=SAMPLE_CASES, greedy_logits=None):
    """The launcher `fused_sample` (it runs your kernel) against shipped token ids, or against the
    grader's `reference` (logits, temperature, top_k, top_p, uniform) -> ids. `greedy_logits`:
    also check top_k=1 with the launcher's own noise against the argmax."""
    __tracebackhide__ = True
    for case in cases:
        _check_sample(fused_sample, reference, case)
    if greedy_logits is not None:
        checks.check_equal(fused_sample(greedy_logits, 1.0, 1, 1.0), greedy_logits.argmax(-1),
                           what="top_k=1 against argmax")
    checks.passed("fused_sample_kernel matches the reference on every case.")


DISTRIBUTION_CASES = [(0.7, 0, 1.0, 0)]   # (temperature, top_k, top_p, seed)


def distribution_key(temperature, top_k, top_p, seed) -> str:
    return f"T={temperature}, top_k={top_k}, top_p={top_p}, seed={seed}"


def distribution_row(seed) -> torch.Tensor:
    """The (1, 8) logits whose draws a distribution case counts."""
    return checks.randn(1, 8, seed=seed, scale=1.5)


def check_sample_distribution(fused_sample, reference=None, cases=DISTRIBUTION_CASES, n=400):
    """n rows holding the same logits, each with its own noise: n independent draws, against the
    filtered softmax (shipped for the visible case; `reference`: the grader's)."""
    __tracebackhide__ = True
    for temperature, top_k, top_p, seed in cases:
        row = distribution_row(seed)
        got = checks.call(fused_sample, row.expand(n, -1).contiguous(), temperature, top_k, top_p,
                          noise(n, 8, seed + 1))
        probs = (reference(row[0], temperature, top_k, top_p) if reference is not None else
                 _expected("sample_distribution", distribution_key(temperature, top_k, top_p, seed)))
        checks.check_distribution(got, probs, what=f"fused_sample draws (T={temperature}, top_k={top_k}, top_p={top_p})",
                                  hint="Gumbel-max: argmax(z + g) with g = -log(-log(u)) samples softmax(z)")
    checks.passed("fused_sample draws follow the filtered distribution.")


def _sample_configs() -> list[dict]:
    # the launcher's configurations at 32k and 128k logits (the row streams: today one and the same)
    configs = [sample_launch_config(v) for v in (32768, 131072)]
    return [c for i, c in enumerate(configs) if c not in configs[:i]]


# the learner's kernel as compiled for a GPU, for the compile report and the speed cell's feedback
SAMPLE_KERNEL = KernelSignature("fused_sample_kernel", {"logits_ptr": "*fp32", "u_ptr": "*fp32", "out_ptr": "*i64"},
                                _sample_configs, {"inv_temperature": "fp32", "top_p": "fp32"},
                                reference="sampling.fused_sample_kernel (reference)")


def speed_sampling(fused_sample, reference=None):
    """64 rows of a 32 000-token vocabulary, T=0.8, top-k 50, top-p 0.9: fresh GPU-made logits
    and noise for every timed call (bench.speed_points)."""
    def inputs(seed):
        logits = bench.randn(64, 32000, seed=seed, scale=3.0)
        gen = torch.Generator(device="cuda").manual_seed(seed + 1)
        u = torch.rand(logits.shape, generator=gen, device="cuda").clamp_(1e-10, 1 - 1e-7)
        return (logits, 0.8, 50, 0.9, u)
    return bench.speed_points(fused_sample, reference, inputs=inputs, points=2, name="fused sampling",
                              signature=SAMPLE_KERNEL)
