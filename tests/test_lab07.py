"""Lab 07 on the CPU: the learner's environment (genfast.interp: the hooked model, the shipped
checkpoints, the tasks and tools), the instructor's references (kernels.interp), and the lab's checks."""

import nbformat
import pytest
import torch

from autograder import grading, samples
from genfast import checks, policy
from genfast.interp import editing as g_editing
from genfast.interp import attribution, fourier, hooked, patchscope, tasks
from genfast.interp import lens as g_lens
from genfast.interp import patching as g_patching
from genfast.interp import probes as g_probes
from genfast.interp import sae as g_sae
from genfast.interp import scores as g_scores
from genfast.interp import steering as g_steering
from genfast.labs import lab07_interpretability as lab
from genfast.tinylm import load as load_tinylm
from kernels.interp import editing, hooks, lens, patching, probes, scores, steering
from kernels.interp import sae as sae_mod

LAB = "lab07_interpretability"

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def induction():
    return hooked.load("induction")


@pytest.fixture(scope="module")
def facts():
    return hooked.load("facts")


@pytest.fixture(scope="module")
def shakespeare():
    gpt, tok = load_tinylm("shakespeare")
    return gpt, hooked.from_tinylm(gpt), tok


def test_the_packages_are_the_course_ones():
    assert hooked.__file__.endswith("genfast/interp/hooked.py")
    assert scores.__file__.endswith("kernels/interp/scores.py")


def test_the_learner_side_holds_no_answer():
    """The learner's model has no cache (get_cache is the lab's first exercise), and no genfast.interp
    module defines a graded function."""
    assert not hasattr(hooked.HookedTransformer, "run_with_cache")
    graded = {"get_cache", "ablate_head", "prev_token_score", "induction_score", "logit_lens", "fit_probe",
              "probe_accuracy", "probe_selectivity", "probe_by_layer", "patch_resid_scan", "patch_scan", "patch_resid",
              "diff_of_means", "project_out",
              "sae_loss", "rank_one_edit", "ablate_head_hook", "run_with_cache", "apply_edit", "project_hook"}
    for module in (hooked, tasks, patchscope, fourier, attribution, g_editing, g_lens, g_patching, g_probes, g_sae,
                   g_scores, g_steering, lab):
        assert not graded & set(vars(module)), f"{module.__name__} has {graded & set(vars(module))}"


# ---------------------------------------------------------------- hooks
def test_cache_hooks_and_replacement(induction):
    x = tasks.repeated_tokens(3, 5, seed=0, vocab=32)
    logits, cache = hooks.run_with_cache(induction, x)
    assert set(cache) == set(induction.hook_points)
    assert cache["blocks.0.attn.hook_pattern"].shape == (3, 4, 11, 11)
    assert torch.allclose(cache["blocks.0.attn.hook_pattern"].sum(-1), torch.ones(3, 4, 11))
    assert torch.allclose(induction.to_logits(cache["blocks.1.hook_resid_post"]), logits, atol=1e-5)
    # the heads' own outputs sum (plus the bias) to the attention output
    per_head = induction.blocks[1].attn.head_outputs(cache["blocks.1.attn.hook_z"])
    assert torch.allclose(per_head.sum(2) + induction.blocks[1].attn.proj.bias, cache["blocks.1.hook_attn_out"], atol=1e-5)
    # a returned tensor replaces the activation; hooks are removed afterwards, even after an error
    zeroed = induction.run_with_hooks(x, [("blocks.1.hook_attn_out", lambda a, _: torch.zeros_like(a))])
    assert not torch.allclose(zeroed, logits)
    with pytest.raises(RuntimeError):
        with induction.hooks([("blocks.0.hook_resid_pre", lambda a, _: None)]):
            raise RuntimeError("boom")
    assert all(not hp.fns for hp in induction.hook_points.values())
    with pytest.raises(KeyError):
        induction.run_with_hooks(x, [("blocks.9.nope", lambda a, _: None)])


def test_converter_gives_identical_logits(shakespeare):
    gpt, model, tok = shakespeare
    x = tok.encode("KING HENRY:\nOnce more unto the breach, dear friends, once more;\n").unsqueeze(0)
    with torch.no_grad():
        assert (model(x) - gpt(x)).abs().max() < 1e-4
    assert "blocks.3.mlp.hook_post" in model.hook_points


# ---------------------------------------------------------------- checkpoints and training
def test_checkpoints_are_small_fp16_and_recorded():
    for name in ("induction", "modadd", "facts", "sae_shakespeare"):
        path = hooked.CHECKPOINT_DIR / f"{name}.pt"
        assert path.stat().st_size < 400_000, name
        ckpt = torch.load(path, weights_only=True)
        assert all(v.dtype == torch.float16 for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_modadd_generalises_and_facts_are_memorised(facts):
    model = hooked.load("modadd")
    tokens, labels, train = tasks.modadd_data()
    with torch.no_grad():
        pred = model(tokens)[:, -1].argmax(-1)
    assert (pred[~train] == labels[~train]).float().mean() > 0.95
    ftok, target = tasks.facts_data()
    with torch.no_grad():
        assert (facts(ftok)[:, -1].argmax(-1) == target).float().mean() == 1.0


# the Fourier mechanism of the shipped modular-addition model (Nanda et al. 2023), measured
MODADD_KEY_FREQUENCIES = {3, 4, 9, 12, 17, 18, 19}
MODADD_ENERGY_FRACTION = 0.775   # of the embedding's energy (k = 0 included) in the key frequencies
MODADD_LOGIT_R2 = 0.904          # of the centred logits' variance explained by sum_k alpha_k cos(w_k (a + b - c))


def test_fourier_check_on_planted_waves():
    p = 53
    a = torch.arange(p, dtype=torch.float64)
    model = hooked.HookedTransformer(hooked.Config(vocab_size=p + 1, n_ctx=3, d_model=8, n_layer=1, d_mlp=16))
    with torch.no_grad():
        model.tok_emb.weight[:p] = 0.01 * torch.randn(p, 8, generator=torch.Generator().manual_seed(0))
        model.tok_emb.weight[:p, 0] += torch.cos(2 * torch.pi * 5 * a / p).float()
        model.tok_emb.weight[:p, 1] += torch.sin(2 * torch.pi * 11 * a / p).float()
    spectrum = fourier.embedding_spectrum(model, p)
    assert torch.isclose(spectrum.sum(), p * (model.tok_emb.weight[:p].double() ** 2).sum())   # Parseval
    assert set(fourier.key_frequencies(spectrum)) == {5, 11}
    s = a[:, None, None] + a[None, :, None] - a[None, None, :]
    logits = 3 * torch.cos(2 * torch.pi * 5 * s / p) + torch.cos(2 * torch.pi * 11 * s / p) + a[:, None, None]
    fit = fourier.fourier_logit_fit(logits, [5, 11])
    assert abs(fit["r2"] - 1) < 1e-9 and abs(fit["alpha"][5] - 3) < 1e-9 and fit["accuracy"] == 1.0
    assert fourier.fourier_logit_fit(logits, [7])["r2"] < 1e-6


def test_modadd_model_computes_with_a_few_key_frequencies():
    """The embedding's energy sits in 7 of the 26 frequencies and their cosines explain ~90% of the
    logits' variance (the fitted form alone answers every pair); an untrained model has neither."""
    mech = fourier.check_mechanism(hooked.load("modadd"))
    assert set(mech["key_frequencies"]) == MODADD_KEY_FREQUENCIES
    assert mech["energy_fraction"] > 0.75 and abs(mech["energy_fraction"] - MODADD_ENERGY_FRACTION) < 1e-3
    assert mech["even_share"] < 0.3
    assert mech["logit_r2"] > 0.88 and abs(mech["logit_r2"] - MODADD_LOGIT_R2) < 1e-3
    assert mech["fourier_accuracy"] == 1.0
    torch.manual_seed(0)
    untrained = fourier.check_mechanism(hooked.HookedTransformer(hooked.load("modadd").cfg).eval())
    assert untrained["key_frequencies"] == [] and untrained["logit_r2"] == 0.0


def test_training_is_deterministic_for_a_few_steps():
    from kernels.interp import train
    m1, m2 = train.train_induction(steps=3, name=None), train.train_induction(steps=3, name=None)
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))
    x, lens_ = tasks.induction_batch(4, seed=3, vocab=32, n_ctx=32)
    assert (x[:, 0] == tasks.BOS).all()
    for row, L in zip(x, lens_.tolist()):
        assert torch.equal(row[1:1 + L], row[1 + L:1 + 2 * L])


# ---------------------------------------------------------------- heads
def test_scores_find_the_induction_and_previous_token_heads(induction):
    x = tasks.repeated_tokens(64, 10, seed=1, vocab=32)
    prev, ind = scores.head_scores(induction, x, 10)
    layer, head = g_scores.best_head(ind)
    assert layer == 1 and ind[layer, head] > 0.6
    assert ind[0].max() < 0.2                     # layer 0 cannot do induction alone
    pl, ph = g_scores.best_head(prev)
    assert pl == 0 and prev[pl, ph] > 0.5
    # ablation: the induction heads carry in-context copying
    first, second = tasks.halves_loss(induction, x, 10)
    assert second < 0.6 < 3.0 < first
    ablate = [(f"blocks.{l}.attn.hook_z", hooks.ablate_head_hook(h)) for l in range(2) for h in range(4) if ind[l, h] > 0.4]
    with induction.hooks(ablate):
        assert tasks.halves_loss(induction, x, 10)[1] > 2.5
    with induction.hooks([(f"blocks.{layer}.attn.hook_z", hooks.ablate_head_hook(head))]):
        assert tasks.halves_loss(induction, x, 10)[1] > second + 0.1


def test_score_on_hand_made_patterns():
    T, L = 9, 4
    prev_pat = torch.zeros(1, 1, T, T)
    prev_pat[0, 0, 0, 0] = 1
    prev_pat[0, 0, torch.arange(1, T), torch.arange(T - 1)] = 1
    assert scores.prev_token_score(prev_pat).item() == 1.0
    ind_pat = torch.zeros(1, 1, T, T)
    for t in range(T):
        ind_pat[0, 0, t, t - L + 1 if t >= 1 + L else 0] = 1
    assert scores.induction_score(ind_pat, L).item() == 1.0 and scores.prev_token_score(ind_pat).item() < 0.5


def test_shakespeare_model_has_no_strong_induction_head(shakespeare):
    _, model, tok = shakespeare
    letters = torch.tensor([tok.stoi[c] for c in "abcdefghijklmnopqrstuvwxyz "])
    r = letters[torch.randint(0, len(letters), (16, 30), generator=torch.Generator().manual_seed(0))]
    prev, ind = scores.head_scores(model, torch.cat([r, r], 1), 30, offset=0)
    assert ind.max() < 0.1 and prev[0].max() > 0.15


# ---------------------------------------------------------------- lens, probes, patching
def test_logit_lens_ends_at_the_output_and_ranks_improve(induction):
    x = tasks.repeated_tokens(16, 10, seed=2, vocab=32)
    ll = lens.logit_lens(induction, x)
    assert ll.shape == (3, 16, 21, 32) and torch.allclose(ll[-1], induction(x), atol=1e-5)
    ranks = g_lens.token_rank(ll[:, :, :-1], x[:, 1:].expand(3, -1, -1)).float()[:, :, 11:].mean((1, 2))
    assert ranks[-1] < 1 < ranks[0]


def test_probe_recovers_a_planted_direction(induction):
    X = torch.randn(400, 6, generator=torch.Generator().manual_seed(0))
    y = (X[:, 2] > 0).long()
    w = probes.fit_probe(X[:300], y[:300], lam=1e-3)
    assert probes.probe_accuracy(w, X[300:], y[300:]) > 0.95 and w[:-1].abs().argmax() == 2
    tok, py = g_probes.prev_token_probe_data(120, seed=0)
    feats, yy = g_probes.layer_features(induction, tok, py)
    _, cache = hooks.run_with_cache(induction, tok, names=g_lens.resid_names(induction))
    assert all(torch.equal(feats[n], cache[n][py >= 0]) for n in g_lens.resid_names(induction))


def test_control_task_is_a_fixed_random_label_per_previous_token_type():
    tok, y = g_probes.prev_token_probe_data(50, seed=0)
    c = g_probes.control_task(tok, y, seed=0)
    assert torch.equal(c < 0, y < 0)
    prev = tok[:, :-1][y[:, 1:] >= 0]                       # the previous token of every labelled position
    lab_ = c[:, 1:][y[:, 1:] >= 0]
    of_type = {}
    for t, l in zip(prev.tolist(), lab_.tolist()):
        assert of_type.setdefault(t, l) == l                 # one label per type, wherever it occurs
    assert sum(of_type.values()) == 15 and len(of_type) == 31   # the real task's balance: 15 of 31 types
    real = {t: int(t < 16) for t in of_type}
    assert of_type != real
    assert not torch.equal(c, g_probes.control_task(tok, y, seed=1))
    assert torch.equal(c, g_probes.control_task(tok, y, seed=0))


def test_selectivity_scores_the_control_probe_on_its_own_held_out_labels():
    """A representation that stores each input's type reads any type -> label map: control accuracy
    ~ real accuracy. Scoring the control probe against the TRUE labels (the old control) would read
    ~0.5 or less instead."""
    X, y, yc = lab.selectivity_data(300, 6, 8, "types", 0)
    acc, ctrl, sel = probes.probe_selectivity(X, y, yc, 200)
    old = probes.probe_accuracy(probes.fit_probe(X[:200], yc[:200]), X[200:], y[200:])
    assert acc > 0.95 and ctrl > 0.8 and sel == acc - ctrl and old < 0.5
    X, y, yc = lab.selectivity_data(200, 8, 16, "property", 4)
    acc, ctrl, sel = probes.probe_selectivity(X, y, yc, 133)
    assert acc > 0.95 and sel > 0.25


# the probe table of the lab (section 4), measured on the shipped induction model
PROBE_FIGURES = {  # name: (real accuracy, control accuracy averaged over 5 control tasks, selectivity)
    "blocks.0.hook_resid_pre": (0.444, 0.493, -0.050),
    "blocks.0.hook_resid_post": (0.714, 0.718, -0.004),
    "blocks.1.hook_resid_post": (0.641, 0.632, 0.009),
}


def test_previous_token_probe_is_not_selective(induction):
    """Selectivity ~0: layer 0 carries the previous token's identity, from which a random partition
    of the types is as readable as 'lower half'; the untrained model carries neither."""
    tok, py = g_probes.prev_token_probe_data(200, seed=0)
    feats, yy = g_probes.layer_features(induction, tok, py)
    controls = [g_probes.control_task(tok, py, seed=s)[py >= 0] for s in range(5)]
    res = probes.probe_by_layer(feats, yy, controls, 3000)
    for name, want in PROBE_FIGURES.items():
        assert torch.allclose(torch.tensor(res[name]), torch.tensor(want), atol=2e-3), (name, res[name])
    assert res["blocks.0.hook_resid_post"][0] > res["blocks.0.hook_resid_pre"][0] + 0.2     # the jump
    assert res["blocks.0.hook_resid_post"][1] > res["blocks.0.hook_resid_pre"][1] + 0.2     # the control jumps too
    assert all(abs(sel) < 0.06 for _, _, sel in res.values())
    torch.manual_seed(1)
    untrained = hooked.HookedTransformer(induction.cfg).eval()
    feats_u, _ = g_probes.layer_features(untrained, tok, py)
    res_u = probes.probe_by_layer(feats_u, yy, controls, 3000)
    assert max(acc for acc, _, _ in res_u.values()) < 0.56 and max(c for _, c, _ in res_u.values()) < 0.57


def test_patching_localises_the_changed_position_and_layer_one_heads(induction):
    clean, corrupted, good, bad, pos = g_patching.induction_prompts(16, 10, 5)
    metric = lambda lg: g_patching.logit_diff(lg, good, bad)
    assert metric(induction(clean)).mean() > 2 and metric(induction(corrupted)).mean() < -2
    resid = patching.patch_resid(induction, clean, corrupted, metric)
    assert resid[0, pos] > 0.99 and resid[1, pos] > 0.9
    assert resid[:, :pos].abs().max() < 1e-4                 # earlier positions do not see the change
    heads = g_patching.patch_heads(induction, clean, corrupted, metric)
    assert heads[1].sum() > 0.7 and heads[0].abs().max() < 0.05
    assert torch.allclose(heads, patching.patch_heads(induction, clean, corrupted, metric), atol=1e-5)


DLA_ATOL = 1e-4   # fp32 on logits of size ~10: the frozen-scale split is exact up to rounding (measured <= 5e-6)


@pytest.mark.parametrize("name", ["induction", "modadd", "facts", "shakespeare"])
def test_direct_logit_attribution_sums_to_the_logit(name, shakespeare):
    if name == "shakespeare":
        _, model, tok = shakespeare
        x = tok.encode("ROMEO:\nBut soft, what light through yonder window breaks?\n").unsqueeze(0).repeat(2, 1)
    else:
        model = hooked.load(name)
        x = {"induction": tasks.repeated_tokens(8, 10, seed=3, vocab=32), "modadd": tasks.modadd_data()[0][:64],
             "facts": tasks.facts_data()[0][:64]}[name]
    with torch.no_grad():
        logits = model(x)
    rows = torch.arange(len(x))
    for pos in (-1, 0):
        target, other = logits[:, pos].argmax(-1), logits[:, pos].argmin(-1)
        dla = attribution.direct_logit_attribution(model, x, target, pos=pos)
        assert torch.allclose(sum(dla.values()), logits[rows, pos, target], atol=DLA_ATOL)
        diff = attribution.direct_logit_attribution(model, x, target, other, pos=pos)
        assert torch.allclose(sum(diff.values()), logits[rows, pos, target] - logits[rows, pos, other], atol=DLA_ATOL)
        assert torch.allclose(sum(attribution.grouped(diff).values()), sum(diff.values()), atol=1e-5)
    writes, resid = attribution.residual_writes(model, x)
    assert torch.allclose(sum(writes.values()), resid, atol=1e-4)
    n_heads = model.cfg.n_layer * model.cfg.n_head
    assert len([k for k in writes if "H" in k]) == n_heads


def test_direct_logit_attribution_credits_the_induction_heads(induction):
    clean, _, good, bad, _ = g_patching.induction_prompts(32, 10, 5)
    dla = attribution.grouped(attribution.direct_logit_attribution(induction, clean, good, bad))
    total = sum(dla.values()).mean()
    assert abs(total - 5.208) < 1e-2
    assert dla["L1 heads"].mean() > 0.95 * total and abs(dla["L0 heads"].mean()) < 0.2
    assert abs(dla["embed + pos"].mean()) < 0.1


# ---------------------------------------------------------------- steering and neurons
def test_direction_steers_and_projection_is_more_surgical_than_subtraction(shakespeare):
    _, model, tok = shakespeare
    x, spk = g_steering.shakespeare_windows(tok, n=16)
    name = "blocks.2.hook_resid_pre"
    _, cache = hooks.run_with_cache(model, x, names=[name])
    d = steering.diff_of_means(cache[name].reshape(-1, 128), spk.flatten())
    upper = torch.tensor([i for i, ch in enumerate(tok.vocab) if ch.isupper()])
    base = g_steering.upper_mass(model, x, upper)
    steered = g_steering.upper_mass(model, x, upper, [(name, g_steering.steer_hook(d, 1.0))])
    assert steered[~spk].mean() > 3 * base[~spk].mean()
    base_loss = g_steering.next_char_loss(model, x)
    other = ~spk[:, :-1]
    sub = g_steering.next_char_loss(model, x, [(name, g_steering.subtract_hook(d))]) - base_loss
    proj = g_steering.next_char_loss(model, x, [(name, steering.project_hook(d))]) - base_loss
    assert sub[spk[:, :-1]].mean() > 1 and proj[spk[:, :-1]].mean() > 1      # both remove the feature
    assert sub[other].mean() > 3 * proj[other].mean()                      # subtraction also hits the rest
    h = torch.randn(5, 128)
    assert torch.allclose(steering.project_out(h, d) @ d, torch.zeros(5), atol=1e-3)


def test_neuron_search_and_ablation_hooks():
    acts = torch.randn(200, 10, generator=torch.Generator().manual_seed(0))
    labels = (torch.arange(200) % 2)
    acts[:, 7] += 3 * labels
    assert g_steering.best_neuron(acts, labels)[0] == 7
    a = torch.ones(2, 3, 10)
    out = g_steering.neuron_hook(4, 0.5)(a, None)
    assert out[..., 4].eq(0.5).all() and a.eq(1).all()


def test_speaker_mask():
    mask = g_steering.speaker_mask("ROMEO:\nBut soft.\nJULIET:\nAy me.\n")
    assert mask.tolist()[:6] == [True] * 5 + [False] and mask.sum() == 5 + 6


# ---------------------------------------------------------------- SAE
def test_shipped_sae_reconstructs_sparsely(shakespeare):
    _, model, _ = shakespeare
    sae = g_sae.load_sae()
    acts = g_sae.shakespeare_activations(model, sae.info["hook"], n_windows=8)
    _, cache = hooks.run_with_cache(model, g_sae.shakespeare_activations(model, sae.info["hook"], n_windows=2,
                                                                      return_tokens=True)[1], names=[sae.info["hook"]])
    assert torch.equal(acts[:2 * 128], cache[sae.info["hook"]].reshape(-1, acts.shape[-1]))
    stats = g_sae.evaluate(sae, acts)
    assert stats["fvu"] < 0.2 and stats["l0"] < 40 and stats["dead_frac"] < 0.3


def test_sae_loss_terms_and_a_step_lowers_it():
    h = torch.randn(256, 8, generator=torch.Generator().manual_seed(0))
    sae = g_sae.SAE(8, 32)
    sae.init_from(h)
    loss, recon, sparsity = sae_mod.sae_loss(sae, h, 0.1)
    assert torch.isclose(loss, recon + 0.1 * sparsity)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for _ in range(20):
        opt.zero_grad()
        sae_mod.sae_loss(sae, h, 0.1)[0].backward()
        opt.step()
        sae.normalize_decoder()
    assert sae_mod.sae_loss(sae, h, 0.1)[0] < loss
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(32), atol=1e-5)


# ---------------------------------------------------------------- patchscope and editing
def test_patchscope_reads_the_subject_only_after_attention_moved_it(facts):
    ftok, target = tasks.facts_data()
    perm = torch.randperm(len(ftok), generator=torch.Generator().manual_seed(0))
    tgt = torch.stack([ftok[perm, 0], ftok[:, 1]], dim=1)
    read = [(patchscope.patchscope(facts, ftok, tgt, l).argmax(-1) == target).float().mean() for l in range(3)]
    assert read[0] < 0.2 and read[2] == 1.0


def test_rank_one_edit_formula():
    gen = torch.Generator().manual_seed(0)
    W, k, v = torch.randn(5, 7, generator=gen), torch.randn(7, generator=gen), torch.randn(5, generator=gen)
    K = torch.randn(30, 7, generator=gen)
    C_inv = torch.linalg.inv(K.T @ K / 30)
    W2 = editing.rank_one_edit(W, k, v, C_inv)
    assert torch.allclose(W2 @ k, v, atol=1e-4) and torch.linalg.matrix_rank(W2 - W) == 1
    other = torch.linalg.svd((C_inv @ k)[None]).Vh[1]          # any key x with (C^-1 k) . x = 0 keeps its value
    assert torch.allclose(W2 @ other, W @ other, atol=1e-3)


def test_edit_succeeds_and_preserves_unrelated_facts(facts):
    v = tasks.facts_vocab()
    ftok, target = tasks.facts_data()
    C_inv = torch.linalg.inv(g_editing.key_covariance(facts, 0, ftok))
    s, r = 5, 2
    old = int(target[s * tasks.N_REL + r])
    new = v["attr"] + (old - v["attr"] + 3) % tasks.N_ATTR
    rep = g_editing.edit_report(facts, editing.apply_edit(facts, 0, s, r, new, C_inv), s, r, new)
    assert rep["edit_succeeded"] and rep["output_changed"]
    assert rep["unrelated_kept"] > 0.97 and rep["same_subject_kept"] >= 2 / 3
    naive = g_editing.edit_report(facts, editing.apply_edit(facts, 0, s, r, new, None, keep_others=False), s, r, new)
    assert naive["unrelated_kept"] < rep["unrelated_kept"]


# ---------------------------------------------------------------- the lab's checks and notebook
def _check_all(reference):
    ref = lambda module: module if reference else None
    lab.check_hooks(hooks.get_cache, hooks.ablate_head_hook, reference=ref(hooks))
    lab.check_head_scores(scores.prev_token_score, scores.induction_score, reference=ref(scores))
    lab.check_logit_lens(lens.logit_lens, reference=ref(lens))
    lab.check_probe(probes.fit_probe, probes.probe_accuracy, probes.probe_selectivity, reference=ref(probes))
    lab.check_patching(patching.patch_resid, reference=ref(patching))
    lab.check_direction(steering.diff_of_means, steering.project_out, reference=ref(steering))
    lab.check_sae(sae_mod.sae_loss, reference=ref(sae_mod))
    lab.check_rome(editing.rank_one_edit, reference=ref(editing))


@pytest.mark.parametrize("with_reference", [False, True], ids=["fixtures", "reference"])
def test_lab_checks_pass_the_references(with_reference):
    _check_all(with_reference)


def test_lab_checks_fail_wrong_answers_with_the_case_and_a_hint():
    def one_back(pattern, seg_len, offset=1):          # the buggy sample's induction score
        return pattern.diagonal(offset=-seg_len, dim1=-2, dim2=-1)[..., offset:].mean(dim=(0, -1))
    with pytest.raises(checks.CheckFailed, match=r"induction_score, seg_len=5 offset=1(.|\n)*hint: queries"):
        lab.check_head_scores(scores.prev_token_score, one_back)

    def in_place(head):
        def hook(z, _):
            z[:, :, head] = 0.0
            return z
        return hook
    with pytest.raises(checks.CheckFailed, match="the input tensor after the hook(.|\n)*clone z"):
        lab.check_hooks(hooks.get_cache, in_place)

    def last_dim(head):
        return lambda z, _: z.index_fill(-1, torch.tensor([head]), 0.0)
    with pytest.raises(checks.CheckFailed, match=r"ablate_head\(0\) output, head 0"):
        lab.check_hooks(hooks.get_cache, last_dim)
    with pytest.raises(checks.CheckFailed, match="W_enc after one SGD step|does not require grad"):
        lab.check_sae(lambda sae, h, l1: tuple(t.detach() for t in sae_mod.sae_loss(sae, h, l1)))
    with pytest.raises(checks.CheckFailed, match=r"W' \(6x4\)(.|\n)*hint: W \+ outer"):
        lab.check_rome(lambda W, k, v, C_inv: editing.rank_one_edit(W, k, v, C_inv) * 1.01)

    def control_scored_on_true_labels(X, y, y_control, n_train, lam=1e-2):   # the old "random labels" control
        acc = probes.probe_accuracy(probes.fit_probe(X[:n_train], y[:n_train], lam), X[n_train:], y[n_train:])
        ctrl = probes.probe_accuracy(probes.fit_probe(X[:n_train], y_control[:n_train], lam), X[n_train:], y[n_train:])
        return acc, ctrl, acc - ctrl
    with pytest.raises(checks.CheckFailed, match=r"probe_selectivity, N=300(.|\n)*against its own labels"):
        lab.check_probe(probes.fit_probe, probes.probe_accuracy, control_scored_on_true_labels)
    with pytest.raises(LookupError, match="no expected output is shipped"):
        lab.check_rome(editing.rank_one_edit, cases=[(3, 9, 3)])
    lab.check_rome(editing.rank_one_edit, cases=[(3, 9, 3)], reference=editing)


def test_the_head_score_table_uses_the_functions_it_is_given(induction):
    x = tasks.repeated_tokens(8, 10, seed=1, vocab=32)
    prev, ind = g_scores.head_scores(induction, x, 10, scores.prev_token_score, scores.induction_score)
    _, cache = hooks.run_with_cache(induction, x)
    assert torch.equal(ind[1], scores.induction_score(cache["blocks.1.attn.hook_pattern"], 10))
    assert torch.equal(prev[0], scores.prev_token_score(cache["blocks.0.attn.hook_pattern"]))
    ones = g_scores.head_scores(induction, x, 10, lambda p: torch.ones(p.shape[1]), lambda p, L, o: torch.zeros(p.shape[1]))
    assert ones[0].eq(1).all() and ones[1].eq(0).all()
