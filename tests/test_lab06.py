"""Lab 06: the agent loop, parse_action, tools (calculator, sandboxed Python, search), TF-IDF
retrieval, the fused similarity + top-k kernel, the tiny tool model, the OpenAI-compatible server,
and the reflection experiment; the lab's check helpers, fixtures and released notebook."""
import json
import socket
import threading
import time
import urllib.request

import pytest
import torch

from genfast import checks
from genfast.agents import policies, pysandbox, server, tasks, topk_launch
from genfast.agents.toolmodel import generate_line, load_tool_model
from genfast.labs import lab06_agents as lab
from kernels import similarity_topk as st
from kernels.agents import evaluate, loop, retrieval, tools

LAB = "lab06_agents"

CALC = tools.Toolbox.of(tools.calculator_tool())


@pytest.fixture(scope="module")
def tool_model():
    torch.set_num_threads(1)
    return load_tool_model()


# ---------------------------------------------------------------- calculator
@pytest.mark.parametrize("expr,want", [("347*29", 10063), ("2+3*4", 14), ("(2+3)*4", 20), ("-7//2", -4),
                                       ("7/2", 3.5), ("2**10", 1024), ("17%5", 2), ("-(3-5)", 2), ("1.5*2", 3.0),
                                       ("(10**30)**10", 10**300), ("(2**64)**20", 2**1280), ("9" * 200, int("9" * 200))])
def test_calculator_values(expr, want):
    assert tools.calculate(expr) == want


@pytest.mark.parametrize("expr,words", [("__import__('os')", "not allowed"), ("x+1", "names are not allowed"),
                                        ("(1).real", "attribute"), ("2**1000", "exponent"), ("1/0", "division by zero"),
                                        ("9**9**9", "exponent"), ("'a'*3", "not allowed"), ("1+", "not a valid"),
                                        ("[1,2]", "not allowed"), ("1" * 300, "longer"), ("1" * 201, "longer than"),
                                        ("(9**64)**64", "digits"), ("((2**64)**64)**64", "digits"),
                                        ("(-8)**0.5", "complex"), ("(-2)**(1/3)", "complex"),
                                        ("1e300**2", "too large"), ("(1e10)**40", "too large"),
                                        (12345, "string"), (None, "string")])
def test_calculator_refuses_with_a_clear_error(expr, words):
    with pytest.raises(tools.ToolError, match=words):
        tools.calculate(expr)


# ---------------------------------------------------------------- parse_action
def test_parse_action_shapes_and_schema():
    ok = loop.parse_action('I will compute. {"tool":"calculator","arguments":{"expression":"1+2"}}', CALC)
    assert (ok.kind, ok.tool, ok.arguments, ok.thought) == ("call", "calculator", {"expression": "1+2"}, "I will compute.")
    ans = loop.parse_action('{"answer": 42}', CALC)
    assert (ans.kind, ans.answer) == ("answer", "42")
    for text, words in [("no json here", "no JSON"), ('{"tool": "calculator", "arguments": {', "invalid JSON"),
                        ('{"tool":"weather","arguments":{}}', "unknown tool"), ('[1, 2]', "object"),
                        ('{"tool":"calculator","arguments":{}}', "missing required"),
                        ('{"tool":"calculator","arguments":{"expression": 12}}', "type string"),
                        ('{"tool":"calculator","arguments":{"expression":"1","x":2}}', "unknown argument"),
                        ('{"tool":"calculator","arguments":"1+2"}', "must be an object"), ('{"thought": 1}', "neither")]:
        a = loop.parse_action(text, CALC)
        assert a.kind == "malformed" and words in a.error, (text, a)


def test_check_arguments_types():
    p = {"properties": {"n": {"type": "integer"}, "x": {"type": "number"}, "s": {"type": "string"}}, "required": ["n"]}
    assert loop.check_arguments({"n": 3, "x": 1.5}, p) is None
    assert "integer" in loop.check_arguments({"n": 1.5}, p)
    assert "integer" in loop.check_arguments({"n": True}, p)        # a bool is not a JSON integer
    assert "number" in loop.check_arguments({"n": 1, "x": "2"}, p)


# ---------------------------------------------------------------- the loop, with a scripted policy
def test_loop_calls_tool_then_answers():
    pol = policies.ScriptedPolicy([tasks.call_json("calculator", expression="347*29"),
                                   lambda goal, hist: tasks.answer_json(hist[-1][1])])
    traj = loop.run_agent("347*29", pol, CALC)
    assert traj.status == "answered" and traj.answer == "10063" and len(traj.steps) == 2
    assert traj.steps[0].observation == "10063" and traj.steps[0].error_kind is None


def test_loop_budget_and_malformed_feedback():
    seen = []

    def pol(goal, history, box):
        seen.append(list(history))
        return "let me think..."
    traj = loop.run_agent("1+1", pol, CALC, max_steps=3)
    assert traj.status == "budget_exhausted" and len(traj.steps) == 3 and traj.answer is None
    assert all(s.error_kind == "malformed" for s in traj.steps)
    assert "no JSON" in seen[1][0][1], "the model must read why its output was rejected"
    assert evaluate.failure_kind(traj, "2") == "malformed"


def _box(fn, timeout=0.5):
    return tools.Toolbox.of(tools.Tool("flaky", "a bad tool", tools.schema({}), fn, timeout=timeout))


@pytest.mark.parametrize("fn,kind,words", [
    (lambda: 1 / 0, "tool_error", "ZeroDivisionError"),
    (lambda: {"not": "text"}, "bad_result", "returned dict"),
    (lambda: time.sleep(30), "timeout", "did not answer within"),
    (lambda: None, "bad_result", "returned NoneType")])
def test_bad_tools_give_an_observation_and_the_loop_goes_on(fn, kind, words):
    pol = policies.ScriptedPolicy(['{"tool":"flaky","arguments":{}}', '{"answer":"done"}'])
    t0 = time.time()
    traj = loop.run_agent("x", pol, _box(fn))
    assert time.time() - t0 < 5
    assert traj.steps[0].error_kind == kind and words in traj.steps[0].observation
    assert traj.status == "answered" and traj.answer == "done"


def test_long_tool_output_is_cut():
    obs, err = _box(lambda: "x" * 10_000).execute("flaky", {})
    assert err is None and len(obs) < 2100 and "cut" in obs


# ---------------------------------------------------------------- the Python sandbox
def test_sandbox_runs_code_and_writes_inside_its_folder():
    r = pysandbox.run_python("import json\nopen('out.txt','w').write('hi')\nprint(json.dumps([open('out.txt').read()]))")
    assert r.returncode == 0 and r.stdout.strip() == '["hi"]', r.stderr


@pytest.mark.parametrize("code", ["print(open('/etc/passwd').read())", "print(open('../secret.txt').read())",
                                  "import os; os.symlink('/etc/passwd', 'p'); print(open('p').read())",
                                  "import os; print(os.listdir('/'))"])
def test_sandbox_cannot_read_outside(code, tmp_path):
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    work = tmp_path / "work"
    work.mkdir()
    r = pysandbox.run_python(code, workdir=str(work))
    assert r.returncode != 0 and "root:" not in r.stdout and "TOP SECRET" not in r.stdout
    assert "PermissionError" in r.stderr


@pytest.mark.parametrize("namespace", [True, False], ids=["netns-if-available", "audit-hook-only"])
def test_sandbox_gets_no_network_connection(namespace):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(3)
    port = srv.getsockname()[1]
    accepted = []

    def accept():
        try:
            accepted.append(srv.accept())
        except OSError:
            pass
    t = threading.Thread(target=accept)
    t.start()
    r = pysandbox.run_python(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')",
                             network_namespace=namespace)
    t.join()
    srv.close()
    assert "connected" not in r.stdout and r.returncode != 0
    assert accepted == [], "the server saw a connection from the sandbox"


def test_sandbox_time_limit_stops_busy_and_sleeping_code():
    for code in ("while True: pass", "import time; time.sleep(60)"):
        t0 = time.time()
        r = pysandbox.run_python(code, timeout=1.0)
        assert r.timed_out and time.time() - t0 < 5 and "time limit" in r.observation()


def test_sandbox_file_size_limit():
    r = pysandbox.run_python("open('big.bin', 'wb').write(b'x' * (64 << 20))\nprint('written')", file_mb=16)
    assert "written" not in r.stdout and r.returncode != 0


def test_sandbox_memory_limit():
    r = pysandbox.run_python("x = bytearray(2 * 1024**3)\nprint('allocated')", memory_mb=512)
    assert "allocated" not in r.stdout and "MemoryError" in r.stderr


# copies a compiled extension of the standard library into the working folder and loads it from there
NATIVE_FROM_WORKDIR = """
import _bisect, importlib.machinery as m, importlib.util as u, _imp
open('mine.txt', 'wb').write(open(_bisect.__file__, 'rb').read())
spec = u.spec_from_file_location('_bisect', 'mine.txt', loader=m.ExtensionFileLoader('_bisect', 'mine.txt'))
_imp.create_dynamic(spec)
"""


@pytest.mark.parametrize("code", ["import os; os.fork()", "import subprocess; subprocess.run(['true'])",
                                  "import os; os.system('true')", "import ctypes",
                                  # starts a program through C, below the audit events: refused at import
                                  "import _posixsubprocess", NATIVE_FROM_WORKDIR])
def test_sandbox_refuses_processes_and_ctypes(code):
    r = pysandbox.run_python(code)
    assert r.returncode != 0 and "not allowed" in r.stderr


# rebinds the hook's own helper in the child's __main__: every open is then "inside"
HOOK_OFF = "import sys\nsys.modules['__main__'].inside = lambda path: True\n"


def test_the_audit_hook_is_a_tripwire_not_a_sandbox(tmp_path):
    """PEP 578 hooks are not a sandbox: the child's Python code switches the hook off and reads a
    file outside its folder that the hook refuses otherwise (the notes and the lab say so)."""
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    work = tmp_path / "work"
    work.mkdir()
    read = "print(open('../secret.txt').read())"
    refused = pysandbox.run_python(read, workdir=str(work))
    assert "PermissionError" in refused.stderr and "TOP SECRET" not in refused.stdout
    evaded = pysandbox.run_python(HOOK_OFF + read, workdir=str(work))
    assert evaded.returncode == 0 and "TOP SECRET" in evaded.stdout, evaded.stderr


def test_the_process_limits_hold_with_the_hook_switched_off():
    """The boundary is the child process: its resource limits and wall clock do not depend on the
    hook (memory, file size, CPU and sleeping time, here with the hook disabled first)."""
    r = pysandbox.run_python(HOOK_OFF + "x = bytearray(2 * 1024**3)\nprint('allocated')", memory_mb=512)
    assert "allocated" not in r.stdout and "MemoryError" in r.stderr
    r = pysandbox.run_python(HOOK_OFF + "open('big.bin', 'wb').write(b'x' * (64 << 20))\nprint('written')", file_mb=16)
    assert "written" not in r.stdout and r.returncode != 0
    for code in ("while True: pass", "import time; time.sleep(60)"):
        t0 = time.time()
        r = pysandbox.run_python(HOOK_OFF + code, timeout=1.0)
        assert r.timed_out and time.time() - t0 < 5


def test_python_tool_in_the_loop():
    box = tools.Toolbox.of(pysandbox.python_tool(timeout=1.0))
    pol = policies.ScriptedPolicy([tasks.call_json("python", code="while True: pass"),
                                   tasks.call_json("python", code="print(sum(range(10)))"),
                                   lambda g, h: tasks.answer_json(h[-1][1].strip())])
    traj = loop.run_agent("sum of 0..9", pol, box)
    assert "time limit" in traj.steps[0].observation and traj.answer == "45"


# ---------------------------------------------------------------- TF-IDF and retrieval
def test_tfidf_matches_the_formula():
    docs = ["the cat sat", "the dog sat", "a cat and a cat"]
    idx = retrieval.build_index(docs)
    n = 3
    df = {"cat": 2, "the": 2, "a": 1}
    row = idx.matrix[2]
    raw = {t: c * (torch.log(torch.tensor((1 + n) / (1 + df[t]))) + 1) for t, c in (("cat", 2), ("a", 2))}
    raw["and"] = torch.log(torch.tensor((1 + n) / 2)) + 1
    norm = torch.sqrt(sum(v ** 2 for v in raw.values()))
    for t, v in raw.items():
        assert abs(float(row[idx.vocab[t]]) - float(v / norm)) < 1e-6
    assert abs(float(idx.matrix.norm(dim=1)[0]) - 1) < 1e-6
    assert idx.search("dog", k=5)[0][0] == 1 and len(idx.search("cat", k=5)) == 3
    assert [i for i, _ in idx.search("a cat", k=2)] == [2, 0]
    assert idx.vectorize(["zebra"]).abs().sum() == 0


def test_search_tool_finds_course_notes():
    obs = retrieval.search_tool().fn(query="KV cache eviction heavy hitters")
    assert "04_kv_cache" in obs.splitlines()[0]
    obs = retrieval.search_tool().fn(query="minhash near duplicate licence")
    assert "05_dataset_cards" in obs.splitlines()[0]


def test_memory_reads_back_the_nearest_note():
    m = retrieval.Memory()
    m.write("task 347*29: wrong, use the calculator")
    m.write("task 12+5: fine")
    assert m.read("347*29")[0][0].startswith("task 347*29")
    assert retrieval.Memory().read("anything") == []


# ---------------------------------------------------------------- the fused similarity + top-k kernel
@pytest.mark.parametrize("m,n,d,k", [(1, 1, 8, 1), (1, 1, 8, 4), (3, 200, 17, 5), (2, 64, 64, 10), (4, 130, 33, 1),
                                     (2, 7, 5, 20)])
def test_similarity_topk_matches_torch(m, n, d, k):
    q, docs = checks.randn(m, d, seed=n), checks.randn(n, d, seed=n + 1)
    s, i = st.similarity_topk(q, docs, k)
    rs, ri = st.torch_similarity_topk(q, docs, k)
    assert s.shape == (m, min(k, n)) and i.dtype == torch.int64
    checks.compare(s, rs, atol=1e-4, rtol=1e-4)
    checks.check_equal(i, ri)


@pytest.mark.parametrize("block_n,programs", [(16, 1), (16, 3), (16, 100)])
def test_similarity_topk_ties_go_to_the_lower_index(block_n, programs):
    docs = torch.zeros(150, 4)
    docs[::3, 0] = 1.0      # 50 equal best scores spread over tiles and splits
    s, i = st.similarity_topk(torch.tensor([[1.0, 0, 0, 0]]), docs, 6, block_n=block_n, programs=programs)
    assert i.tolist() == [[0, 3, 6, 9, 12, 15]] and s.tolist() == [[1.0] * 6]


@pytest.mark.parametrize("m,n,programs", [(70, 300, 2), (3, 1000, 5), (17, 129, 64)])
def test_similarity_topk_query_tiles_and_splits(m, n, programs):
    """Several query tiles, several document tiles per split, splits of unequal fill."""
    q, docs = checks.randn(m, 24, seed=m), checks.randn(n, 24, seed=n)
    assert st.split_documents(m, n, {**st.block_config(m, n, 24), "BLOCK_N": 16, "programs": programs})[0] >= 1
    s, i = st.similarity_topk(q, docs, 7, block_n=16, programs=programs)
    rs, ri = st.torch_similarity_topk(q, docs, 7)
    checks.compare(s, rs, atol=1e-4, rtol=1e-4)
    checks.check_equal(i, ri)


# ---------------------------------------------------------------- the tiny tool model
def test_tool_model_extends_the_vocabulary(tool_model):
    model, tok = tool_model
    from genfast.tinylm import load
    _, base = load("shakespeare")
    assert tok.vocab.startswith(base.vocab) and all(c in tok.stoi for c in '{}_+*/<=')
    assert model.head.weight.data_ptr() == model.tok_emb.weight.data_ptr()


def test_tool_model_uses_the_calculator_and_beats_guessing(tool_model):
    model, tok = tool_model
    held = tasks.heldout_tasks(30)
    with_t = evaluate.summarize(evaluate.run_tasks(policies.TinyModelPolicy(model, tok), held, tools=True))
    without = evaluate.summarize(evaluate.run_tasks(policies.TinyModelPolicy(model, tok), held, tools=False))
    assert with_t["success_rate"] >= 0.8, with_t
    assert without["success_rate"] <= 0.3, without
    assert 1.9 <= with_t["avg_steps"] <= 2.5 and without["avg_steps"] == 1.0


def test_the_reflection_result_is_fixed_by_construction(tool_model):
    """The reflection experiment demonstrates a mechanism; it measures nothing new. The loop shows
    the calculator exactly when the retrieved note says "use the calculator": every rich note does,
    no scalar note can. So the scalar retry repeats the first attempt exactly, and the rich retry
    is the model's run with its calculator, trajectory for trajectory (notes and lab text say so)."""
    model, tok = tool_model
    held = tasks.heldout_tasks(20)
    rich = evaluate.reflection_experiment(model, tok, held, rich=True)
    scalar = evaluate.reflection_experiment(model, tok, held, rich=False)
    assert all("use the calculator" in note for note in rich["memory"].notes)
    assert not any("use the calculator" in note for note in scalar["memory"].notes)
    outcome = lambda results: [(t.status, t.answer) for t in results["trajectories"]]
    assert outcome(scalar["second_results"]) == outcome(scalar["first_results"])
    with_tools = evaluate.evaluate_agent(policies.TinyModelPolicy(model, tok), held, tools.Toolbox.of(tools.calculator_tool()))
    assert outcome(rich["second_results"]) == outcome(with_tools)
    assert rich["second"] == with_tools["success_rate"] and scalar["second"] == scalar["first"] == rich["first"]
    # the figures the notes quote (20 held-out tasks)
    assert (rich["first"], rich["second"], scalar["second"]) == (0.0, 1.0, 0.0)


def test_heldout_goals_are_not_in_training():
    import random
    from kernels.agents import train
    held = {t.goal for t in tasks.heldout_tasks(200)}
    model_tok = load_tool_model()
    x, _ = train.make_batch(random.Random(1), model_tok[1], 128, held)
    goals = {model_tok[1].decode(row).split("\n")[0][3:] for row in x}
    assert not goals & held


# ---------------------------------------------------------------- the OpenAI-compatible server
@pytest.fixture(scope="module")
def endpoint(tool_model):
    srv, url = server.serve_in_thread(model=tool_model[0], tok=tool_model[1])
    yield url
    srv.shutdown()
    srv.server_close()


def test_server_lists_models_and_rejects_bad_requests(endpoint):
    assert policies.OpenAIPolicy(endpoint).models() == [server.MODEL_ID]
    req = urllib.request.Request(endpoint + "/chat/completions", data=b"not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 400 and "bad request" in json.loads(e.value.read())["error"]["message"]


def test_openai_policy_runs_the_loop_over_http(endpoint, tool_model):
    held = tasks.heldout_tasks(8)
    http = evaluate.run_tasks(policies.OpenAIPolicy(endpoint), held, tools=True)
    local = evaluate.run_tasks(policies.TinyModelPolicy(*tool_model), held, tools=True)
    assert [r.trajectory.answer for r in http] == [r.trajectory.answer for r in local]
    assert sum(r.success for r in http) >= 6
    assert all(r.trajectory.steps[0].action.tool == "calculator" for r in http)


def test_openai_policy_reports_a_dead_endpoint():
    out = policies.OpenAIPolicy("http://127.0.0.1:9/v1", timeout=2)("1+1", [], CALC)
    assert "endpoint error" in out
    traj = loop.run_agent("1+1", policies.OpenAIPolicy("http://127.0.0.1:9/v1", timeout=2), CALC, max_steps=2)
    assert traj.status == "budget_exhausted" and traj.steps[0].error_kind == "malformed"


# ---------------------------------------------------------------- decoding without lab 04's cache
def test_uncached_decoding_gives_the_cached_greedy_lines(tool_model):
    """genfast decodes the tool model without a KV cache (lab 04's answer); the lines must be the
    ones the cached decoding of kernels.kv_press gave (greedy, same window rule)."""
    from kernels.kv_press import KVCache, forward_cached
    model, tok = tool_model

    @torch.no_grad()
    def cached_line(prompt, max_new=72):
        block = model.config.block_size
        ids = torch.tensor([tok.stoi.get(ch, tok.stoi["?"]) for ch in prompt])[-(block - 1):]
        cache = KVCache(len(model.blocks))
        logits = forward_cached(model, ids[None], cache)[0, -1]
        out = []
        for _ in range(max_new):
            nxt = int(logits.argmax())
            if nxt == tok.stoi["\n"]:
                break
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([nxt])])
            if cache.seen >= block:
                ids, cache = ids[-(block - 1):], KVCache(len(model.blocks))
                logits = forward_cached(model, ids[None], cache)[0, -1]
            else:
                logits = forward_cached(model, torch.tensor([[nxt]]), cache)[0, -1]
        return tok.decode(out)

    prompts = [tasks.render(t.goal, [], tools=True) for t in tasks.heldout_tasks(6)]
    prompts += [tasks.render(t.goal, [(tasks.call_json("calculator", expression=t.goal), t.answer)], tools=True)
                for t in tasks.heldout_tasks(6)]
    prompts += [tasks.render(t.goal, [], tools=False) for t in tasks.heldout_tasks(6)]
    prompts.append("Q: " + "1234567890+" * 12)     # past the window: the restart rule
    assert [generate_line(model, tok, p) for p in prompts] == [cached_line(p) for p in prompts]


def test_the_policy_remembers_lines_per_model(tool_model):
    model, tok = tool_model
    a, b = policies.TinyModelPolicy(model, tok), policies.TinyModelPolicy(model, tok, remember=False)
    box = tools.Toolbox.of(tools.calculator_tool())
    assert a("512*38", [], box) == b("512*38", [], box)
    assert a.lines is policies.TinyModelPolicy(model, tok).lines and b.lines is None


# ---------------------------------------------------------------- the learner package and the lab's checks
def test_the_environment_moved_to_genfast_and_the_answers_did_not():
    from genfast.agents import evaluate as g_evaluate, loop as g_loop, retrieval as g_retrieval, tools as g_tools
    for module, graded in ((g_tools, "calculate"), (g_loop, "parse_action"), (g_loop, "run_agent"),
                           (g_loop, "check_arguments"), (g_retrieval, "tfidf_vectors"), (g_retrieval, "topk_scores"),
                           (g_evaluate, "run_tasks"), (g_evaluate, "summarize")):
        assert not hasattr(module, graded), f"{module.__name__}.{graded} is a graded answer"
    assert loop.Action is g_loop.Action and tools.Toolbox is g_tools.Toolbox
    assert st.block_config is topk_launch.block_config and st.merge_candidates is topk_launch.merge_candidates


def test_shipped_course_notes_match_the_course():
    from genfast.agents import retrieval as g_retrieval
    assert g_retrieval.course_passages() == g_retrieval.split_notes(retrieval.COURSE_DIR), \
        "rebuild with `python -m kernels.agents.retrieval`"


def test_task_calculator_answers_the_tasks_like_the_calculator():
    stand_in, calc = tools.Toolbox.of(lab.task_calculator()), tools.Toolbox.of(tools.calculator_tool())
    for expr in ["347*29", "905-718", "12+5", "-5--3", "7", " 64 * 87 "]:
        assert stand_in.execute("calculator", {"expression": expr}) == calc.execute("calculator", {"expression": expr})
    for expr in ["2**3", "(1+2)", "7/2", "x"]:
        obs, kind = stand_in.execute("calculator", {"expression": expr})
        assert kind == "tool_error" and "only the tasks' arithmetic" in obs


@pytest.mark.parametrize("with_reference", [False, True], ids=["fixtures", "reference"])
def test_lab_checks_pass_the_references(with_reference):
    lab.check_calculator(tools.calculate)
    lab.check_parse_action(loop.parse_action)
    lab.check_agent_loop(loop.run_agent, calculator=tools.calculator_tool() if with_reference else None)
    lab.check_tfidf(retrieval.tfidf_vectors, retrieval.topk_scores, reference=retrieval if with_reference else None)
    lab.check_topk(st.similarity_topk, reference=st.torch_similarity_topk if with_reference else None)


def _unbounded_calculate(expression, bound_length=False, bound_digits=False, refuse_complex=False):
    """A calculator correct by the old spec (a whitelist over the tree, a bound on exponents), with
    the new bounds switched on one by one."""
    import ast
    import operator
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
    if bound_length and (not isinstance(expression, str) or len(expression) > tools.MAX_EXPRESSION):
        raise tools.ToolError("expression must be a string, not longer than 200 characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise tools.ToolError(f"not a valid expression: {e.msg}") from None

    def ev(node):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(b) > tools.MAX_EXPONENT:
                raise tools.ToolError(f"exponent {b} too large")
            try:
                value = ops[type(node.op)](a, b)
            except ZeroDivisionError:
                raise tools.ToolError("division by zero") from None
            except OverflowError:
                raise tools.ToolError("result too large") from None
            if bound_digits and isinstance(value, int) and value.bit_length() > tools.MAX_RESULT_DIGITS * 3.33:
                raise tools.ToolError("result has more than 400 digits")
            if refuse_complex and isinstance(value, complex):
                raise tools.ToolError("complex result")
            return value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return -ev(node.operand) if isinstance(node.op, ast.USub) else ev(node.operand)
        if isinstance(node, ast.Name):
            raise tools.ToolError(f"names are not allowed: {node.id!r}")
        if isinstance(node, ast.Call):
            raise tools.ToolError("function calls are not allowed")
        if isinstance(node, ast.Attribute):
            raise tools.ToolError("attribute access is not allowed")
        raise tools.ToolError(f"{type(node).__name__} is not allowed")
    return ev(tree.body)


@pytest.mark.parametrize("bounds, message", [
    ({}, r"calculate\('1\+1\+1.*returned 101: it must be refused \(longer than\)"),
    (dict(bound_length=True), r"calculate\('\(9\*\*64\)\*\*64'\) returned 3778.*\.\.\..*\(3909 characters\): it must be refused \(digits\)"),
    (dict(bound_length=True, bound_digits=True), r"calculate\('\(-8\)\*\*0.5'\) returned \(1.7.*\+2.82.*j\): it must be refused \(complex\)"),
])
def test_lab_checks_catch_a_calculator_without_the_size_bounds(bounds, message):
    """A calculate that is correct by a spec without the bounds can be abused (a 250,000-digit
    result, a parser fed any length, complex numbers); the check fails it with the case, the
    value (cut short) and the reason, and passes it once all bounds are in."""
    with pytest.raises(checks.CheckFailed, match=message):
        lab.check_calculator(lambda e: _unbounded_calculate(e, **bounds))
    lab.check_calculator(lambda e: _unbounded_calculate(e, bound_length=True, bound_digits=True, refuse_complex=True))


def test_lab_checks_catch_a_parser_that_skips_the_schema():
    def lax(text, toolbox):
        action = loop.parse_action(text, toolbox)
        return loop.Action("call", tool=action.tool, arguments=action.arguments) if action.tool else action
    with pytest.raises(checks.CheckFailed, match="parse_action"):
        lab.check_parse_action(lax)


def test_lab_evaluation_check_passes_the_reference(tool_model):
    policy = policies.TinyModelPolicy(*tool_model)
    with_tools, without = lab.check_evaluation(evaluate.evaluate_agent, policy)
    assert with_tools["success_rate"] >= 0.8 and len(without["trajectories"]) == lab.HELD_OUT
    lab.check_evaluation(evaluate.evaluate_agent, policy, calculator=tools.calculator_tool(), reference=evaluate)
