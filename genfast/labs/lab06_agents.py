"""Checks for lab06_agents: the calculator, parse_action (with its argument check), the agent loop,
TF-IDF and top-k, the fused similarity + top-k kernel, and the evaluation.

The calculator, parser and loop checks compare with fixed expectations written here. The
specs of TF-IDF, top-k and the evaluation would be the learner's own functions, so the visible
checks compare with expected outputs shipped in genfast/fixtures/lab06_agents.pt (computed by the
instructor's references on the cases below); the grader passes the references in as `reference`
and checks other cases too. The loop and evaluation checks run the learner's functions with
`task_calculator()`, a stand-in calculator tool that knows only the tasks' arithmetic, so that they
do not depend on the learner's calculate (the grader gives them the reference calculator).
"""
import re
import time

import torch

from genfast import bench, checks, fixtures, runtime
from genfast.compile_info import KernelSignature
from genfast.agents import policies, retrieval, tasks, tools
from genfast.agents.loop import Action, Trajectory

LAB = "lab06_agents"


def _shipped(key: str):
    return fixtures.load(LAB, key)


def _not_implemented(name: str) -> checks.CheckFailed:
    return checks.CheckFailed(f"{name} is not implemented yet: replace `raise NotImplementedError()` "
                              f"under YOUR CODE HERE with your code.")


# a calculator for the checks ------------------------------------------------------------
_TASK_ARITHMETIC = re.compile(r"^\s*(-?\d+)\s*(?:([-+*])\s*(-?\d+)\s*)?$")


def _task_arithmetic(expression):
    match = _TASK_ARITHMETIC.match(expression) if isinstance(expression, str) else None
    if match is None:
        raise tools.ToolError(f"the checks' calculator knows only the tasks' arithmetic (an integer, or two "
                              f"integers with one of + - *), not {expression!r}")
    a, op, b = match.groups()
    a, b = int(a), int(b or 0)
    return {"+": a + b, "-": a - b, "*": a * b, None: a}[op]


def task_calculator() -> tools.Tool:
    """A calculator tool (same name and schema as `tools.calculator_tool`) that knows only the
    tasks' arithmetic: 'a op b' with integers and one of + - *. The loop and evaluation checks use
    it so that they do not depend on your calculate."""
    return tools.calculator_tool(_task_arithmetic)


# 1. the calculator ------------------------------------------------------------------------
CALC_HINT = ("refuse a non-string or an expression longer than tools.MAX_EXPRESSION first; walk the tree: Constant "
             "(int/float), BinOp (check Pow's exponent; after each operation refuse a complex result, an int of more "
             "than tools.MAX_RESULT_DIGITS digits and OverflowError), UnaryOp; raise tools.ToolError otherwise")
CALC_VALUES = [("347*29", 10063), ("2+3*4", 14), ("(2+3)*4", 20), ("7/2", 3.5), ("-7//2", -4), ("2**10", 1024),
               ("17%5", 2), ("-(3-5)", 2), ("(10**30)**10", 10**300)]
# the bounds that keep a correct-by-spec calculator from being abused: a 201-character expression,
# an integer that grows past MAX_RESULT_DIGITS (each exponent is within MAX_EXPONENT), a complex
# result (a negative number to a fractional power), a float pow that overflows, a non-string
CALC_REFUSED = [("__import__('os').system('ls')", "not allowed"), ("x+1", "names are not allowed"),
                ("abs(-3)", "function calls are not allowed"), ("2**1000", "exponent"), ("1/0", "division by zero"),
                ("1+", "not a valid expression"), ("1+" * 100 + "1", "longer than"), ("(9**64)**64", "digits"),
                ("(-8)**0.5", "complex"), ("1e300**2", "too large"), (12345, "string")]


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:40]}...{text[-20:]} ({len(text)} characters)"


def try_calc(calculate, expr):
    """('value', v), ('refused', message) or ('crash', description) for the learner's calculate."""
    try:
        return "value", calculate(expr)
    except tools.ToolError as e:
        return "refused", str(e)
    except NotImplementedError:
        raise _not_implemented("calculate") from None
    except Exception as e:
        return "crash", f"{type(e).__name__}: {e}"


def check_calculator(calculate, values=CALC_VALUES, refused=CALC_REFUSED, hint=CALC_HINT):
    """calculate(expr) must give each value of `values` (the same type too) and refuse each
    expression of `refused` with a tools.ToolError whose message holds the words given."""
    __tracebackhide__ = True
    for expr, want in values:
        kind, got = try_calc(calculate, expr)
        if kind != "value" or got != want or type(got) is not type(want):
            raise checks.CheckFailed(f"calculate({_short(expr)}) gave {kind} {_short(got)}, expected the value "
                                     f"{_short(want)}\n  hint: {hint}")
    print(f"  ok  {len(values)} expressions evaluated like Python would")
    for expr, words in refused:
        kind, got = try_calc(calculate, expr)
        if kind == "value":
            raise checks.CheckFailed(f"calculate({_short(expr)}) returned {_short(got)}: it must be refused "
                                     f"({words})\n  hint: {hint}")
        if kind == "crash":
            raise checks.CheckFailed(f"calculate({_short(expr)}) raised {got}; expected tools.ToolError mentioning "
                                     f"{words!r}\n  hint: {hint}")
        if words not in got:
            raise checks.CheckFailed(f"calculate({_short(expr)}) refused with {got!r}; the message should contain "
                                     f"{words!r}\n  hint: {hint}")
    print(f"  ok  {len(refused)} expressions refused with a clear message")


# 2. parse_action and check_arguments --------------------------------------------------
PARSE_HINT = ("find '{', raw_decode from there; answer if 'answer' and no 'tool'; a call needs a known tool, a dict of "
              "arguments and check_arguments(args, toolbox.tools[name].parameters) is None")
PARSE_CASES = [
    ('Let me compute. {"tool":"calculator","arguments":{"expression":"347*29"}}', "call",
     {"tool": "calculator", "arguments": {"expression": "347*29"}, "thought": "Let me compute."}),
    ('{"answer": "10063"}', "answer", {"answer": "10063"}),
    ('{"answer": 42} and some trailing words', "answer", {"answer": "42"}),
    ("I do not know.", "malformed", {}), ('{"tool": "calculator", "arguments": {"expression": ', "malformed", {}),
    ('{"tool":"weather","arguments":{"city":"Paris"}}', "malformed", {}),
    ('{"tool":"calculator","arguments":{}}', "malformed", {}),
    ('{"tool":"calculator","arguments":{"expression":347}}', "malformed", {}),
    ('{"tool":"probe","arguments":{"n":3,"x":1.5,"s":"a","flag":true}}', "call", {"tool": "probe"}),
    ('{"tool":"probe","arguments":{"n":1.5}}', "malformed", {}),
]


def parse_toolbox() -> tools.Toolbox:
    """The calculator and a 'probe' tool with one argument of each JSON type (n required)."""
    probe = tools.Tool("probe", "a test tool", {"type": "object", "required": ["n"], "properties": {
        "n": {"type": "integer"}, "x": {"type": "number"}, "s": {"type": "string"}, "flag": {"type": "boolean"}}},
        lambda **kw: "ok")
    return tools.Toolbox.of(task_calculator(), probe)


def check_parse_action(parse_action, cases=PARSE_CASES, hint=PARSE_HINT):
    """parse_action(text, toolbox) must return an Action of the kind given, with the attributes given;
    a malformed one must say why (.error)."""
    __tracebackhide__ = True
    box = parse_toolbox()
    for text, kind, extra in cases:
        got = checks.call(parse_action, text, box, name="parse_action", case=repr(text), hint=hint)
        if not isinstance(got, Action) or got.kind != kind or any(getattr(got, k) != v for k, v in extra.items()):
            raise checks.CheckFailed(f"parse_action({text!r}) returned {got!r}\n  expected kind {kind!r} with "
                                     f"{extra}\n  hint: {hint}")
        if kind == "malformed" and not got.error:
            raise checks.CheckFailed(f"parse_action({text!r}) is malformed but gives no .error for the model to read")
    print(f"  ok  {len(cases)} outputs parsed")


# 3. the loop --------------------------------------------------------------------------------
LOOP_HINT = ("one policy call per step; record every step; malformed -> 'error: ...' observation; stop at an "
             "answer or max_steps")


def check_traj(traj, status, answer, n_steps, kinds, what, hint=LOOP_HINT):
    """traj must be a Trajectory with this status, answer, number of steps and error kinds."""
    __tracebackhide__ = True
    if not isinstance(traj, Trajectory):
        raise checks.CheckFailed(f"{what}: run_agent returned {type(traj).__name__}, expected a loop.Trajectory")
    got = (traj.status, traj.answer, len(traj.steps), [s.error_kind for s in traj.steps])
    if got != (status, answer, n_steps, kinds):
        raise checks.CheckFailed(f"{what}: (status, answer, steps, error kinds) = {got}\n  expected "
                                 f"{(status, answer, n_steps, kinds)}\n  hint: {hint}")
    print(f"  ok  {what}")


def check_agent_loop(run_agent, calculator=None, hint=LOOP_HINT):
    """run_agent with scripted policies: a call then an answer, a model that never emits JSON, and
    tools that raise, return a dict, or hang. `calculator`: the calculator tool (task_calculator())."""
    __tracebackhide__ = True
    calc_box = tools.Toolbox.of(calculator or task_calculator())
    scripted = policies.ScriptedPolicy([tasks.call_json("calculator", expression="347*29"),
                                        lambda goal, hist: tasks.answer_json(hist[-1][1])])
    traj = checks.call(run_agent, "347*29", scripted, calc_box, name="run_agent", hint=hint)
    check_traj(traj, "answered", "10063", 2, [None, None], "call the calculator, then answer with its result", hint)
    traj = checks.call(run_agent, "1+1", policies.ScriptedPolicy(["hmm"]), calc_box, 3, name="run_agent", hint=hint)
    check_traj(traj, "budget_exhausted", None, 3, ["malformed"] * 3, "a model that never emits JSON, 3 steps", hint)
    if not traj.steps[0].observation.startswith("error:"):
        raise checks.CheckFailed(f"a malformed step's observation should start with 'error:'; got {traj.steps[0].observation!r}")

    bad_tools = tools.Toolbox.of(
        tools.Tool("raises", "", tools.schema({}), lambda: 1 / 0),
        tools.Tool("garbage", "", tools.schema({}), lambda: {"not": "text"}),
        tools.Tool("hangs", "", tools.schema({}), lambda: time.sleep(30), timeout=0.3))
    scripted = policies.ScriptedPolicy(['{"tool":"raises","arguments":{}}', '{"tool":"garbage","arguments":{}}',
                                        '{"tool":"hangs","arguments":{}}', '{"answer":"survived"}'])
    traj = checks.call(run_agent, "test", scripted, bad_tools, 5, name="run_agent", hint=hint)
    check_traj(traj, "answered", "survived", 4, ["tool_error", "bad_result", "timeout", None],
               "a tool that raises, one that returns a dict, one that hangs: the loop goes on", hint)
    for s in traj.steps[:3]:
        print(f"      {s.action.tool:<8} -> {s.observation}")


# 4. TF-IDF and top-k ------------------------------------------------------------------------
TFIDF_HINT = "count, multiply by idf, divide each row by its norm (clamp the norm away from 0 for an empty row)"
TOPK_HINT = "sort descending with stable=True (ties keep the lower index first), keep the first min(k, N)"
SMALL_DOCS = ["the cat sat on the mat", "the dog sat", "a cat and a cat", "zebra"]


def topk_inputs():
    """(name, queries, docs, k) of the visible top_k cases."""
    return [("q3x8 d20 k5", checks.randn(3, 8, seed=1), checks.randn(20, 8, seed=2), 5),
            ("q2x4 d3 k10", checks.randn(2, 4), checks.randn(3, 4, seed=3), 10)]


def check_tfidf(tfidf_matrix, top_k, reference=None):
    """tfidf_matrix on a small collection and on a text with no known term; top_k on two random
    cases and three tied documents. `reference`: the module with the reference tfidf_vectors and
    topk_scores (else their outputs shipped for these cases)."""
    __tracebackhide__ = True
    toks = [retrieval.tokenize(d) for d in SMALL_DOCS]
    vocab, idf = retrieval.fit_idf(toks)
    got = checks.call(tfidf_matrix, toks, vocab, idf, name="tfidf_matrix", hint=TFIDF_HINT)
    want = reference.tfidf_vectors(toks, vocab, idf) if reference else _shipped("tfidf small")
    checks.compare(got, want, atol=1e-6, what="TF-IDF matrix", hint=TFIDF_HINT)
    got = checks.call(tfidf_matrix, [["unknown", "words"]], vocab, idf, name="tfidf_matrix", hint=TFIDF_HINT)
    checks.compare(got, torch.zeros(1, len(vocab)), atol=0, what="a text with no known term (must be a zero row)",
                   hint=TFIDF_HINT)
    for name, q, d, k in topk_inputs():
        s, i = checks.call(top_k, q, d, k, name="top_k", hint=TOPK_HINT)
        rs, ri = reference.topk_scores(q, d, k) if reference else (_shipped(f"top_k {name}")["scores"],
                                                                    _shipped(f"top_k {name}")["indices"])
        checks.compare(s, rs, what=f"top-{k} scores of {d.shape[0]} documents", hint=TOPK_HINT)
        checks.check_equal(i, ri, what=f"top-{k} indices of {d.shape[0]} documents", hint=TOPK_HINT)
    tie_docs = torch.tensor([[0.0, 1], [1, 0], [0, 1], [1, 0], [1, 0]])
    check_top_k_indices(top_k, torch.tensor([[1.0, 0]]), tie_docs, 2, [[1, 3]], "indices with three tied documents")
    print("tfidf_matrix and top_k agree with the reference")


def check_tfidf_rows(tfidf_matrix, texts, reference_rows, what):
    """tfidf_matrix over `texts` (tokenised, with their own vocabulary and idf) against `reference_rows`."""
    __tracebackhide__ = True
    toks = [retrieval.tokenize(t) for t in texts]
    vocab, idf = retrieval.fit_idf(toks)
    got = checks.call(tfidf_matrix, toks, vocab, idf, name="tfidf_matrix")
    checks.compare(got, reference_rows(toks, vocab, idf), atol=1e-6, what=what)


def check_top_k_indices(top_k, queries, docs, k, expected, what, hint=TOPK_HINT):
    __tracebackhide__ = True
    s, i = checks.call(top_k, queries, docs, k, name="top_k", hint=hint)
    checks.check_equal(i, torch.tensor(expected), what=what, hint=hint)


# 5. the fused similarity + top-k kernel ----------------------------------------------------
TOPK_KERNEL_HINT = ("mask documents at or past `end` to -inf; each round takes the max over the tile AND the running "
                    "list, the LOWEST index holding it in either, and knocks that entry out of both")
KERNEL_SHAPES = [(1, 1, 8, 1), (1, 1, 8, 3), (3, 200, 17, 5), (2, 64, 64, 10), (2, 7, 5, 20)]


def kernel_case(m, n, d, k) -> str:
    return f"queries={m} docs={n} dim={d} k={k}"


def kernel_inputs(m, n, d, k) -> dict:
    return dict(q=checks.randn(m, d, seed=n), docs=checks.randn(n, d, seed=n + 1), k=k)


def check_topk(my_similarity_topk, shapes=None, block_n=None, programs=None, reference=None, hint=TOPK_KERNEL_HINT):
    """(scores, indices) of my_similarity_topk(q, docs, k) for each (queries, docs, dim, k) of
    `shapes` against `reference(q, docs, k)` (else the outputs shipped for the lab's shapes);
    with shapes=None, the lab's shapes and 50 tied documents spread over blocks and splits."""
    __tracebackhide__ = True
    print("precision: fp32 documents with tl.dot(..., input_precision=PRECISION), \"ieee\" for fp32 (the given "
          "launcher passes it: exact fp32 products on a GPU too, not TF32, so near-ties rank as in torch); "
          "scores checked to atol=1e-4, rtol=1e-4, indices exactly")
    for m, n, d, k in shapes or KERNEL_SHAPES:
        case, args = kernel_case(m, n, d, k), kernel_inputs(m, n, d, k)
        s, i = checks.call(my_similarity_topk, **args, block_n=block_n, programs=programs, name="topk_kernel",
                           case=case, hint=hint)
        if reference is not None:
            rs, ri = reference(**args)
        else:
            want = _shipped(f"similarity_topk {case}")
            rs, ri = want["scores"], want["indices"]
        checks.compare(s, rs, atol=1e-4, rtol=1e-4, what=f"top-k scores ({case})", hint=hint)
        checks.check_equal(i, ri, what=f"top-k indices ({case})", hint=hint)
        print(f"  ok  {case}")
    if shapes is None:
        tie = torch.zeros(150, 4, device=runtime.device())
        tie[::3, 0] = 1.0                                 # 50 equal best scores, spread over blocks
        s, i = checks.call(my_similarity_topk, torch.tensor([[1.0, 0, 0, 0]], device=runtime.device()), tie, 6, 16, 3,
                           name="topk_kernel")
        checks.check_equal(i.cpu(), torch.tensor([[0, 3, 6, 9, 12, 15]]), what="indices with 50 tied documents",
                           hint=hint)


def topk_kernel_signature(precision: str) -> KernelSignature:
    """The learner's top-k kernel for 32 queries of dimension 128 as compiled for a GPU (the
    launcher's block_config there, which also counts SMs: 32 x 64 x 64 tiles, 8 warps); fp32
    documents use input_precision="ieee" (exact scores), fp16 ones tensor cores."""
    dtype = "*fp16" if precision == "tf32" else "*fp32"
    name = "fp16" if precision == "tf32" else "fp32"
    return KernelSignature("topk_kernel", {"Q": dtype, "D": dtype, "OUT_S": "*fp32", "OUT_I": "*i32"},
                           lambda: [dict(BLOCK_M=32, BLOCK_N=64, BLOCK_D=64, K=8, K_PAD=8, PRECISION=precision,
                                         num_warps=8)],
                           reference=f"similarity_topk._topk_kernel {name} (reference)")


def speed_topk(my_similarity_topk, reference=None):
    if runtime.on_gpu():
        q = torch.randn(32, 128, device=runtime.device(), dtype=torch.float16)
        d = torch.randn(1 << 20, 128, device=runtime.device(), dtype=torch.float16)
    else:
        q = d = None
    return bench.speed_points(lambda: my_similarity_topk(q, d, 8)[0], reference and (lambda: reference(q, d, 8)[0]),
                              points=2, name="similarity top-8 (32 queries x 1M documents x 128, fp16)",
                              kernel=my_similarity_topk, signature=topk_kernel_signature("tf32"))


# 6. the evaluation ----------------------------------------------------------------------------
EVAL_HINT = "success = evaluate.same_answer; failures counted by evaluate.failure_kind; avg_steps = mean len(traj.steps)"
HELD_OUT = 20   # tasks.heldout_tasks(HELD_OUT): the evaluation's tasks


def check_evaluation(evaluate_agent, policy, calculator=None, reference=None, hint=EVAL_HINT):
    """evaluate_agent on 3 scripted tasks, then the tiny model on the held-out tasks with its
    calculator and without tools; with tools, its success rate and failures must equal the
    reference evaluation's (`reference`: the module with run_tasks and summarize, else the values
    shipped for these tasks). Returns the two evaluations (with tools, without)."""
    __tracebackhide__ = True
    toy_tasks = [tasks.Task("2+2", "4"), tasks.Task("3*3", "9"), tasks.Task("5-7", "-2")]
    answers = iter(['{"answer":"4"}', '{"answer":"10"}', 'no idea', 'no idea'])
    got = checks.call(evaluate_agent, lambda g, h, b: next(answers), toy_tasks, tools.Toolbox(), 2,
                      name="evaluate_agent", hint=hint)
    want = {"success_rate": 1 / 3, "avg_steps": 4 / 3, "failures": {"wrong_answer": 1, "malformed": 1}}
    if not isinstance(got, dict) or any(got.get(k) != v for k, v in want.items()):
        raise checks.CheckFailed(f"evaluate_agent on 3 scripted tasks returned "
                                 f"{({k: got.get(k) for k in want} if isinstance(got, dict) else got)}"
                                 f"\n  expected {want}\n  hint: {hint}")
    held = tasks.heldout_tasks(HELD_OUT)
    start = time.perf_counter()
    with_tools = checks.call(evaluate_agent, policy, held, tools.Toolbox.of(calculator or task_calculator()),
                             name="evaluate_agent")
    without_tools = checks.call(evaluate_agent, policy, held, tools.Toolbox(), name="evaluate_agent")
    if reference is not None:
        ref = reference.summarize(reference.run_tasks(policy, held, tools=True))
    else:
        ref = _shipped(f"evaluation heldout{HELD_OUT} with tools")
    if abs(with_tools["success_rate"] - ref["success_rate"]) > 1e-9 or with_tools["failures"] != ref["failures"]:
        raise checks.CheckFailed(f"with tools: your evaluation says {with_tools['success_rate']:.3f} {with_tools['failures']}, "
                                 f"the reference {ref['success_rate']:.3f} {ref['failures']}")
    for name, r in (("with calculator", with_tools), ("without tools", without_tools)):
        print(f"{name:<16} success {r['success_rate']:.0%}  avg steps {r['avg_steps']:.2f}  failures {r['failures']}")
    print(f"({2 * len(held)} episodes in {time.perf_counter() - start:.1f} s)")
    return with_tools, without_tools
