"""The instructor's references for lab 05's graded curation steps.

- licenses.py: the category of an SPDX expression (classify), the policy decision (decide)
- clean.py:    Gutenberg boilerplate out with attribution kept (strip_gutenberg); e-mails scrubbed
- dedup.py:    the Jaccard estimate of two MinHash signatures; LSH banding (lsh_candidates)
- card.py:     the card completeness checker
- pipeline.py: the opt-out step, and the pipeline run with every reference step

The machinery around them (sources, the SPDX parsing of declarations, policies, the pipeline's
frame, the card's template) is the learner's: `genfast.curation`. The MinHash kernel is
kernels/minhash.py.
"""
