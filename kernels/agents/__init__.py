"""Lab 06's references: what the lab grades, and the course's tools and experiments built on them.

- tools.py:     the safe calculator (`calculate`), its tool, the default toolbox
- loop.py:      check_arguments, parse_action and the observe-think-act loop with a step budget
- retrieval.py: TF-IDF rows and top-k; the course index, search tool and memory on them
- evaluate.py:  success rates, steps, failure kinds over tasks; the reflection experiment on them
- train.py:     `python -m kernels.agents.train` fine-tunes the tool model (CPU, a few minutes)

The environment (tasks, the tool model and its decoding, the Toolbox, the Python sandbox, the
policies, the OpenAI-compatible server, the checkpoint) is the learner's `genfast.agents`.
"""
