"""Lab 07 reference code on the CPU: the hooked model, the shipped checkpoints and every tool."""

import pytest
import torch

from kernels.interp import editing, hooked, lens, patching, patchscope, probes, scores, steering, tasks
from kernels.interp import sae as sae_mod
from genfast.tinylm import load as load_tinylm

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


def test_the_kernels_package_is_the_course_one():
    assert hooked.__file__.endswith("kernels/interp/hooked.py")


# ---------------------------------------------------------------- hooks
def test_cache_hooks_and_replacement(induction):
    x = tasks.repeated_tokens(3, 5, seed=0, vocab=32)
    logits, cache = induction.run_with_cache(x)
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
    layer, head = scores.best_head(ind)
    assert layer == 1 and ind[layer, head] > 0.6
    assert ind[0].max() < 0.2                     # layer 0 cannot do induction alone
    pl, ph = scores.best_head(prev)
    assert pl == 0 and prev[pl, ph] > 0.5
    # ablation: the induction heads carry in-context copying
    first, second = tasks.halves_loss(induction, x, 10)
    assert second < 0.6 < 3.0 < first
    hooks = [(f"blocks.{l}.attn.hook_z", scores.ablate_head_hook(h)) for l in range(2) for h in range(4) if ind[l, h] > 0.4]
    with induction.hooks(hooks):
        assert tasks.halves_loss(induction, x, 10)[1] > 2.5
    with induction.hooks([(f"blocks.{layer}.attn.hook_z", scores.ablate_head_hook(head))]):
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
    ranks = lens.token_rank(ll[:, :, :-1], x[:, 1:].expand(3, -1, -1)).float()[:, :, 11:].mean((1, 2))
    assert ranks[-1] < 1 < ranks[0]


def test_probe_recovers_a_planted_direction_and_beats_its_controls(induction):
    X = torch.randn(400, 6, generator=torch.Generator().manual_seed(0))
    y = (X[:, 2] > 0).long()
    w = probes.fit_probe(X[:300], y[:300], lam=1e-3)
    assert probes.probe_accuracy(w, X[300:], y[300:]) > 0.95 and w[:-1].abs().argmax() == 2
    tok, py = probes.prev_token_probe_data(120, seed=0)
    feats, yy = probes.layer_features(induction, tok, py)
    res = probes.probe_by_layer(feats, yy, 1800)
    acc, ctrl = res["blocks.0.hook_resid_post"]
    assert acc > 0.65 and abs(ctrl - 0.5) < 0.06 and res["blocks.0.hook_resid_pre"][0] < 0.56


def test_patching_localises_the_changed_position_and_layer_one_heads(induction):
    clean, corrupted, good, bad, pos = patching.induction_prompts(16, 10, 5)
    metric = lambda lg: patching.logit_diff(lg, good, bad)
    assert metric(induction(clean)).mean() > 2 and metric(induction(corrupted)).mean() < -2
    resid = patching.patch_resid(induction, clean, corrupted, metric)
    assert resid[0, pos] > 0.99 and resid[1, pos] > 0.9
    assert resid[:, :pos].abs().max() < 1e-4                 # earlier positions do not see the change
    heads = patching.patch_heads(induction, clean, corrupted, metric)
    assert heads[1].sum() > 0.7 and heads[0].abs().max() < 0.05


# ---------------------------------------------------------------- steering and neurons
def test_direction_steers_and_projection_is_more_surgical_than_subtraction(shakespeare):
    _, model, tok = shakespeare
    x, spk = steering.shakespeare_windows(tok, n=16)
    name = "blocks.2.hook_resid_pre"
    _, cache = model.run_with_cache(x, names=[name])
    d = steering.diff_of_means(cache[name].reshape(-1, 128), spk.flatten())
    upper = torch.tensor([i for i, ch in enumerate(tok.vocab) if ch.isupper()])
    base = steering.upper_mass(model, x, upper)
    steered = steering.upper_mass(model, x, upper, [(name, steering.steer_hook(d, 1.0))])
    assert steered[~spk].mean() > 3 * base[~spk].mean()
    base_loss = steering.next_char_loss(model, x)
    other = ~spk[:, :-1]
    sub = steering.next_char_loss(model, x, [(name, steering.subtract_hook(d))]) - base_loss
    proj = steering.next_char_loss(model, x, [(name, steering.project_hook(d))]) - base_loss
    assert sub[spk[:, :-1]].mean() > 1 and proj[spk[:, :-1]].mean() > 1      # both remove the feature
    assert sub[other].mean() > 3 * proj[other].mean()                      # subtraction also hits the rest
    h = torch.randn(5, 128)
    assert torch.allclose(steering.project_out(h, d) @ d, torch.zeros(5), atol=1e-3)


def test_neuron_search_and_ablation_hooks():
    acts = torch.randn(200, 10, generator=torch.Generator().manual_seed(0))
    labels = (torch.arange(200) % 2)
    acts[:, 7] += 3 * labels
    assert steering.best_neuron(acts, labels)[0] == 7
    a = torch.ones(2, 3, 10)
    out = steering.neuron_hook(4, 0.5)(a, None)
    assert out[..., 4].eq(0.5).all() and a.eq(1).all()


def test_speaker_mask():
    mask = steering.speaker_mask("ROMEO:\nBut soft.\nJULIET:\nAy me.\n")
    assert mask.tolist()[:6] == [True] * 5 + [False] and mask.sum() == 5 + 6


# ---------------------------------------------------------------- SAE
def test_shipped_sae_reconstructs_sparsely(shakespeare):
    _, model, _ = shakespeare
    sae = sae_mod.load_sae()
    acts = sae_mod.shakespeare_activations(model, sae.info["hook"], n_windows=8)
    stats = sae_mod.evaluate(sae, acts)
    assert stats["fvu"] < 0.2 and stats["l0"] < 40 and stats["dead_frac"] < 0.3


def test_sae_loss_terms_and_a_step_lowers_it():
    h = torch.randn(256, 8, generator=torch.Generator().manual_seed(0))
    sae = sae_mod.SAE(8, 32)
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
    C_inv = torch.linalg.inv(editing.key_covariance(facts, 0, ftok))
    s, r = 5, 2
    old = int(target[s * tasks.N_REL + r])
    new = v["attr"] + (old - v["attr"] + 3) % tasks.N_ATTR
    rep = editing.edit_report(facts, editing.apply_edit(facts, 0, s, r, new, C_inv), s, r, new)
    assert rep["edit_succeeded"] and rep["output_changed"]
    assert rep["unrelated_kept"] > 0.97 and rep["same_subject_kept"] >= 2 / 3
    naive = editing.edit_report(facts, editing.apply_edit(facts, 0, s, r, new, None, keep_others=False), s, r, new)
    assert naive["unrelated_kept"] < rep["unrelated_kept"]
