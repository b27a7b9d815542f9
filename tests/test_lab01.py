"""Lab 01 (generation): the shipped tiny model, the fused sampling kernel, speculative decoding,
the learner-side checks (genfast.labs.lab01_generation) and the released notebook."""
from pathlib import Path

import nbformat
import pytest
import torch

from genfast import checks
from genfast.labs import lab01_generation as lab
from autograder import samples
from kernels import sampling
from genfast.tinylm import data, load, train

ROOT = Path(__file__).resolve().parent.parent
LAB = "lab01_generation"
SOURCE = ROOT / "solutions" / LAB / f"{LAB}.ipynb"


def noise(B, V, seed):
    return torch.rand(B, V, generator=torch.Generator().manual_seed(seed)).clamp_(1e-10, 1 - 1e-7)


# ---- the model and its data ----------------------------------------------------------------

def test_corpus_is_plain_text_and_split_by_play():
    train_text, val_text = data.corpus()
    assert len(train_text) > 1_000_000 and len(val_text) > 100_000
    for marker in ("**", "_", "#", "\\"):
        assert marker not in train_text, f"markdown left in the corpus: {marker!r}"
    assert "MACBETH:" in train_text and "BRUTUS:" in val_text
    assert "BRUTUS:" not in train_text.split("Julius Caesar")[0]  # held-out play not in train
    assert data.vocabulary() == "".join(sorted(set(train_text + val_text)))


@pytest.mark.parametrize("name", ["shakespeare", "shakespeare_draft"])
def test_checkpoint_small_and_loads(name):
    path = ROOT / "genfast" / "tinylm" / f"{name}.pt"
    assert path.exists() and path.stat().st_size < 3_000_000
    model, tok = load(name)
    assert not model.training
    ids = tok.encode("ROMEO:\n")
    assert tok.decode(ids) == "ROMEO:\n"
    logits = model(ids[None])
    assert logits.shape == (1, len(ids), len(tok)) and torch.isfinite(logits).all()


def test_models_beat_unigram_baseline():
    tok, train_ids, val_ids = train.tokens()
    baseline = train.unigram_baseline(train_ids, val_ids, len(tok))
    target, _ = load("shakespeare")
    draft, _ = load("shakespeare_draft")
    target_loss = train.evaluate(target, val_ids, batches=4)
    draft_loss = train.evaluate(draft, val_ids, batches=4)
    assert target_loss < draft_loss < baseline - 0.3, (target_loss, draft_loss, baseline)
    assert target_loss < 2.1, target_loss
    assert draft.num_params() * 5 < target.num_params()


# ---- the fused sampling kernel ---------------------------------------------------------------

CASES = [  # (B, V, temperature, top_k, top_p)
    (4, 100, 1.0, 0, 1.0),
    (3, 79, 0.8, 10, 1.0),
    (3, 200, 1.0, 0, 0.9),
    (2, 1000, 1.2, 20, 0.8),
    (3, 50, 1.0, 1, 1.0),
    (3, 77, 1.0, 0, 1e-4),
    (2, 1, 1.0, 0, 0.5),
    (3, 64, 0.05, 0, 1.0),
    (3, 64, 20.0, 0, 0.95),
    (2, 30, 1.0, 100, 1.0),
]


@pytest.mark.parametrize("B,V,temperature,top_k,top_p", CASES)
def test_fused_sample_matches_torch(B, V, temperature, top_k, top_p):
    logits = checks.randn(B, V, seed=V, scale=2.0)
    u = noise(B, V, seed=B + V)
    got = sampling.fused_sample(logits, temperature, top_k, top_p, u)
    want = sampling.torch_sample(logits, temperature, top_k, top_p, u)
    checks.check_equal(got, want, what=f"fused_sample{(B, V, temperature, top_k, top_p)}")
    if top_k == 1 or top_p < 1e-3:
        checks.check_equal(got, logits.argmax(-1), what="greedy limit")


def test_fused_sample_ties_and_strides():
    logits = torch.randint(-3, 3, (4, 40), generator=torch.Generator().manual_seed(9)).float()
    u = noise(4, 40, 9)
    for k, p in [(5, 1.0), (0, 0.5), (5, 0.7)]:
        checks.check_equal(sampling.fused_sample(logits, 1.0, k, p, u), sampling.torch_sample(logits, 1.0, k, p, u))
    wide = checks.randn(3, 64, seed=1)[:, :50]          # a row stride larger than V
    checks.check_equal(sampling.fused_sample(wide, 1.0, 7, 0.9, noise(3, 50, 1)),
                       sampling.torch_sample(wide, 1.0, 7, 0.9, noise(3, 50, 1)))


def test_filtered_probs():
    x = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]])
    p = sampling.torch_filtered_probs(x, 1.0, 0, 0.8)        # softmax: .64 .23 .09 .03 .01
    assert (p[0, :2] > 0).all() and (p[0, 2:] == 0).all()   # .64 < .8 -> the token crossing .8 is kept
    p = sampling.torch_filtered_probs(x, 1.0, 3, 1.0)
    assert (p[0, :3] > 0).all() and (p[0, 3:] == 0).all()
    assert torch.allclose(p.sum(), torch.tensor(1.0))


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, 0, 1.0), (1.0, 4, 1.0)])
def test_fused_sample_distribution(temperature, top_k, top_p):
    n = 400 if top_k == 0 else 150   # rows with a filter cost more in the interpreter
    row = checks.randn(1, 8, seed=0, scale=1.5)
    got = sampling.fused_sample(row.expand(n, -1).contiguous(), temperature, top_k, top_p, noise(n, 8, 1))
    checks.check_distribution(got, sampling.torch_filtered_probs(row[0], temperature, top_k, top_p))


def test_torch_sample_distribution():
    row = checks.randn(1, 12, seed=3, scale=2.0)
    for T, k, p in [(1.0, 0, 0.9), (0.5, 5, 1.0), (2.0, 6, 0.8)]:
        got = sampling.torch_sample(row.expand(4000, -1), T, k, p, noise(4000, 12, 4))
        checks.check_distribution(got, sampling.torch_filtered_probs(row[0], T, k, p))


# ---- speculative decoding (the notebook's solution) ------------------------------------------

def solution_namespace(*cells):
    nb = nbformat.read(SOURCE, as_version=4)
    sources = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source for c in nb.cells}
    ns = {"torch": torch, "prefix_logits": lab.prefix_logits, "next_logits": lab.next_logits}
    for cell in cells:
        exec(samples.solution_code(sources[cell]), ns)
    return ns


def test_speculative_solution_samples_target():
    spec = solution_namespace("speculative_generate")["speculative_generate"]
    V, n_new = 4, 3
    target = checks.randn(V, V, seed=0, scale=1.5)
    draft = checks.randn(V, V, seed=100, scale=1.5)
    gen = torch.Generator().manual_seed(0)
    prompt = torch.tensor([0])
    outs = torch.stack([spec(lambda i: target[i], lambda i: draft[i], prompt, n_new, 2, gen)[1:]
                        for _ in range(3000)])
    p = torch.softmax(target, -1)
    exact = torch.einsum("a,ab,bc->abc", p[0], p, p).flatten()
    checks.check_distribution(outs[:, 0] * 16 + outs[:, 1] * 4 + outs[:, 2], exact, what="speculative samples")


# ---- the learner-side checks and the released notebook -------------------------------------

def test_checks_pass_the_solutions_and_the_references():
    """The visible checks (shipped fixtures) and the grader's (references) pass the solutions;
    the fixtures agree with the reference kernel itself."""
    ns = solution_namespace("greedy_generate", "temperature_probs", "top_k_filter", "top_p_filter",
                            "repetition_penalty", "beam_search")
    lab.check_temperature(ns["temperature_probs"])
    lab.check_temperature(ns["temperature_probs"], reference=sampling.torch_temperature_probs,
                          cases=[*lab.TEMPERATURE_CASES, lab.temperature_case("T=0.01", (2, 30), 0.01, scale=10.0)])
    lab.check_top_k(ns["top_k_filter"])
    lab.check_top_k(ns["top_k_filter"], reference=sampling.torch_filtered_logits,
                    cases=[*lab.TOP_K_CASES, lab.filter_case("k>V keeps all", (2, 17), seed=4, k=40)])
    lab.check_top_p(ns["top_p_filter"])
    lab.check_top_p(ns["top_p_filter"], reference=sampling.torch_filtered_logits)
    lab.check_repetition_penalty(ns["repetition_penalty"], reference=sampling.torch_repetition_penalty,
                                 cases=[lab.penalty_case("79 logits", 79, 40, 1.3, seed=8, prev_seed=7)])
    lab.check_beam_search(ns["beam_search"], ns["greedy_generate"])
    lab.check_fused_sample(sampling.fused_sample)                       # the reference kernel vs the fixtures
    lab.check_fused_sample(sampling.fused_sample, reference=sampling.torch_sample)
    lab.check_sample_distribution(sampling.fused_sample)


def test_checks_catch_the_buggy_top_p():
    buggy = lambda logits, p: sampling.torch_filtered_logits(logits, 1.0, 0, min(1.0, p * 0.5))
    with pytest.raises(checks.CheckFailed, match="top_p_filter|case"):
        lab.check_top_p(buggy)


def test_launch_settings_are_shared():
    from autograder.compile_kernels import as_on_gpu
    assert sampling.sample_launch_config is lab.sample_launch_config
    # the interpreter: blocks of 32, so the lab's rows of 79 take three, the last one ragged
    assert lab.sample_launch_config(79) == dict(BLOCK_V=32, num_warps=4)
    assert lab.sample_launch_config(1)["BLOCK_V"] == 1
    with as_on_gpu():   # a GPU: the row streams in blocks of 1024 (the compile report's setting)
        assert lab.sample_launch_config(79) == dict(BLOCK_V=128, num_warps=4)
        assert lab.sample_launch_config(32000) == dict(BLOCK_V=1024, num_warps=8)
        assert lab.sample_launch_config(131072) == dict(BLOCK_V=1024, num_warps=8)


def test_fused_sample_streams_many_blocks():
    """Rows of many blocks (and a ragged last one): the 16-way searches, the online max and sum
    and the running argmax carry across blocks; ties between blocks go to the lowest index."""
    for B, V, T, k, p in [(2, 1000, 1.0, 0, 1.0), (2, 777, 0.9, 37, 1.0), (2, 650, 1.1, 0, 0.9),
                          (2, 333, 1.0, 300, 0.999)]:
        logits = checks.randn(B, V, seed=V, scale=3.0)
        u = noise(B, V, seed=V + 1)
        checks.check_equal(sampling.fused_sample(logits, T, k, p, u), sampling.torch_sample(logits, T, k, p, u),
                           what=f"fused_sample{(B, V, T, k, p)}")
    # the same maximum in every block: the first block's column must win, as in torch.argmax
    flat = torch.zeros(1, 200)
    u = torch.full((1, 200), 0.5)
    checks.check_equal(sampling.fused_sample(flat, 1.0, 0, 1.0, u), torch.tensor([0]), what="a tie across blocks")
    flat[0, 150] = flat[0, 170] = 1.0
    checks.check_equal(sampling.fused_sample(flat, 1.0, 2, 1.0, u), torch.tensor([150]), what="a tie across blocks")
    # signed zeros and huge logits: the thresholds compare floats (-0.0 == 0.0), not keys
    x = torch.tensor([[0.0, -0.0, -0.0, 0.0, -1.0, float("-inf"), 3e30, -3e30, 1e38, 0.5] * 4])
    for k, p in [(1, 1.0), (3, 1.0), (5, 1.0), (9, 1.0), (0, 0.5), (7, 0.99)]:
        u = noise(1, 40, seed=k)
        checks.check_equal(sampling.fused_sample(x, 1.0, k, p, u), sampling.torch_sample(x, 1.0, k, p, u),
                           what=f"signed zeros, top_k={k}, top_p={p}")
