"""A copyright-aware text dataset, from sources to a published card (lab 05).

One module per job, in the order the pipeline applies them:

- sources.py:  records from real offline sources, each with its declared licence and how it was found
- licenses.py: licence strings -> SPDX expressions (license-expression), categories, the user's policy
- clean.py:    licence boilerplate (Project Gutenberg headers) out, attribution kept; personal data scrubbed
- dedup.py:    exact dedup by hash, near-duplicates by MinHash (kernels/minhash.py) + LSH banding
- card.py:     the dataset card (YAML metadata + sections), its completeness checker, the round trip
- pipeline.py: opt-outs first, then licences, policy, cleaning, dedup; a report of everything removed
"""
