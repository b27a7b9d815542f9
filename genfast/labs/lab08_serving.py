"""Checks for lab08_serving: the block allocator and the paged KV cache, the paged decode-attention
kernel, the packing of prompts and the packed prefill kernel, the continuous-batching scheduler.

No check needs a shipped expected output: the cache is checked against what was written into it
(and against the contiguous keys and values of the course model, lab04's cache), the kernels against
the plain torch definitions of attention over each request's contiguous keys and values
(`genfast.serving`), and the scheduler against generating every request alone (greedy decoding:
every token must be identical). The grader passes the instructor's modules as `reference` and checks
more cases.
"""
from __future__ import annotations

import functools

import torch

from genfast import bench, checks, runtime, serving
from genfast.compile_info import KernelSignature
from genfast.serving import (Engine, OutOfBlocks, Request, contiguous_attention, random_paged_cache,
                             varlen_attention_spec)

LAB = "lab08_serving"


# 1. the block allocator and the paged cache -------------------------------------------------
CACHE_HINT = ("token n of a request lives in slot table[n // block_size] * block_size + n % block_size; a new block "
              "is taken only when the last one is full: blocks needed = ceil((length + n) / block_size) - len(table)")


def _fail(message, hint=""):
    raise checks.CheckFailed(message + (f"\n  hint: {hint}" if hint else ""))


def _write(cache, layer, slots, k, v):
    """What the engine does with the slots: write k, v (n, H, d) into the flattened pools."""
    H, d = k.shape[1], k.shape[2]
    cache.k_pools[layer].view(-1, H, d)[torch.as_tensor(slots, dtype=torch.long)] = k
    cache.v_pools[layer].view(-1, H, d)[torch.as_tensor(slots, dtype=torch.long)] = v


def check_allocator(BlockAllocator, num_blocks=4):
    """Hands out every block once, refuses with OutOfBlocks when empty, reuses a freed block."""
    alloc = checks.call(BlockAllocator, num_blocks, name="BlockAllocator")
    got = [checks.call(alloc.allocate, name="BlockAllocator.allocate") for _ in range(num_blocks)]
    if sorted(got) != list(range(num_blocks)):
        _fail(f"BlockAllocator({num_blocks}): {num_blocks} allocations returned {got}, expected each of "
              f"0 .. {num_blocks - 1} once")
    if alloc.num_free != 0:
        _fail(f"BlockAllocator: num_free is {alloc.num_free} after allocating all {num_blocks} blocks, expected 0")
    try:
        extra = alloc.allocate()
    except OutOfBlocks:
        pass
    except Exception as exc:   # noqa: BLE001
        _fail(f"BlockAllocator.allocate on an empty pool raised {type(exc).__name__}: {exc}",
              "raise serving.OutOfBlocks (the scheduler waits or preempts when it sees it)")
    else:
        _fail(f"BlockAllocator.allocate on an empty pool returned {extra!r}: it must raise serving.OutOfBlocks")
    victim = got[len(got) // 2]
    alloc.free(victim)
    if alloc.num_free != 1:
        _fail(f"BlockAllocator: num_free is {alloc.num_free} after freeing one block, expected 1")
    again = alloc.allocate()
    if again != victim:
        _fail(f"BlockAllocator: after freeing block {victim} of a full pool, allocate returned {again!r}: "
              f"the freed block is the only free one")
    print(f"  ok  allocator: {num_blocks} distinct blocks, OutOfBlocks when empty, a freed block is reused")


def check_paged_cache(BlockAllocator, PagedKVCache, extra=False):
    """The allocator; appending tokens to several requests (slots, block tables, lengths, gather); an
    append the pool cannot hold (OutOfBlocks, nothing changed); freeing a finished request and reusing
    its blocks; the gather of a request of the course model equals its contiguous cache (lab04's)."""
    check_allocator(BlockAllocator)
    if extra:
        check_allocator(BlockAllocator, 1)
        check_allocator(BlockAllocator, 9)
    L, NB, BS, H, d = 2, 6, 4, 2, 8
    cache = checks.call(PagedKVCache, L, NB, BS, H, d, name="PagedKVCache")
    written = {}                                           # (request, layer) -> list of (k, v) chunks
    gen = torch.Generator().manual_seed(0)

    def append(rid, n):
        before = len(cache.block_table(rid))
        need = checks.call(cache.blocks_needed, rid, n, name="PagedKVCache.blocks_needed", hint=CACHE_HINT)
        slots = checks.call(cache.append_slots, rid, n, name="PagedKVCache.append_slots", hint=CACHE_HINT)
        slots = [int(s) for s in slots]
        if len(slots) != n:
            _fail(f"append_slots(request {rid}, {n}) returned {len(slots)} slots, expected {n}")
        if len(cache.block_table(rid)) - before != need:
            _fail(f"append_slots(request {rid}, {n}): the table grew by {len(cache.block_table(rid)) - before} "
                  f"blocks, blocks_needed said {need}", CACHE_HINT)
        table, length = cache.block_table(rid), cache.length(rid)
        want = [table[t // BS] * BS + t % BS for t in range(length - n, length)]
        if slots != want:
            _fail(f"append_slots(request {rid}, {n}) returned slots {slots}; with the table {list(table)} and "
                  f"{length - n} tokens already cached they are {want}", CACHE_HINT)
        for layer in range(L):
            k, v = torch.randn(n, H, d, generator=gen), torch.randn(n, H, d, generator=gen)
            _write(cache, layer, slots, k, v)
            written.setdefault((rid, layer), []).append((k, v))

    def expect(rid, n_tokens, what):
        if cache.length(rid) != n_tokens:
            _fail(f"{what}: length(request {rid}) is {cache.length(rid)}, expected {n_tokens}")
        table = list(cache.block_table(rid))
        if len(table) != -(-n_tokens // BS):
            _fail(f"{what}: request {rid} holds {len(table)} blocks for {n_tokens} tokens, expected "
                  f"ceil({n_tokens} / {BS}) = {-(-n_tokens // BS)}", CACHE_HINT)
        for layer in range(L):
            got = checks.call(cache.gather, rid, layer, name="PagedKVCache.gather")
            if not (isinstance(got, tuple) and len(got) == 2):
                _fail(f"gather must return a tuple (k, v), got {checks._describe(got)}")
            k = torch.cat([c[0] for c in written[(rid, layer)]])
            v = torch.cat([c[1] for c in written[(rid, layer)]])
            checks.compare(got[0], k, what=f"{what}: gather(request {rid}, layer {layer}) keys", hint=CACHE_HINT)
            checks.compare(got[1], v, what=f"{what}: gather(request {rid}, layer {layer}) values", hint=CACHE_HINT)

    append(0, 5)                       # two blocks, the second holds one token
    append(1, 3)
    append(0, 1)                       # fits in request 0's second block: no new block
    expect(0, 6, "after appending 5 + 1 tokens")
    append(0, 3)                       # 9 tokens: a third block
    expect(0, 9, "after appending 5 + 1 + 3 tokens")
    expect(1, 3, "after appending 3 tokens")
    tables = [set(cache.block_table(r)) for r in (0, 1)]
    if tables[0] & tables[1]:
        _fail(f"requests 0 and 1 share blocks {sorted(tables[0] & tables[1])}: a block belongs to one request")
    if cache.allocator.num_free != NB - 4:
        _fail(f"{NB} blocks, 4 in use: num_free is {cache.allocator.num_free}, expected {NB - 4}")
    t, lens = checks.call(cache.block_tables, [1, 0], name="PagedKVCache.block_tables")
    if t.dtype != torch.int32 or lens.dtype != torch.int32 or t.shape != (2, 3) or lens.tolist() != [3, 9]:
        _fail(f"block_tables([1, 0]) returned tables {checks._describe(t)}, lengths {lens.tolist()}: expected "
              f"int32 tables (2, 3) (padded with 0) and int32 lengths [3, 9]")
    if t[0, :1].tolist() != list(cache.block_table(1)) or t[1].tolist() != list(cache.block_table(0)):
        _fail(f"block_tables([1, 0]) rows {t.tolist()} are not the tables of requests 1 and 0")
    # the pool cannot hold this: 2 blocks are free, 3 are needed
    try:
        cache.append_slots(2, 3 * BS)
    except OutOfBlocks:
        pass
    except Exception as exc:   # noqa: BLE001
        _fail(f"append_slots beyond the pool raised {type(exc).__name__}: {exc}", "raise serving.OutOfBlocks")
    else:
        _fail(f"append_slots(request 2, {3 * BS}) with 2 free blocks of {BS} tokens succeeded: it must raise "
              f"serving.OutOfBlocks")
    if cache.allocator.num_free != NB - 4 or cache.length(2) != 0 or len(cache.block_table(2)):
        _fail(f"a refused append_slots changed the cache (free blocks {cache.allocator.num_free}, expected {NB - 4}; "
              f"request 2 length {cache.length(2)}, blocks {list(cache.block_table(2))}): check that the pool has "
              f"the blocks BEFORE allocating any (all or nothing)")
    print("  ok  appends: slots, tables, lengths, gather; an append the pool cannot hold is refused whole")
    freed = set(cache.block_table(0))
    checks.call(cache.free, 0, name="PagedKVCache.free")
    if cache.allocator.num_free != NB - 1 or cache.length(0) != 0 or len(cache.block_table(0)):
        _fail(f"after free(request 0): {cache.allocator.num_free} free blocks (expected {NB - 1}), length "
              f"{cache.length(0)}, table {list(cache.block_table(0))} (expected 0 and [])",
              "free returns every block of the request to the allocator and forgets its table and length")
    append(2, 4 * BS + 1)              # needs 5 of the 5 free blocks: the freed ones are reused
    if not freed <= set(cache.block_table(2)):
        _fail(f"request 2 got blocks {list(cache.block_table(2))}, not the freed {sorted(freed)}")
    written.pop((0, 0)), written.pop((0, 1))
    expect(2, 4 * BS + 1, "after freeing request 0 and reusing its blocks")
    expect(1, 3, "request 1, untouched by the others")
    print("  ok  free: a finished request's blocks return to the pool and are reused; the others are intact")
    _check_against_model_cache(PagedKVCache, extra)


def _check_against_model_cache(PagedKVCache, extra):
    """The keys and values of the course model's first layer for a prompt, written in chunks through the
    paged cache, gathered back: they equal the contiguous cache (lab04's, (n, H, d))."""
    from genfast.tinylm import load
    model, tok = load("shakespeare")
    cfg = model.config
    H, d = cfg.n_head, cfg.n_embd // cfg.n_head
    text = "ROMEO:\nBut soft, what light through yonder window breaks?" + (" It is the east." if extra else "")
    ids = tok.encode(text)
    with torch.no_grad():
        x = model.tok_emb(ids) + model.pos_emb(torch.arange(len(ids)))
        _, k, v = model.blocks[0].attn.qkv(model.blocks[0].ln1(x)).split(cfg.n_embd, dim=1)
    k, v = k.view(-1, H, d), v.view(-1, H, d)
    cache = checks.call(PagedKVCache, 1, 12, 16, H, d, name="PagedKVCache")
    other = checks.call(cache.append_slots, 7, 10, name="PagedKVCache.append_slots")   # another request first
    _write(cache, 0, other, torch.zeros(10, H, d), torch.zeros(10, H, d))
    n0 = 0
    for n in (len(ids) - 20, 1, 19):   # a prefill, then one decode step, then the rest
        slots = cache.append_slots(3, n)
        _write(cache, 0, slots, k[n0:n0 + n], v[n0:n0 + n])
        n0 += n
    gk, gv = cache.gather(3, 0)
    checks.compare(gk, k, what="gather of the course model's keys (layer 0) vs its contiguous cache", hint=CACHE_HINT)
    checks.compare(gv, v, what="gather of the course model's values (layer 0) vs its contiguous cache")
    print(f"  ok  the course model's {len(ids)}-token cache through {len(cache.block_table(3))} blocks of 16 "
          f"equals the contiguous one")


# 2. the paged decode kernel -------------------------------------------------------------------
# (lengths, H, H_kv, d, block_size) of the visible check: length 1, exactly one block, one block plus
# one, long; a block size smaller than the interpreter's tile (a tile spans two blocks); GQA
DECODE_CASES = [([1, 16, 17, 100], 4, 2, 32, 16), ([5, 33, 64], 2, 2, 32, 8)]
DECODE_HINT = ("mask with n < seq_len (the last block is only partly filled); the block of token n is "
               "table[n // BLOCK_SIZE] (a tile may span several blocks), its row offset n % BLOCK_SIZE; a split "
               "past the request's end stores o = 0 and lse = -inf; GQA: query rows row * G + g")


def decode_dtype():
    return torch.float16 if runtime.on_gpu() else torch.float32


def decode_tolerance(dtype) -> dict:
    return dict(atol=1e-2, rtol=1e-2) if dtype in (torch.float16, torch.bfloat16) else dict(atol=1e-5, rtol=1e-4)


def _diagnose_decode(got, want, lengths, block_size, tol):
    """Which requests are wrong, and what their lengths suggest."""
    bad = [n for b, n in enumerate(lengths)
           if not torch.allclose(got[b].double().cpu(), want[b].double().cpu(), **tol)]
    if not bad:
        return ""
    hint = f"requests of length {bad} are wrong (of {lengths}). "
    if all(n % block_size for n in bad) and any(n % block_size == 0 for n in lengths if n not in bad):
        hint += ("Lengths that fill whole blocks pass: the last block holds seq_len - (blocks - 1) * BLOCK_SIZE "
                 "tokens, mask the tokens n >= seq_len")
    elif all(n > 16 for n in bad):
        hint += ("Short requests pass: look at the tiles that span blocks (the block of token n is "
                 "table[n // BLOCK_SIZE]) and at combine_splits (weights exp(lse_s - LSE))")
    else:
        hint += DECODE_HINT
    return hint


def check_paged_decode(paged_decode, cases=None, reference=None):
    """paged_decode(q, k_pool, v_pool, block_tables, seq_lens, max_len) on pools whose blocks are
    shuffled (and whose unused slots hold garbage) against attention over each request's contiguous
    keys and values, all requests in one launch: fp16 on a GPU, fp32 in the interpreter."""
    dtype = decode_dtype()
    tol = decode_tolerance(dtype)
    print(checks.precision(dtype, **tol))
    for lengths, H, H_kv, d, bs in (DECODE_CASES if cases is None else cases):
        (kp, vp, tables, lens), contiguous = random_paged_cache(lengths, H_kv, d, bs, dtype=dtype,
                                                                device=runtime.device(), seed=sum(lengths) + H)
        q = checks.randn(len(lengths), H, d, seed=len(lengths) + d, dtype=dtype)
        case = f"lengths {lengths}, H={H} H_kv={H_kv} d={d}, blocks of {bs}"
        got = checks.call(paged_decode, q, kp, vp, tables, lens, max(lengths), name="paged_decode", case=case,
                          hint=DECODE_HINT)
        spec = reference.contiguous_attention if reference is not None else contiguous_attention
        want = spec(q, contiguous).to(dtype)
        if isinstance(got, torch.Tensor) and got.shape == want.shape:
            hint = _diagnose_decode(got, want, lengths, bs, tol) or DECODE_HINT
        else:
            hint = DECODE_HINT
        max_abs = checks.compare(got, want, what=f"paged_decode, case '{case}'", hint=hint, **tol)
        print(f"  ok  {case:<58} max abs error {max_abs:.2e}")
    print("paged_decode: every request of every launch equals attention over its contiguous cache")


def check_combine(combine_splits):
    """Three splits with values 0, 1, 2 and masses 1, 2, 1 combine to 1; an empty split weighs nothing."""
    o_part = torch.ones(2, 4, 4) * torch.tensor([0.0, 1.0, 2.0, 0.0])[None, :, None]
    lse = torch.log(torch.tensor([[1.0, 2.0, 1.0, 0.0]] * 2))
    got = checks.call(combine_splits, o_part, lse, name="combine_splits")
    checks.compare(got, torch.ones(2, 4), atol=1e-6, what="combine_splits with a fourth, empty split (lse = -inf)",
                   hint="weights exp(lse_s - LSE): exp(-inf) = 0; never compute -inf - -inf")
    print("  ok  combine_splits")


# 3. packed prefill -----------------------------------------------------------------------------
PREFILL_CASES = [([5, 17, 1, 40], 2, 32), ([16, 16], 1, 32)]   # (lengths, H, d)
PACK_HINT = ("tokens: the prompts one after the other (int64); cu_seqlens: [0, L1, L1 + L2, ...] (int32, n + 1 "
             "entries); positions: each token's position inside its own prompt (0, 1, ... again for each prompt)")
PREFILL_HINT = ("prompt i is rows cu_seqlens[i] .. cu_seqlens[i + 1] - 1: load its queries and keys from row "
                "start + offset, mask keys past the diagonal (col <= row) and past the prompt's end (col < length)")


def check_pack_prompts(pack_prompts):
    prompts = [[3, 1, 4], [1], [5, 9]]
    out = checks.call(pack_prompts, prompts, name="pack_prompts")
    if not (isinstance(out, tuple) and len(out) == 3):
        _fail(f"pack_prompts must return (tokens, cu_seqlens, positions), got {checks._describe(out)}")
    tokens, cu, pos = out
    for name, got, want, dt in (("tokens", tokens, [3, 1, 4, 1, 5, 9], torch.int64),
                                ("cu_seqlens", cu, [0, 3, 4, 6], torch.int32),
                                ("positions", pos, [0, 1, 2, 0, 0, 1], torch.int64)):
        if not isinstance(got, torch.Tensor) or got.dtype != dt or got.tolist() != want:
            _fail(f"pack_prompts({prompts}): {name} is {got.tolist() if isinstance(got, torch.Tensor) else got!r}"
                  f"{' of dtype ' + str(got.dtype) if isinstance(got, torch.Tensor) else ''}, expected {want} "
                  f"({str(dt)[6:]})", PACK_HINT)
    print("  ok  pack_prompts: tokens, cu_seqlens, positions")


def check_packed_prefill(pack_prompts, varlen_attention, cases=None, reference=None):
    """pack_prompts on a small case; varlen_attention(q, k, v, cu_seqlens, max_len) against causal
    attention of each prompt alone; what padding the same prompts would have wasted."""
    check_pack_prompts(pack_prompts)
    dtype = decode_dtype()
    tol = decode_tolerance(dtype)
    print(checks.precision(dtype, **tol))
    for lengths, H, d in (PREFILL_CASES if cases is None else cases):
        gen = torch.Generator().manual_seed(sum(lengths))
        q, k, v = (torch.randn(sum(lengths), H, d, generator=gen).to(runtime.device(), dtype) for _ in range(3))
        cu = torch.tensor([0] + torch.cumsum(torch.tensor(lengths), 0).tolist(), dtype=torch.int32,
                          device=runtime.device())
        case = f"prompts of {lengths} tokens, H={H} d={d}"
        got = checks.call(varlen_attention, q, k, v, cu, max(lengths), name="varlen_attention", case=case,
                          hint=PREFILL_HINT)
        spec = reference.varlen_attention_spec if reference is not None else varlen_attention_spec
        want = spec(q, k, v, cu).to(dtype)
        hint = PREFILL_HINT
        if isinstance(got, torch.Tensor) and got.shape == want.shape:
            cuts = cu.tolist()
            bad = [i for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:]))
                   if not torch.allclose(got[a:b].double().cpu(), want[a:b].double().cpu(), **tol)]
            if bad and 0 not in bad:
                hint = (f"the first prompt is right, prompts {bad} are not: their rows start at cu_seqlens[i], and "
                        f"their keys must be their own (never an earlier prompt's). " + PREFILL_HINT)
        max_abs = checks.compare(got, want, what=f"varlen_attention, case '{case}'", hint=hint, **tol)
        w = serving.padding_waste(lengths)
        print(f"  ok  {case:<40} max abs error {max_abs:.2e}; padding would waste {w['rows_wasted']:.0%} of the rows, "
              f"{w['scores_wasted']:.0%} of the scores")
    print("varlen_attention: every prompt attends causally to itself only")


# 4. the scheduler -----------------------------------------------------------------------------
SCHEDULER_HINT = ("each step: admit arrived requests while blocks are free; decode every running request once "
                  "(engine.decode, also when none runs: it is the clock); retire finished ones with engine.release; "
                  "before decoding, preempt (engine.preempt, back to the front of the queue) while the running "
                  "requests need more new blocks than are free")


@functools.lru_cache(maxsize=None)
def _alone(requests_key):
    from genfast.tinylm import load
    model, _ = load("shakespeare")
    return {rid: serving.generate_alone(model, prompt, n) for rid, prompt, n in requests_key}


def _run_scheduler(serve, PagedKVCache, pack_prompts, requests, num_blocks, max_batch, what):
    from genfast.tinylm import load
    model, _ = load("shakespeare")
    cfg = model.config
    cache = checks.call(PagedKVCache, cfg.n_layer, num_blocks, 16, cfg.n_head, cfg.n_embd // cfg.n_head,
                        name="PagedKVCache")
    engine = Engine(model, cache, pack_prompts=pack_prompts)
    reqs = serving.fresh(requests)
    steps_allowed = 4 * sum(r.max_new + 1 for r in reqs) + max(r.arrival for r in reqs) + 10
    guard = _StepGuard(engine, steps_allowed)
    out = checks.call(serve, guard, reqs, max_batch, name="serve", hint=SCHEDULER_HINT)
    expected = _alone(tuple((r.id, tuple(r.prompt), r.max_new) for r in requests))
    if not isinstance(out, dict) or set(out) != set(expected):
        _fail(f"{what}: serve must return {{request id: generated tokens}} for every request; got "
              f"{checks._describe(out) if not isinstance(out, dict) else sorted(out)}", SCHEDULER_HINT)
    for r in requests:
        got = [int(t) for t in out[r.id]]
        if got != expected[r.id]:
            first = next((i for i, (a, b) in enumerate(zip(got, expected[r.id])) if a != b), min(len(got), r.max_new))
            _fail(f"{what}: request {r.id} (prompt {len(r.prompt)} tokens, max_new {r.max_new}) generated "
                  f"{len(got)} tokens, first difference from generating it alone at token {first}",
                  "append each token engine.prefill / engine.decode returns to request.output; a request is done "
                  "when len(output) == max_new (request.done); " + SCHEDULER_HINT)
    trace = engine.trace
    if cache.allocator.num_free != num_blocks:
        _fail(f"{what}: {num_blocks - cache.allocator.num_free} blocks still in use after every request finished",
              "engine.release(request) for every finished request (also one that is done right after its prefill)")
    first_seen = {}
    for s in trace:
        for rid in s["admitted"]:
            first_seen.setdefault(rid, s["step"])
        if len(s["running"]) > max_batch:
            _fail(f"{what}: {len(s['running'])} requests decoded at step {s['step']}, max_batch is {max_batch}")
    for r in requests:
        if first_seen.get(r.id, 10 ** 9) < r.arrival:
            _fail(f"{what}: request {r.id} arrives at step {r.arrival} but was admitted at step {first_seen[r.id]}",
                  "admit only requests with arrival <= engine.step")
    joined = [s for s in trace if s["admitted"] and set(s["running"]) - set(s["admitted"])]
    if not joined:
        _fail(f"{what}: no request was ever admitted while others were decoding: this is static batching",
              "iteration-level scheduling admits waiting requests at every step, while the batch runs")
    preempted = sum(len(s["preempted"]) for s in trace)
    return trace, preempted, engine.step


class _StepGuard:
    """The engine, with a limit on its steps: a scheduler that never ends fails with a message
    instead of running forever."""

    def __init__(self, engine, limit):
        self._engine, self._limit = engine, limit

    def decode(self, requests):
        if self._engine.step >= self._limit:
            _fail(f"serve ran {self._limit} engine steps without finishing every request", SCHEDULER_HINT)
        return self._engine.decode(requests)

    def __getattr__(self, name):
        return getattr(self._engine, name)


def scheduler_workload(n=10, seed=1):
    from genfast.tinylm import load
    _, tok = load("shakespeare")
    return serving.workload(tok, n, seed=seed, prompt_range=(3, 40), new_range=(2, 30), rate=1.5)


def check_scheduler(serve, PagedKVCache, pack_prompts, extra=False):
    """serve(engine, requests, max_batch) on a seeded workload: every request's tokens equal generating it
    alone; requests join while others run; with a small pool, requests are preempted and still come out
    identical; every block is free at the end; no request is admitted before it arrives."""
    requests = scheduler_workload()
    trace, _, steps = _run_scheduler(serve, PagedKVCache, pack_prompts, requests, 128, 64, "roomy pool")
    peak = max(len(s["running"]) for s in trace)
    print(f"  ok  {len(requests)} requests, a pool of 128 blocks: identical to generating each alone, "
          f"{steps} steps, up to {peak} requests in a batch")
    trace, preempted, steps = _run_scheduler(serve, PagedKVCache, pack_prompts, requests, 12, 64, "a pool of 12 blocks")
    if preempted == 0:
        _fail("a pool of 12 blocks (192 tokens) for this workload: no request was ever preempted, yet a request "
              "needed a block that was not free", SCHEDULER_HINT)
    print(f"  ok  a pool of 12 blocks: {preempted} preemptions, every request still identical, {steps} steps")
    if extra:
        more = scheduler_workload(8, seed=7)
        _run_scheduler(serve, PagedKVCache, pack_prompts, more, 40, 3, "max_batch 3")
        print("  ok  max_batch 3 respected")
        _run_scheduler(serve, PagedKVCache, pack_prompts, more, 9, 64, "a pool of 9 blocks")
        print("  ok  a pool of 9 blocks")
    print("serve: continuous batching reproduces every request token for token")


# 5. speed (GPU only) ---------------------------------------------------------------------------
PAGED_DECODE_KERNEL = KernelSignature(
    "paged_decode_kernel", {"Q": "*fp16", "K_POOL": "*fp16", "V_POOL": "*fp16", "TABLES": "*i32", "LENS": "*i32",
                            "O_PART": "*fp32", "LSE_PART": "*fp32"},
    lambda: [dict(serving.GPU_DECODE, BLOCK_SIZE=16, D=d, BLOCK_G=16) for d in (64, 128)], {"sm_scale": "fp32"},
    reference="paged_attention._paged_decode_kernel (reference)")
VARLEN_KERNEL = KernelSignature(
    "varlen_attention_kernel", {"Q": "*fp16", "K": "*fp16", "V": "*fp16", "O": "*fp16", "CU_SEQLENS": "*i32"},
    lambda: [dict(serving.prefill_config(d), D=d) for d in (64, 128)], {"sm_scale": "fp32"},
    reference="paged_prefill._varlen_attention_kernel (reference)")

SPEED_DECODE = (32, 32, 8, 128)     # requests, query heads, KV heads, head dim; lengths bench_lengths (up to 8k)


def _speed_decode_inputs(seed):
    B, H, H_kv, d = SPEED_DECODE
    lengths = serving.bench_lengths(B, serving.BENCH_MAX_LEN, seed=seed % 7)
    nb = [-(-n // 16) for n in lengths]
    gen = torch.Generator(device="cuda").manual_seed(seed)
    order = torch.randperm(sum(nb), generator=gen, device="cuda").to(torch.int32)
    tables = torch.zeros(B, max(nb), dtype=torch.int32, device="cuda")
    first = 0
    for b, k in enumerate(nb):
        tables[b, :k] = order[first:first + k]
        first += k
    q = bench.randn(B, H, d, seed=seed, dtype=torch.float16)
    k_pool, v_pool = (bench.randn(sum(nb), 16, H_kv, d, seed=seed + i, dtype=torch.float16) for i in (1, 2))
    return q, k_pool, v_pool, tables, torch.tensor(lengths, dtype=torch.int32, device="cuda"), max(lengths)


def speed_paged_decode(paged_decode, reference=None, contiguous=None):
    """32 requests of mixed length up to 8k tokens (GQA 32:8, d=128, fp16, shuffled 16-token blocks):
    your paged_decode against the reference paged kernel; then (on a GPU) both against lab04's contiguous
    kernel holding the same total tokens."""
    points = bench.speed_points(paged_decode, reference, inputs=_speed_decode_inputs, points=1,
                                name="paged decode attention (32 requests up to 8k tokens, H=32 H_kv=8 d=128)",
                                signature=PAGED_DECODE_KERNEL.where(D=128))
    if contiguous is not None and runtime.on_gpu():
        q, kp, vp, t, lens, m = _speed_decode_inputs(0)
        B, H, H_kv, d = SPEED_DECODE
        mean = int(lens.float().mean())
        k, v = (bench.randn(B, H_kv, mean, d, seed=9 + i, dtype=torch.float16) for i in range(2))
        t_cont = bench.time_gpu(lambda: contiguous(q, (k, v)))
        t_mine = bench.time_gpu(lambda: paged_decode(q, kp, vp, t, lens, m))
        print(f"  lab04's contiguous kernel, same total tokens ({B} x {mean}): {t_cont}; yours paged: {t_mine} "
              f"-> paged runs at {t_cont.median_ms / t_mine.median_ms:.2f}x the contiguous speed")
    return points


SPEED_PREFILL = (16, 16, 128)       # prompts, heads, head dim; lengths 64 .. 2048


def _speed_prefill_inputs(seed):
    n, H, d = SPEED_PREFILL
    gen = torch.Generator().manual_seed(seed % 5)
    lengths = torch.randint(64, 2049, (n,), generator=gen).tolist()
    T = sum(lengths)
    q, k, v = (bench.randn(T, H, d, seed=seed + i, dtype=torch.float16) for i in range(3))
    cu = torch.tensor([0] + torch.cumsum(torch.tensor(lengths), 0).tolist(), dtype=torch.int32, device="cuda")
    return q, k, v, cu, max(lengths)


def speed_prefill(varlen_attention, reference=None):
    """16 prompts of 64..2048 tokens (H=16, d=128, fp16) packed: your varlen_attention against the reference;
    then (on a GPU) against padding them to the longest and running torch's SDPA."""
    points = bench.speed_points(varlen_attention, reference, inputs=_speed_prefill_inputs, points=1,
                                name="packed prefill (16 prompts of 64..2048 tokens, H=16 d=128)",
                                signature=VARLEN_KERNEL.where(D=128))
    if runtime.on_gpu():
        args = _speed_prefill_inputs(0)
        t_packed = bench.time_gpu(lambda: varlen_attention(*args))
        t_padded = bench.time_gpu(lambda: serving.padded_prefill_spec(*args))
        lengths = (args[3][1:] - args[3][:-1]).tolist()
        print(f"  padded to the longest + SDPA: {t_padded}; yours packed: {t_packed} "
              f"({t_padded.median_ms / t_packed.median_ms:.2f}x); padding wastes "
              f"{serving.padding_waste(lengths)['scores_wasted']:.0%} of the scores here")
    return points


# 6. bonus: prefix sharing (not graded) ---------------------------------------------------------
SHARING_HINT = ("a block shared by several requests goes back to the allocator only when its LAST owner frees it "
                "(a reference count per block); the partly filled block of the prefix is copied, never shared")


def check_prefix_sharing(SharedPrefixCache):
    """A 40-token 'system prompt' request, three requests forked from it that append their own tokens:
    each child's gather is the prompt + its own tokens; the full blocks are shared (6 blocks in use
    instead of 12); freeing the parent keeps what the children still use, freeing everyone frees all."""
    L, NB, BS, H, d = 2, 16, 16, 2, 8
    cache = checks.call(SharedPrefixCache, L, NB, BS, H, d, name="SharedPrefixCache")
    gen = torch.Generator().manual_seed(5)
    rand = lambda n: torch.randn(n, H, d, generator=gen)
    prompt = [(rand(40), rand(40)) for _ in range(L)]
    slots = cache.append_slots(0, 40)
    for layer, (k, v) in enumerate(prompt):
        _write(cache, layer, slots, k, v)
    own = {}
    for child in (1, 2, 3):
        checks.call(cache.fork, child, 0, 40, name="SharedPrefixCache.fork")
        slots = cache.append_slots(child, 5)
        own[child] = [(rand(5), rand(5)) for _ in range(L)]
        for layer, (k, v) in enumerate(own[child]):
            _write(cache, layer, slots, k, v)
    used = NB - cache.allocator.num_free
    if used != 6:
        _fail(f"a 40-token prompt (3 blocks of 16) and 3 forks with 5 tokens of their own hold {used} blocks, "
              f"expected 6: the 2 full blocks shared, the partly filled one copied once per child",
              "fork shares table[:n // block_size] (a reference count per block) and copies the partial block")

    def expect(what):
        for child in (1, 2, 3):
            for layer in range(L):
                k, v = checks.call(cache.gather, child, layer, name="gather")
                checks.compare(k, torch.cat([prompt[layer][0], own[child][layer][0]]),
                               what=f"{what}: gather(request {child}, layer {layer}) keys", hint=SHARING_HINT)
                checks.compare(v, torch.cat([prompt[layer][1], own[child][layer][1]]),
                               what=f"{what}: gather(request {child}, layer {layer}) values")
    expect("after the forks")
    cache.free(0)
    slots = cache.append_slots(9, BS * cache.allocator.num_free)
    for layer in range(L):
        _write(cache, layer, slots, rand(len(slots)) * 100, rand(len(slots)) * 100)   # reuse every free block
    expect("after freeing the prompt's request and filling every free block")
    for r in (1, 2, 3, 9):
        cache.free(r)
    if cache.allocator.num_free != NB:
        _fail(f"after every request is freed, {NB - cache.allocator.num_free} blocks are still in use",
              "a shared block goes back to the allocator when its LAST owner frees it")
    print(f"prefix sharing: 3 forks of a 40-token prompt in 6 blocks instead of 12; shared blocks outlive "
          f"the request that wrote them and are freed with their last owner")
