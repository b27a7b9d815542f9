"""Lab 07: interpretability tools on small models whose mechanism is known, and on the course's model.

- hooked.py:     a transformer with named hook points (read / overwrite any activation), the
                 shipped checkpoints (`load`), and `from_tinylm` for the Shakespeare model of lab 01
- tasks.py:      induction (repeated random segments), modular addition, synthetic facts
- train.py:      `python -m kernels.interp.train [induction|modadd|facts|sae]` (CPU, a few minutes)
- scores.py:     previous-token and induction scores of attention heads; head ablation
- lens.py:       the logit lens
- probes.py:     linear probes (closed-form ridge) and their controls
- patching.py:   activation patching over layers x positions and heads
- steering.py:   neurons and difference-of-means directions: ablation, steering, projection
- sae.py:        a sparse autoencoder and its loss
- patchscope.py: decode a hidden state by patching it into another prompt
- editing.py:    MLPs as key-value memories; the rank-one (ROME) edit
"""
