"""Lab 07's instructor side: the reference answers of the interpretability tools, and the training script.

The environment (the hooked model, the shipped checkpoints, the tasks, and every tool the notebook
uses that is not a graded answer) is the learner's: genfast/interp/. Here:

- hooks.py:    the hook cache (`run_with_cache`, `get_cache`) and head ablation
- scores.py:   previous-token and induction scores of attention heads
- lens.py:     the logit lens
- probes.py:   linear probes (closed-form ridge) and their accuracy
- patching.py: activation patching over layers x positions (and heads)
- steering.py: difference-of-means directions; removal by projection
- sae.py:      the sparse autoencoder's loss
- editing.py:  the rank-one (ROME) edit
- train.py:    `python -m kernels.interp.train [induction|modadd|facts|sae]` (CPU, a few minutes),
               writes the checkpoints into genfast/interp/
"""
