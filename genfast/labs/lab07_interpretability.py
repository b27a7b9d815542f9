"""Checks for lab07_interpretability: the hook cache and head ablation, the head scores, the logit lens,
the linear probe and its selectivity against a control task, the patching scan, the difference-of-means
direction, the SAE loss, the rank-one edit.

Every one of them is an answer, so the visible checks compare with expected outputs shipped in
genfast/fixtures (the instructor's references on the same seeded inputs), and with properties that
need no reference: the lens's last row is the model's output, the projection leaves nothing along
the direction, W' k = v*, an ablated head is zero and the others untouched. Each check loads the
shipped models afresh (`genfast.interp.hooked.load`). The grader passes the instructor's modules as
`reference` and checks more cases.
"""
from __future__ import annotations

import copy

import torch

from genfast import checks, fixtures
from genfast.interp import hooked, patching, scores, tasks
from genfast.interp.sae import SAE

LAB = "lab07_interpretability"
LABELS = {"induction": "induction model", "facts": "facts model", "modadd": "modadd model"}


def model(name: str):
    """A shipped model, fresh from its checkpoint (what a notebook did to its own copy does not count)."""
    return hooked.load(name)


def tokens(spec) -> torch.Tensor:
    """Tokens from a spec: ("repeated", batch, seg_len, seed[, rows]), ("facts", rows), ("modadd", rows)."""
    kind, *args = spec
    if kind == "repeated":
        batch, seg_len, seed, *rows = args
        x = tasks.repeated_tokens(batch, seg_len, seed=seed, vocab=32)
        return x[:rows[0]] if rows else x
    if kind == "facts":
        return tasks.facts_data()[0][:args[0]]
    if kind == "modadd":
        return tasks.modadd_data()[0][:args[0]]
    raise ValueError(f"unknown token spec {spec!r}")


def key(*parts) -> str:
    return "/".join("-".join(str(x) for x in p) if isinstance(p, tuple) else str(p) for p in parts)


def _expected(name: str, what: str):
    return fixtures.load(LAB, name, what=what)


def randn(*shape, seed, scale=1.0) -> torch.Tensor:
    """checks.randn on the CPU (this lab's models run there)."""
    return checks.randn(*shape, seed=seed, scale=scale).cpu()


def _tensor(x):
    return x.detach() if isinstance(x, torch.Tensor) else x


# 1. hooks ---------------------------------------------------------------------------
HOOK_CASES = [("induction", ("repeated", 4, 6, 3),
               ("blocks.0.attn.hook_pattern", "blocks.1.hook_resid_post", "blocks.0.attn.hook_z"))]


def z_names(mdl) -> list[str]:
    return [f"blocks.{l}.attn.hook_z" for l in range(mdl.cfg.n_layer)]


def check_hooks(get_cache, ablate_head, cases=HOOK_CASES, reference=None):
    """get_cache returns exactly the requested activations; ablate_head zeroes one head in a new
    tensor (heads 0 and H-1 of every layer), also inside the model's forward pass."""
    for model_name, spec, names in cases:
        mdl, toks, names = model(model_name), tokens(spec), list(names)
        got = checks.call(get_cache, mdl, toks, names, name="get_cache")
        wanted = sorted(set(names) | set(z_names(mdl)))
        if reference is not None:
            ref = reference.run_with_cache(mdl, toks, names=wanted)[1]
        else:
            ref = {n: _expected(key("hooks", model_name, spec, n), f"get_cache on {spec}") for n in wanted}
        if not isinstance(got, dict) or sorted(got) != sorted(names):
            raise checks.CheckFailed(f"get_cache: expected a dict with keys {names}, got "
                                     f"{sorted(got) if isinstance(got, dict) else checks._describe(got)}")
        for n in names:
            checks.compare(got[n], ref[n], what=f"get_cache()['{n}']")
        H = mdl.cfg.n_head
        for l, name in enumerate(z_names(mdl)):
            for h in (0, H - 1):
                hook = checks.call(ablate_head, h, name="ablate_head")
                z = ref[name].clone()
                before = z.clone()
                out = checks.call(hook, z, None, name=f"ablate_head({h})")
                checks.compare(z, before, what=f"ablate_head({h}): the input tensor after the hook",
                               hint="clone z before writing into it; never modify the activation in place")
                if reference is not None:
                    expected_hook = reference.ablate_head_hook(h)
                    checks.compare(out, expected_hook(before, None), what=f"ablate_head({h}) output")
                else:
                    if not isinstance(out, torch.Tensor) or out.shape != before.shape:
                        raise checks.CheckFailed(f"ablate_head({h}) output: expected a {checks._describe(before)}, "
                                                 f"got {checks._describe(out)}")
                    others = [i for i in range(H) if i != h]
                    checks.compare(out[:, :, h], torch.zeros_like(before[:, :, h]), what=f"ablate_head({h}) output, "
                                   f"head {h}", hint="z has shape (B, T, H, d_head): set z[:, :, head] to 0")
                    checks.compare(out[:, :, others], before[:, :, others],
                                   what=f"ablate_head({h}) output, the other heads", hint="change head `head` only")
                    ablated = out.detach().clone()     # now known right: it is what the model's z must become
                    expected_hook = lambda z_, _, ablated=ablated: ablated
                checks.compare(mdl.run_with_hooks(toks, [(name, hook)]), mdl.run_with_hooks(toks, [(name, expected_hook)]),
                               what=f"logits with head {l}.{h} ablated", atol=1e-5)
        print(f"  ok  {len(names)} hook points cached; head ablation right in every layer")


# 2. head scores ---------------------------------------------------------------------
SCORE_CASES = [(2, 4, 5, 1, 0), (1, 1, 3, 0, 1)]   # (B, H, seg_len, offset, seed)


def score_pattern(B, H, L, offset, seed) -> torch.Tensor:
    """A random causal attention pattern (B, H, T, T), T = offset + 2 L."""
    T = offset + 2 * L
    return torch.softmax(randn(B, H, T, T, seed=seed) * 3 + torch.full((T, T), float("-inf")).triu(1), -1)


def check_head_scores(prev_token_score, induction_score, cases=SCORE_CASES, reference=None):
    """Both scores on random patterns; then the best induction head of the trained model by your
    score must be in layer 1 and score > 0.5."""
    for B, H, L, offset, seed in cases:
        pat = score_pattern(B, H, L, offset, seed)
        note = f"the scores of a B={B} H={H} seg_len={L} offset={offset} pattern"
        got = checks.call(prev_token_score, pat)
        want = reference.prev_token_score(pat) if reference is not None else \
            _expected(key("scores", (B, H, L, offset, seed), "prev"), note)
        checks.compare(got, want, what=f"prev_token_score, B={B} H={H} T={offset + 2 * L}",
                       hint="mean of A[t, t-1] over the batch and t >= 1")
        got = checks.call(induction_score, pat, L, offset)
        want = reference.induction_score(pat, L, offset) if reference is not None else \
            _expected(key("scores", (B, H, L, offset, seed), "induction"), note)
        checks.compare(got, want, what=f"induction_score, seg_len={L} offset={offset}",
                       hint="queries of the second copy only (t >= offset + seg_len), key t - seg_len + 1")
    print(f"  ok  {len(cases)} random patterns")
    x_rep = tasks.repeated_tokens(64, 10, seed=1, vocab=32)
    _, ind_mine = checks.call(scores.head_scores, model("induction"), x_rep, 10, prev_token_score, induction_score,
                              name="induction_score")
    layer, head = scores.best_head(ind_mine)
    if layer != 1 or ind_mine.max() < 0.5:
        raise checks.CheckFailed(f"the best induction head by your score is {layer}.{head} with score "
                                 f"{ind_mine.max():.2f}; the trained model has induction heads in layer 1 scoring > 0.5")
    print(f"best induction head {layer}.{head}: score {ind_mine.max():.2f}")


# 3. the logit lens ------------------------------------------------------------------
LENS_CASES = [("induction", ("repeated", 64, 10, 1, 4)), ("facts", ("facts", 9))]


def check_logit_lens(logit_lens, cases=LENS_CASES, reference=None):
    with torch.no_grad():
        for model_name, spec in cases:
            mdl, toks, label = model(model_name), tokens(spec), LABELS[model_name]
            got = checks.call(logit_lens, mdl, toks)
            want = reference.logit_lens(mdl, toks) if reference is not None else \
                _expected(key("lens", model_name, spec), f"the lens of the {label} on {spec}")
            checks.compare(got, want, atol=1e-4, what=f"logit_lens on the {label}",
                           hint="decode with model.to_logits (final LayerNorm + unembedding)")
            checks.compare(got[-1], mdl(toks), atol=1e-4, what=f"last row of the lens vs the model's logits ({label})")
    print("  ok  the lens matches, and its last layer is the model's output")


# 4. linear probes -------------------------------------------------------------------
PROBE_CASES = [(200, 5, 1e-2, 0), (50, 8, 1.0, 1)]   # (N, d, lam, seed)
# (N, n_types, d, what X stores, seed): X stores the input's type (any type -> label map is readable,
# selectivity ~0) or only the property (the control task is not readable, selectivity high)
SELECTIVITY_CASES = [(300, 6, 8, "types", 0), (200, 8, 16, "property", 4)]
SELECTIVITY_HINT = ("fit one probe on y[:n_train] and one on y_control[:n_train]; score EACH on the held-out rows "
                    "against its own labels (the control probe against y_control[n_train:], not y); "
                    "selectivity = real accuracy - control accuracy")


def probe_data(N, d, seed):
    """X (N, d) and labels y = [X_0 + noise > 0]."""
    X = randn(N, d, seed=seed)
    return X, (X[:, 0] + 0.5 * randn(N, seed=seed + 1) > 0).long()


def selectivity_data(N, n_types, d, stores, seed):
    """X (N, d), real labels y (N,) and control labels (N,) for inputs of n_types types: y = [type in the
    lower half], the control a fixed random relabelling of the types (Hewitt and Liang's control task).
    stores="types": X is a random embedding of the type plus noise; "property": X holds only y (on
    dimension 0) plus noise. The probes train on the first 2N/3 rows (`selectivity_split`)."""
    gen = torch.Generator().manual_seed(seed)
    types = torch.randint(0, n_types, (N,), generator=gen)
    of_type = (torch.arange(n_types) < n_types // 2).long()
    y = of_type[types]
    y_control = of_type[torch.randperm(n_types, generator=gen)][types]
    noise = torch.randn(N, d, generator=gen)
    if stores == "types":
        X = 2 * torch.randn(n_types, d, generator=gen)[types] + noise
    else:
        X = noise
        X[:, 0] += 2 * (2 * y - 1)
    return X, y, y_control


def selectivity_split(N) -> int:
    return 2 * N // 3


def check_probe(fit_probe, probe_accuracy, probe_selectivity, cases=PROBE_CASES,
                selectivity_cases=SELECTIVITY_CASES, reference=None):
    """The ridge probe and its accuracy on planted data; then probe_selectivity on inputs of a few
    types, where scoring the control probe against the real labels gives other numbers."""
    for N, d, lam, seed in cases:
        X, y = probe_data(N, d, seed)
        w = checks.call(fit_probe, X, y, lam)
        if reference is not None:
            want = reference.fit_probe(X, y, lam)
            acc = reference.probe_accuracy(want, X, y)
        else:
            note = f"the probe with N={N} d={d} lam={lam}"
            want = _expected(key("probe", (N, d, lam, seed), "w"), note)
            acc = _expected(key("probe", (N, d, lam, seed), "accuracy"), note)
        checks.compare(w, want, atol=1e-4, rtol=1e-3, what=f"fit_probe N={N} d={d} lam={lam}",
                       hint="targets 2y - 1, a column of ones appended (bias last), ridge lam * N * I (the bias too)")
        checks.check_value(f"probe_accuracy N={N} d={d}", probe_accuracy, w, X, y, expected=acc, rel=1e-6)
    for N, n_types, d, stores, seed in selectivity_cases:
        X, y, y_control = selectivity_data(N, n_types, d, stores, seed)
        n_train = selectivity_split(N)
        what = f"probe_selectivity, N={N} {n_types} types, X stores the {stores}"
        got = checks.call(probe_selectivity, X, y, y_control, n_train, name="probe_selectivity")
        if reference is not None:
            want = torch.tensor(reference.probe_selectivity(X, y, y_control, n_train))
        else:
            want = _expected(key("selectivity", (N, n_types, d, stores, seed)), f"the selectivity case {what}")
        if not (isinstance(got, (tuple, list)) and len(got) == 3 and all(isinstance(v, (int, float)) for v in got)):
            raise checks.CheckFailed(f"{what}: expected three floats (real accuracy, control accuracy, selectivity), "
                                     f"got {checks._describe(got)}")
        # accuracies are multiples of 1 / (held-out rows): a real difference is >= 0.01 here
        checks.compare(torch.tensor([float(v) for v in got]), want, atol=1e-6, rtol=0.0,
                       what=f"{what}: (real, control, selectivity)", hint=SELECTIVITY_HINT)
        print(f"  ok  {what}: real {got[0]:.2f}, control {got[1]:.2f}, selectivity {got[2]:+.2f}")


# 5. activation patching -------------------------------------------------------------
PATCH_CASES = [(16, 8, 4, 0)]   # (n, seg_len, k, seed) of patching.induction_prompts


def check_patching(patch_resid_scan, cases=PATCH_CASES, reference=None):
    for n, seg_len, k, seed in cases:
        clean, corrupted, good, bad, pos = patching.induction_prompts(n, seg_len, k, seed=seed)
        metric = lambda logits, good=good, bad=bad: patching.logit_diff(logits, good, bad)
        mdl = model("induction")
        got = checks.call(patch_resid_scan, mdl, clean, corrupted, metric)
        want = reference.patch_resid(mdl, clean, corrupted, metric) if reference is not None else \
            _expected(key("patching", (n, seg_len, k, seed)), f"the scan with n={n} seg_len={seg_len} k={k}")
        checks.compare(got, want, atol=1e-4, what=f"recovered fraction, n={n} seg_len={seg_len} k={k}",
                       hint="patch ONE position of ONE layer per run, from the clean cache into the corrupted run; "
                            "(m - m_corrupted) / (m_clean - m_corrupted), batch-averaged metric")
        print(f"  ok  {tuple(got.shape)} scan matches; patching position {pos} of layer 0 recovers {got[0, pos]:.2f}")


# 6. a direction ---------------------------------------------------------------------
DIRECTION_CASES = [(100, 8, 0), (7, 128, 1)]   # (N, d, seed)


def direction_data(N, d, seed):
    """acts (N, d), labels (N,) in {0, 1}, and the states h (3, 5, d) to project."""
    return randn(N, d, seed=seed), (randn(N, seed=seed + 1) > 0).long(), randn(3, 5, d, seed=seed + 2)


def check_direction(diff_of_means, project_out, cases=DIRECTION_CASES, reference=None):
    for N, d, seed in cases:
        acts, labels, h = direction_data(N, d, seed)
        note = f"the direction with N={N} d={d}"
        got = checks.call(diff_of_means, acts, labels)
        want = reference.diff_of_means(acts, labels) if reference is not None else \
            _expected(key("direction", (N, d, seed), "diff_of_means"), note)
        checks.compare(got, want, what=f"diff_of_means N={N} d={d}")
        out = checks.call(project_out, h, got * 7.0)
        want = reference.project_out(h, got) if reference is not None else \
            _expected(key("direction", (N, d, seed), "project_out"), note)
        checks.compare(out, want, atol=1e-5, what=f"project_out d={d}",
                       hint="normalise the direction first: the result must not depend on its length")
        checks.compare(out @ got, torch.zeros(3, 5), atol=1e-4, what="component left along the direction after project_out")
    print("  ok  difference of means and projection")


# 7. the sparse autoencoder ----------------------------------------------------------
SAE_CASES = [(16, 64, 100, 3e-3, 0), (5, 7, 3, 0.5, 1)]   # (d, n_features, N, l1, seed)
SAE_HINT = "divide h by sae.scale first; squared error summed over dimensions, averaged over rows"
SAE_STEP_HINT = "the loss must be differentiable through sae's parameters (no .detach(), no .item())"


def sae_case(d, n, N, seed):
    """An SAE (d, n) initialised on activations h (N, d), with a random encoder bias, and h."""
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(N, d, generator=gen) * 3
    sae = SAE(d, n)
    sae.init_from(h)
    sae.b_enc.data = torch.randn(n, generator=gen) * 0.1
    return sae, h


def sgd_step(sae, loss_fn, h, l1):
    """A copy of `sae` after one SGD step (lr 0.1) on loss_fn(sae, h, l1)[0]."""
    sae = copy.deepcopy(sae)
    opt = torch.optim.SGD(sae.parameters(), lr=0.1)
    loss_fn(sae, h, l1)[0].backward()
    opt.step()
    return sae


def check_sae(sae_loss, cases=SAE_CASES, reference=None):
    for d, n, N, l1, seed in cases:
        sae, h = sae_case(d, n, N, seed)
        got = checks.call(sae_loss, sae, h, l1)
        if reference is not None:
            ref = [t.detach() for t in reference.sae_loss(sae, h, l1)]
            ref_W_enc = sgd_step(sae, reference.sae_loss, h, l1).W_enc.detach()
        else:
            note = f"the SAE with d={d} n={n} l1={l1}"
            ref = [_expected(key("sae", (d, n, N, l1, seed), part), note) for part in ("loss", "recon", "sparsity")]
            ref_W_enc = _expected(key("sae", (d, n, N, l1, seed), "W_enc_after_step"), note)
        if not (isinstance(got, tuple) and len(got) == 3):
            raise checks.CheckFailed(f"sae_loss: expected (loss, reconstruction, sparsity), got {checks._describe(got)}")
        for g, r_, what in zip(got, ref, ("loss", "reconstruction", "sparsity")):
            checks.compare(_tensor(g), r_, atol=1e-4, rtol=1e-4, what=f"sae_loss {what} (d={d}, n={n}, l1={l1})",
                           hint=SAE_HINT)
        mine = checks.call(sgd_step, sae, sae_loss, h, l1, name="sae_loss", hint=SAE_STEP_HINT)
        checks.compare(mine.W_enc.detach(), ref_W_enc, atol=1e-4, what="W_enc after one SGD step on your loss",
                       hint=SAE_STEP_HINT)
    print("  ok  SAE loss and one training step")


# 9. the rank-one edit ---------------------------------------------------------------
ROME_CASES = [(6, 4, 0), (64, 256, 1)]   # (d_out, d_in, seed)


def rome_case(d_out, d_in, seed):
    """W (d_out, d_in), k (d_in,), v* (d_out,) and C^-1 of random keys (ridge 0.1)."""
    gen = torch.Generator().manual_seed(seed)
    W, k, v = torch.randn(d_out, d_in, generator=gen), torch.randn(d_in, generator=gen), torch.randn(d_out, generator=gen)
    K = torch.randn(3 * d_in, d_in, generator=gen)
    return W, k, v, torch.linalg.inv(K.T @ K / len(K) + 0.1 * torch.eye(d_in))


def check_rome(rank_one_edit, cases=ROME_CASES, reference=None):
    for d_out, d_in, seed in cases:
        W, k, v, C_inv = rome_case(d_out, d_in, seed)
        got = checks.call(rank_one_edit, W, k, v, C_inv)
        want = reference.rank_one_edit(W, k, v, C_inv) if reference is not None else \
            _expected(key("rome", (d_out, d_in, seed)), f"the edit of a {d_out}x{d_in} W")
        checks.compare(got, want, atol=1e-4, rtol=1e-4, what=f"W' ({d_out}x{d_in})",
                       hint="W + outer(v* - W k, C^-1 k) / (k^T C^-1 k)")
        checks.compare(got @ k, v, atol=1e-3, rtol=1e-3, what="W' k (must equal v*)")
        if torch.linalg.matrix_rank(got - W) != 1:
            raise checks.CheckFailed("W' - W should have rank one")
    print("  ok  the edit writes v* at k with a rank-one change")
