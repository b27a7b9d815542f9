"""Lab 06's environment: what an agent acts in, and the tiny model that learned to use tools.

- tasks.py:      synthetic arithmetic tasks and the tiny model's compact trace format
- toolmodel.py:  the course's tinylm with an extended vocabulary, `load_tool_model()`, greedy decoding
- tool_model.pt: the tool-use checkpoint (fine-tuned by the instructor's training script)
- tools.py:      tools, JSON schemas, the toolbox with per-tool timeouts; `calculator_tool(calculate)`
- pysandbox.py:  the Python tool: a `python -I` child with resource limits (the boundary) and an
                 audit hook (a tripwire, not a sandbox)
- retrieval.py:  tokens, idf, the course notes (course_notes.json), a search index, the agent's memory
- loop.py:       the records of the observe-think-act loop (Action, Step, Trajectory)
- policies.py:   scripted, tiny-model and OpenAI-compatible (HTTP) policies
- server.py:     a small OpenAI-compatible chat-completions server backed by the tiny model
- evaluate.py:   what an episode's outcome means (failure kinds); reflection through memory
- topk_launch.py: tiles, document splits and the candidate merge of the fused similarity + top-k kernel

What the lab grades (the calculator, parsing an action and checking its arguments, the loop,
TF-IDF and top-k, the Triton kernel, the evaluation) is not here: the pieces above take the
learner's functions as arguments where they need them.
"""
