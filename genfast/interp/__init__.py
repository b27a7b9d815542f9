"""Lab 07's environment: small models whose mechanism is known, their tasks, and the tools the notebook
uses around the learner's code. No answer of the lab is here (the instructor's references are not part
of the learner install); where a tool needs one, it takes the learner's function as an argument.

- hooked.py:     a transformer with named hook points (read / overwrite any activation with
                 `model.hooks`, `model.run_with_hooks`), the shipped checkpoints (`load`: induction,
                 modadd, facts) and `from_tinylm` for the Shakespeare model of lab 01
- tasks.py:      induction (repeated random segments), modular addition, synthetic facts
- scores.py:     a table of head scores from the learner's score functions; the best head
- lens.py:       the residual-stream names the lens decodes; the rank of a token
- fourier.py:    the modular-addition model against its known mechanism (key frequencies of the
                 embedding, the logits' fit by sum_k cos(w_k (a + b - c)))
- probes.py:     the previous-token probe data set, its control task (a random label per previous-token
                 type) and the residual-stream features per layer
- attribution.py: direct logit attribution (each component's write through the frozen final LayerNorm
                 onto a logit direction)
- patching.py:   clean / corrupted induction prompts, the logit difference, one head's output patched
- steering.py:   speaker names in Shakespeare, neuron search and ablation hooks, steering hooks, losses
- sae.py:        the sparse autoencoder model (encode / decode), the shipped SAE and its evaluation
- patchscope.py: decode a hidden state by patching it into another prompt
- editing.py:    MLP keys and their covariance, the target value v*, an edit's report
"""
