"""Lab 06: an agent loop with tools, retrieval memory and a tiny tool-using model.

- tasks.py:      synthetic arithmetic tasks and the tiny model's compact trace format
- toolmodel.py:  the course's tinylm with an extended vocabulary, `load_tool_model()`, fast greedy decoding
- train.py:      `python -m kernels.agents.train` fine-tunes it on tool-use traces (CPU, a few minutes)
- tools.py:      tool schemas, the safe calculator, the tool registry with per-tool timeouts
- pysandbox.py:  the Python tool: a `python -I` child with resource limits and an audit hook
- retrieval.py:  TF-IDF (torch) and top-k retrieval over the course notes and the agent's memory
- loop.py:       parse_action and the observe-think-act loop with a step budget
- policies.py:   scripted, tiny-model and OpenAI-compatible (HTTP) policies
- server.py:     a small OpenAI-compatible chat-completions server backed by the tiny model
- evaluate.py:   success rates, steps, failure kinds; reflection through memory
"""
