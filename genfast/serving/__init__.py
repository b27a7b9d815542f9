"""Serving many requests with the course model: what lab08 gives the learner.

A serving engine generates for many requests at once. Its pieces here:

* `Request`: one user's prompt, how many tokens it wants, when it arrives (in engine steps), and
  the tokens generated so far;
* `workload(tok, n, seed)`: the course's seeded workload of mixed prompt and output lengths
  (prompts are windows of the held-out plays, so the model continues real text);
* `OutOfBlocks`: what the learner's block allocator raises when the pool is empty; the scheduler
  catches the situation before it happens (admission, preemption);
* `Engine`: the course model run from a paged KV cache (the learner's), one packed prefill for the
  requests a step admits and one batched decode step for every running request; the attention
  functions are passed in (the learner's Triton kernels, or the plain torch specs below);
* `serve_one_at_a_time` and `serve_static`: the two baseline schedules the lab measures continuous
  batching against (the learner writes the continuous scheduler);
* `paged_config`: the launch configuration of the paged decode kernel, one copy for the lab's
  launcher and the instructor's reference;
* memory accounting of a run (`memory_report`) and the plots of the lab and the demo.

Nothing here implements a graded function of the lab: the block allocator, the paged cache, the
kernels, the packing of prompts and the continuous scheduler are the learner's. The torch specs
(`paged_attention_spec`, `varlen_attention_spec`) are the plain definitions the checks compare
against and that the engine uses on a CPU, where the Triton interpreter's time says nothing.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import triton

from genfast import runtime


class OutOfBlocks(RuntimeError):
    """The block pool has no free block left (raised by the allocator; the scheduler then waits or
    preempts a request)."""


# ----------------------------------------------------------------------------------------------
# requests and the workload
# ----------------------------------------------------------------------------------------------
@dataclass
class Request:
    """One request. `prompt`: token ids; `max_new`: tokens to generate (greedy); `arrival`: the
    engine step at which it arrives; `output`: the tokens generated so far (the scheduler appends)."""
    id: int
    prompt: list
    max_new: int
    arrival: int = 0
    output: list = field(default_factory=list)

    @property
    def done(self) -> bool:
        return len(self.output) >= self.max_new

    def tokens(self) -> list:
        """What the cache must hold to go on: the prompt and every generated token but the last
        (the last one is the next step's input)."""
        return list(self.prompt) + list(self.output)

    def fresh(self) -> "Request":
        return Request(self.id, list(self.prompt), self.max_new, self.arrival)


def workload(tok, n: int = 24, seed: int = 0, prompt_range=(4, 64), new_range=(4, 60), rate: float = 1.0,
             context: int = 128) -> list[Request]:
    """n requests of mixed lengths: prompt lengths and output lengths drawn log-uniformly (many short,
    a few long, as in chat traffic), arrivals a Poisson process of `rate` requests per engine step;
    prompt + output never exceeds the model's context. Prompts are windows of the held-out plays."""
    from genfast.tinylm import data
    rng = random.Random(seed)
    _, val = data.corpus()
    ids = tok.encode(val).tolist()
    log_uniform = lambda lo, hi: int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
    requests, t = [], 0.0
    for i in range(n):
        p = log_uniform(*prompt_range)
        m = min(log_uniform(*new_range), context - p)
        start = rng.randrange(0, len(ids) - p)
        requests.append(Request(i, ids[start:start + p], m, int(t)))
        t += rng.expovariate(rate)
    return requests


def fresh(requests) -> list[Request]:
    """The same requests with nothing generated yet (each run of a schedule starts from these)."""
    return [r.fresh() for r in requests]


@torch.no_grad()
def generate_alone(model, prompt, n_new) -> list:
    """Greedy tokens of one request generated alone, re-running the whole context each step: the
    ground truth every schedule must reproduce token for token."""
    idx = torch.tensor([list(prompt)], dtype=torch.long, device=next(model.parameters()).device)
    out = []
    for _ in range(n_new):
        nxt = model(idx)[:, -1].argmax(-1, keepdim=True)
        out.append(int(nxt))
        idx = torch.cat([idx, nxt], dim=1)
    return out


# ----------------------------------------------------------------------------------------------
# the torch specs (what the kernels compute), and the launch configuration of the decode kernel
# ----------------------------------------------------------------------------------------------
def paged_attention_spec(q, k_pool, v_pool, block_tables, seq_lens, max_len=None):
    """Decode attention over a paged cache, by definition: request b's keys are token slots
    0 .. seq_lens[b] - 1 of the blocks block_tables[b, 0], block_tables[b, 1], ...; q (B, H, d),
    pools (num_blocks, block_size, H_kv, d) -> (B, H, d) fp32. Query head h reads kv head
    h // (H / H_kv)."""
    B, H, d = q.shape
    block_size, H_kv = k_pool.shape[1], k_pool.shape[2]
    out = []
    for b in range(B):
        n = int(seq_lens[b])
        blocks = block_tables[b, :triton.cdiv(n, block_size)].long()
        k = k_pool[blocks].reshape(-1, H_kv, d)[:n].float()        # (n, H_kv, d)
        v = v_pool[blocks].reshape(-1, H_kv, d)[:n].float()
        k, v = (t.transpose(0, 1).repeat_interleave(H // H_kv, dim=0) for t in (k, v))   # (H, n, d)
        s = torch.einsum("hd,hnd->hn", q[b].float(), k) / math.sqrt(d)
        out.append(torch.einsum("hn,hnd->hd", torch.softmax(s, dim=-1), v))
    return torch.stack(out)


def varlen_attention_spec(q, k, v, cu_seqlens, max_len=None):
    """Causal attention of packed prompts, by definition: q, k, v (T, H, d) hold the prompts one after
    the other, prompt i at rows cu_seqlens[i] .. cu_seqlens[i + 1] - 1; each attends causally to
    itself and never to another prompt. -> (T, H, d) fp32."""
    out = torch.empty(q.shape, dtype=torch.float32, device=q.device)
    cu = [int(c) for c in cu_seqlens]
    for a, b in zip(cu[:-1], cu[1:]):
        qi, ki, vi = (t[a:b].float().transpose(0, 1) for t in (q, k, v))       # (H, n, d)
        out[a:b] = F.scaled_dot_product_attention(qi, ki, vi, is_causal=True).transpose(0, 1)
    return out


# ----------------------------------------------------------------------------------------------
# test inputs: a paged cache with scattered blocks, and the same tokens contiguous
# ----------------------------------------------------------------------------------------------
def random_paged_cache(lengths, H_kv, d, block_size=16, spare_blocks=3, dtype=torch.float32, device="cpu", seed=0):
    """A pool holding requests of the given lengths in randomly permuted blocks (unused slots hold
    garbage, as in a real pool), the block tables (padded with 0) and lengths, and the contiguous
    (k, v) of each request: ((k_pool, v_pool, tables, lens), [(k_b, v_b) of shape (n_b, H_kv, d)])."""
    gen = torch.Generator().manual_seed(seed)
    need = [triton.cdiv(n, block_size) for n in lengths]
    num_blocks = sum(need) + spare_blocks
    k_pool = torch.randn(num_blocks, block_size, H_kv, d, generator=gen) * 3     # garbage where nothing is cached
    v_pool = torch.randn(num_blocks, block_size, H_kv, d, generator=gen) * 3
    order = torch.randperm(num_blocks, generator=gen).tolist()
    tables = torch.zeros(len(lengths), max(max(need), 1), dtype=torch.int32)
    contiguous, first = [], 0
    for b, (n, nb) in enumerate(zip(lengths, need)):
        blocks = order[first:first + nb]
        first += nb
        tables[b, :nb] = torch.tensor(blocks, dtype=torch.int32)
        k = torch.randn(n, H_kv, d, generator=gen)
        v = torch.randn(n, H_kv, d, generator=gen)
        for i in range(n):
            k_pool[blocks[i // block_size], i % block_size] = k[i]
            v_pool[blocks[i // block_size], i % block_size] = v[i]
        contiguous.append((k, v))
    cast = lambda t: t.to(device=device, dtype=dtype)
    return (cast(k_pool), cast(v_pool), tables.to(device), torch.tensor(lengths, dtype=torch.int32, device=device)), \
        [(cast(k), cast(v)) for k, v in contiguous]


def contiguous_attention(q, contiguous):
    """The reference the paged kernel must equal: softmax(q k^T / sqrt d) v over each request's own
    contiguous keys and values (lab04's cache layout), fp32."""
    B, H, d = q.shape
    out = []
    for b, (k, v) in enumerate(contiguous):
        G = H // k.shape[1]
        kk, vv = (t.float().transpose(0, 1).repeat_interleave(G, dim=0) for t in (k, v))
        s = torch.einsum("hd,hnd->hn", q[b].float(), kk) / math.sqrt(d)
        out.append(torch.einsum("hn,hnd->hd", torch.softmax(s, -1), vv))
    return torch.stack(out)


BENCH_REQUESTS, BENCH_MAX_LEN, BENCH_BLOCK = 32, 8192, 16


def bench_lengths(n=BENCH_REQUESTS, max_len=BENCH_MAX_LEN, seed=0):
    """Mixed lengths: log-uniform between max_len / 64 and max_len, the longest exactly max_len."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = math.log(max(1, max_len // 64)), math.log(max_len)
    lengths = torch.exp(lo + (hi - lo) * torch.rand(n, generator=gen)).long().clamp(1, max_len).tolist()
    lengths[0] = max_len
    return lengths


GPU_DECODE = dict(BLOCK_N=64, num_warps=8, num_stages=2)   # the paged decode kernel's tile on a GPU


def _sm_count() -> int:
    return torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count


def paged_config(rows: int, max_len: int, mean_len: int | None = None) -> dict:
    """BLOCK_N and SPLIT_LEN of the paged split-K decode kernel (the lab's launcher and the reference
    use this one): `rows` = B x H_kv programs per split, requests up to `max_len` tokens, `mean_len`
    on average. On a GPU tiles of 64 tokens (four 16-token blocks), enough splits of the mean request
    for ~16 programs per SM (the same rule as lab04's split_config at N = mean_len, so that a paged
    and a contiguous cache of the same tokens are cut alike); in the interpreter tiles of 16 tokens
    and two tiles a split, so that the checks cross blocks, tiles and splits."""
    if runtime.on_gpu():
        block_n = GPU_DECODE["BLOCK_N"]
        mean_len = max(1, mean_len or max_len)
        n_splits = max(1, min(triton.cdiv(mean_len, 4 * block_n), triton.cdiv(16 * _sm_count(), rows)))
        split_len = triton.cdiv(triton.cdiv(mean_len, n_splits), block_n) * block_n
        return dict(GPU_DECODE, SPLIT_LEN=split_len)
    return dict(BLOCK_N=16, SPLIT_LEN=32)


def prefill_config(head_dim: int) -> dict:
    """BLOCK_M x BLOCK_N tiles of the packed prefill kernel: 64 x 64 with 4 warps on a GPU, 16 x 16 in
    the interpreter (so that prompts of a few tokens already span several tiles)."""
    if runtime.on_gpu():
        return dict(BLOCK_M=64, BLOCK_N=64, num_warps=4 if head_dim <= 64 else 8, num_stages=2)
    return dict(BLOCK_M=16, BLOCK_N=16)


def padded_prefill_spec(q, k, v, cu_seqlens, max_len):
    """What a padded batch computes for the same prompts: every prompt padded to the longest,
    (n, H, L, d) through SDPA with a causal mask (the padding rows are computed, then thrown away).
    The speed bar of the packed kernel. Returns the packed (T, H, d) rows."""
    cu = cu_seqlens.tolist()
    n, (T, H, d) = len(cu) - 1, q.shape
    pad = lambda t: torch.nn.utils.rnn.pad_sequence([t[a:b] for a, b in zip(cu[:-1], cu[1:])], batch_first=True)
    qp, kp, vp = (pad(t).transpose(1, 2) for t in (q, k, v))                       # (n, H, L, d)
    o = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True).transpose(1, 2)  # (n, L, H, d)
    return torch.cat([o[i, :b - a] for i, (a, b) in enumerate(zip(cu[:-1], cu[1:]))])


def padding_waste(lengths) -> dict:
    """What padding a batch of prompts to the longest costs, against packing them: token rows (what
    the projections and MLPs compute) and causal attention scores (L (L + 1) / 2 per prompt)."""
    lengths = list(lengths)
    longest = max(lengths)
    rows_packed, rows_padded = sum(lengths), longest * len(lengths)
    att_packed = sum(n * (n + 1) // 2 for n in lengths)
    att_padded = len(lengths) * longest * (longest + 1) // 2
    return dict(rows_packed=rows_packed, rows_padded=rows_padded, rows_wasted=1 - rows_packed / rows_padded,
                scores_packed=att_packed, scores_padded=att_padded, scores_wasted=1 - att_packed / att_padded)


# ----------------------------------------------------------------------------------------------
# the engine: the course model over a paged cache
# ----------------------------------------------------------------------------------------------
class Engine:
    """The course model generating greedily for many requests from a paged KV cache.

    cache: the learner's PagedKVCache (its `append_slots`, `free`, `block_tables`, `blocks_needed`,
    `allocator.num_free`, `k_pools` / `v_pools`: one (num_blocks, block_size, H, d) pool per layer);
    decode_attention(q, k_pool, v_pool, block_tables, seq_lens, max_len) and
    prefill_attention(q, k, v, cu_seqlens, max_len): the attention of a decode step and of a packed
    prefill (the learner's kernels, or the torch specs); pack_prompts(list of token lists) ->
    (tokens, cu_seqlens, positions): the learner's packing.

    `prefill(requests)` runs the admitted requests' prompts (and, for a preempted request, what it had
    generated) as one packed sequence, writes their keys and values into the cache and returns each
    one's next token. `decode(requests)` runs one step for every running request (one new token each)
    and returns their next tokens; it is also the clock: `step` counts its calls (an empty list is an
    idle step). `preempt(request)` frees a running request's blocks (it keeps its generated tokens and
    is prefilled again when readmitted: vLLM's recompute preemption). `release(request)` frees a
    finished one. `trace` records every step: who ran, their lengths and blocks, who was admitted."""

    def __init__(self, model, cache, decode_attention=paged_attention_spec, prefill_attention=varlen_attention_spec,
                 pack_prompts=None):
        self.model, self.cache = model, cache
        self.decode_attention, self.prefill_attention = decode_attention, prefill_attention
        self.pack_prompts = pack_prompts
        self.device = next(model.parameters()).device
        self.step = 0
        self.trace: list[dict] = []
        self._admitted: list[int] = []
        self._preempted: list[int] = []
        self.tokens_generated = 0

    # the model, one layer at a time ------------------------------------------------------
    def _heads(self, t, n):
        C = self.model.config.n_embd
        H = self.model.config.n_head
        return t.view(n, H, C // H)

    def _write(self, layer, slots, k, v):
        cache = self.cache
        H, d = k.shape[1], k.shape[2]
        cache.k_pools[layer].view(-1, H, d)[slots] = k.to(cache.k_pools[layer].dtype)
        cache.v_pools[layer].view(-1, H, d)[slots] = v.to(cache.v_pools[layer].dtype)

    def _layers(self, x, slots, attend):
        for i, block in enumerate(self.model.blocks):
            att = block.attn
            n, C = x.shape
            q, k, v = att.qkv(block.ln1(x)).split(C, dim=1)
            q, k, v = self._heads(q, n), self._heads(k, n), self._heads(v, n)
            self._write(i, slots, k, v)
            y = attend(i, q, k, v)
            x = x + att.proj(y.reshape(n, C).to(x.dtype))
            x = x + block.mlp(block.ln2(x))
        return self.model.head(self.model.ln_f(x))

    @torch.no_grad()
    def prefill(self, requests) -> list[int]:
        if not requests:
            return []
        if self.pack_prompts is None:
            raise ValueError("Engine(pack_prompts=...) is needed to prefill: pass your pack_prompts")
        seqs = [r.tokens() for r in requests]
        tokens, cu_seqlens, positions = self.pack_prompts(seqs)
        tokens, cu_seqlens, positions = (t.to(self.device) for t in (tokens, cu_seqlens, positions))
        slots = torch.cat([torch.as_tensor(self.cache.append_slots(r.id, len(s)), dtype=torch.long)
                           for r, s in zip(requests, seqs)]).to(self.device)
        x = self.model.tok_emb(tokens) + self.model.pos_emb(positions)
        max_len = max(len(s) for s in seqs)
        logits = self._layers(x, slots, lambda i, q, k, v: self.prefill_attention(q, k, v, cu_seqlens, max_len))
        self._admitted += [r.id for r in requests]
        last = cu_seqlens[1:].long() - 1
        self.tokens_generated += len(requests)
        return logits[last].argmax(-1).tolist()

    @torch.no_grad()
    def decode(self, requests) -> list[int]:
        if not requests:
            self._record(requests)
            self.step += 1
            return []
        ids = [r.id for r in requests]
        tokens = torch.tensor([r.output[-1] for r in requests], dtype=torch.long, device=self.device)
        lengths = [len(r.prompt) + len(r.output) - 1 for r in requests]     # tokens already cached
        positions = torch.tensor(lengths, dtype=torch.long, device=self.device)
        slots = torch.cat([torch.as_tensor(self.cache.append_slots(i, 1), dtype=torch.long) for i in ids]).to(self.device)
        self._record(requests)
        self.step += 1
        tables, seq_lens = self.cache.block_tables(ids)
        tables, seq_lens = tables.to(self.device), seq_lens.to(self.device)
        max_len = max(lengths) + 1
        x = self.model.tok_emb(tokens) + self.model.pos_emb(positions)
        logits = self._layers(x, slots, lambda i, q, k, v: self.decode_attention(
            q, self.cache.k_pools[i], self.cache.v_pools[i], tables, seq_lens, max_len))
        self.tokens_generated += len(requests)
        return logits.argmax(-1).tolist()

    def preempt(self, request) -> None:
        self.cache.free(request.id)
        self._preempted.append(request.id)

    def release(self, request) -> None:
        self.cache.free(request.id)

    def free_blocks(self) -> int:
        return self.cache.allocator.num_free

    def _record(self, running) -> None:
        self.trace.append(dict(
            step=self.step, running=[r.id for r in running],
            lengths=[len(r.prompt) + len(r.output) for r in running],     # tokens cached after this step
            blocks=[len(self.cache.block_table(r.id)) for r in running],
            reserved_max=[len(r.prompt) + r.max_new for r in running],
            tables={r.id: list(self.cache.block_table(r.id)) for r in running},
            admitted=self._admitted, preempted=self._preempted, free_blocks=self.free_blocks()))
        self._admitted, self._preempted = [], []


# ----------------------------------------------------------------------------------------------
# the two baseline schedules
# ----------------------------------------------------------------------------------------------
def _arrived(pending, step):
    out = []
    while pending and pending[0].arrival <= step:
        out.append(pending.pop(0))
    return out


def serve_one_at_a_time(engine: Engine, requests) -> dict:
    """One request at a time, in arrival order: prefill it, decode it to the end, release it."""
    pending = sorted(requests, key=lambda r: (r.arrival, r.id))
    waiting = []
    while pending or waiting:
        waiting += _arrived(pending, engine.step)
        if not waiting:
            engine.decode([])                                  # idle until the next arrival
            continue
        r = waiting.pop(0)
        r.output.append(engine.prefill([r])[0])
        while not r.done:
            r.output.append(engine.decode([r])[0])
        engine.release(r)
    return {r.id: r.output for r in requests}


def serve_static(engine: Engine, requests, batch: int) -> dict:
    """Static batching: wait until `batch` requests have arrived (or none will come), prefill them
    together, decode until the LAST of them is done, and only then take the next batch. (A request that
    is done leaves the decode steps: the best case of static batching; a padded batch would also keep
    computing its rows.)"""
    pending = sorted(requests, key=lambda r: (r.arrival, r.id))
    waiting = []
    while pending or waiting:
        waiting += _arrived(pending, engine.step)
        if len(waiting) < batch and pending:
            engine.decode([])
            continue
        group, waiting = waiting[:batch], waiting[batch:]
        for r, t in zip(group, engine.prefill(group)):
            r.output.append(t)
        running = [r for r in group if not r.done]
        while running:
            for r, t in zip(running, engine.decode(running)):
                r.output.append(t)
            for r in [r for r in running if r.done]:
                engine.release(r)
            running = [r for r in running if not r.done]
        for r in group:
            if r.max_new <= 1:
                engine.release(r)
    return {r.id: r.output for r in requests}


def timed(schedule, engine: Engine, requests, *args) -> dict:
    """Run a schedule on fresh copies of the requests: outputs, seconds, generated tokens per second,
    engine steps, and the engine's trace."""
    reqs = fresh(requests)
    if runtime.on_gpu():
        torch.cuda.synchronize()
    start = time.perf_counter()
    outputs = schedule(engine, reqs, *args)
    if runtime.on_gpu():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens = sum(len(o) for o in outputs.values())
    return dict(outputs=outputs, seconds=seconds, tokens=tokens, tokens_per_s=tokens / seconds, steps=engine.step,
                trace=engine.trace)


# ----------------------------------------------------------------------------------------------
# memory: reserved against used
# ----------------------------------------------------------------------------------------------
def memory_report(trace, block_size: int, context: int) -> dict:
    """KV memory over a run, summed over its steps (token slots x steps): `used` = tokens the running
    requests hold; `paged` = their blocks x block_size; `contiguous_max` = a contiguous region of the
    model's whole context per request (what a system that does not know the output length reserves);
    `contiguous_request` = prompt + max_new per request (an oracle that knows each output length).
    Each `*_waste` is 1 - used / reserved."""
    used = sum(sum(s["lengths"]) for s in trace)
    paged = sum(sum(s["blocks"]) for s in trace) * block_size
    cmax = sum(len(s["running"]) for s in trace) * context
    creq = sum(sum(s["reserved_max"]) for s in trace)
    waste = lambda reserved: 1 - used / reserved if reserved else 0.0
    return dict(used=used, paged=paged, contiguous_max=cmax, contiguous_request=creq, paged_waste=waste(paged),
                contiguous_max_waste=waste(cmax), contiguous_request_waste=waste(creq),
                peak_batch=max((len(s["running"]) for s in trace), default=0))


def plot_memory(report: dict, ax=None):
    """Bar plot: the fraction of reserved KV memory that holds no token, per way of reserving it."""
    import matplotlib.pyplot as plt
    ax = ax or plt.gca()
    names = ["contiguous,\nmax context", "contiguous,\nprompt + max_new", "paged\n(blocks)"]
    values = [report["contiguous_max_waste"], report["contiguous_request_waste"], report["paged_waste"]]
    bars = ax.bar(names, [100 * v for v in values], color=["#c44e52", "#dd8452", "#4c72b0"])
    for bar, v in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, 100 * v + 1, f"{100 * v:.1f}%", ha="center")
    ax.set(ylabel="reserved KV memory wasted (%)", ylim=(0, 100), title="KV memory reserved but unused")
    return ax


def plot_throughput(results: dict, ax=None):
    """Bar plot of generated tokens per second per schedule ({name: timed(...) result})."""
    import matplotlib.pyplot as plt
    ax = ax or plt.gca()
    names = list(results)
    values = [results[n]["tokens_per_s"] for n in names]
    bars = ax.bar(names, values, color=["#8c8c8c", "#dd8452", "#4c72b0"][:len(names)])
    for bar, v in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.0f}", ha="center", va="bottom")
    ax.set(ylabel="generated tokens / s", title=f"throughput ({'GPU' if runtime.on_gpu() else 'CPU'})")
    return ax


def plot_batch(trace, ax=None, label="running requests"):
    """Requests running at each engine step."""
    import matplotlib.pyplot as plt
    ax = ax or plt.gca()
    ax.plot([s["step"] for s in trace], [len(s["running"]) for s in trace], label=label)
    ax.set(xlabel="engine step", ylabel="requests in the batch")
    return ax


def block_owners(tables: dict, num_blocks: int):
    """(num_blocks,) owner of each physical block (a trace step's `tables`): a request id, or -1 (free)."""
    owner = torch.full((num_blocks,), -1, dtype=torch.long)
    for rid, blocks in tables.items():
        owner[torch.as_tensor(blocks, dtype=torch.long)] = rid
    return owner
