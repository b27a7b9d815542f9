"""The paged KV cache and the continuous-batching scheduler of lab08 (references, plain Python and torch).

Block allocator: a pool of `num_blocks` physical blocks, each holding `block_size` tokens of every
layer's keys and values; a free list hands them out one at a time and takes them back. When the list
is empty `allocate` raises `OutOfBlocks`: the scheduler must then wait (do not admit) or preempt.

Paged cache: per request a block table (the physical blocks, in logical order) and a length. Token n
of request r lives in slot `table[n // block_size] * block_size + n % block_size` of the flattened
pool (num_blocks * block_size, H, d) of every layer (vLLM's slot mapping). Appending n tokens takes
ceil((length + n) / block_size) - len(table) new blocks, all or none (`OutOfBlocks` leaves the cache as
it was); freeing a request returns all its blocks and forgets its table. Memory held by a request is
at most one partly filled block more than its tokens: the waste is below block_size per request.

Continuous batching (iteration-level scheduling, Orca / vLLM): every engine step

1. requests that have arrived join the waiting queue;
2. admit from the front of the queue while the batch has room and the pool has the blocks for the
   request's tokens (prompt, and what it generated before a preemption), counting first the blocks the
   running requests' decode step will take (so that admitting never forces a preemption); prefill them together
   (one packed sequence) and append the first token of each;
3. make room for the decode step: each running request whose length is a multiple of block_size needs
   a new block; while the pool has fewer free blocks than that, preempt the most recently admitted
   running request (free its blocks, put it back at the front of the queue: it keeps its tokens and is
   prefilled again, vLLM's recompute preemption);
4. one decode step for every running request (the engine's clock ticks even when none runs);
5. retire the finished requests and free their blocks.

Requests that finish leave the batch at once and waiting ones take their place the next step: no
request waits for the longest one of its batch, and the batch stays as full as memory allows.
"""
from __future__ import annotations

from collections import deque

import torch
import triton

from genfast.serving import OutOfBlocks


class BlockAllocator:
    """A free list of physical block ids 0 .. num_blocks - 1 (the lowest ids first)."""

    def __init__(self, num_blocks: int):
        self.num_blocks = num_blocks
        self.free_list = deque(range(num_blocks))

    @property
    def num_free(self) -> int:
        return len(self.free_list)

    def allocate(self) -> int:
        if not self.free_list:
            raise OutOfBlocks(f"all {self.num_blocks} blocks are in use")
        return self.free_list.popleft()

    def free(self, block: int) -> None:
        self.free_list.append(block)


class PagedKVCache:
    """K and V pools (num_blocks, block_size, n_heads, head_dim), one pair per layer, a block table
    and a length per request."""

    def __init__(self, num_layers, num_blocks, block_size, n_heads, head_dim, dtype=torch.float32, device="cpu"):
        self.block_size = block_size
        self.allocator = BlockAllocator(num_blocks)
        shape = (num_blocks, block_size, n_heads, head_dim)
        self.k_pools = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v_pools = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.tables: dict[int, list[int]] = {}
        self.lengths: dict[int, int] = {}

    def length(self, req_id) -> int:
        return self.lengths.get(req_id, 0)

    def block_table(self, req_id) -> list[int]:
        return self.tables.get(req_id, [])

    def blocks_needed(self, req_id, n: int) -> int:
        """New blocks that appending n tokens to the request would take."""
        return triton.cdiv(self.length(req_id) + n, self.block_size) - len(self.block_table(req_id))

    def append_slots(self, req_id, n: int) -> list[int]:
        """Reserve slots for n new tokens of the request (allocating blocks as needed, all or none):
        their flat slot indices, block * block_size + offset."""
        need = self.blocks_needed(req_id, n)
        if need > self.allocator.num_free:
            raise OutOfBlocks(f"request {req_id} needs {need} blocks, {self.allocator.num_free} are free")
        table = self.tables.setdefault(req_id, [])
        table += [self.allocator.allocate() for _ in range(need)]
        start = self.length(req_id)
        self.lengths[req_id] = start + n
        return [table[t // self.block_size] * self.block_size + t % self.block_size for t in range(start, start + n)]

    def free(self, req_id) -> None:
        for block in self.tables.pop(req_id, []):
            self.allocator.free(block)
        self.lengths.pop(req_id, None)

    def gather(self, req_id, layer: int):
        """(k, v) of the request in one layer, contiguous: (length, n_heads, head_dim) each."""
        n = self.length(req_id)
        blocks = torch.tensor(self.block_table(req_id), dtype=torch.long)
        k = self.k_pools[layer][blocks].flatten(0, 1)[:n]
        v = self.v_pools[layer][blocks].flatten(0, 1)[:n]
        return k, v

    def block_tables(self, req_ids):
        """(tables (B, max_blocks) int32, padded with 0; lengths (B,) int32) of these requests."""
        tables = [self.block_table(r) for r in req_ids]
        out = torch.zeros(len(tables), max([len(t) for t in tables] + [1]), dtype=torch.int32)
        for b, t in enumerate(tables):
            out[b, :len(t)] = torch.tensor(t, dtype=torch.int32)
        return out, torch.tensor([self.length(r) for r in req_ids], dtype=torch.int32)


def serve(engine, requests, max_batch: int = 64) -> dict:
    """Continuous batching of `requests` (genfast.serving.Request) on `engine` (genfast.serving.Engine):
    {request id: generated tokens}."""
    cache = engine.cache
    pending = deque(sorted(requests, key=lambda r: (r.arrival, r.id)))
    waiting, running = deque(), []
    while pending or waiting or running:
        while pending and pending[0].arrival <= engine.step:
            waiting.append(pending.popleft())
        admitted = []
        need = sum(cache.blocks_needed(r.id, 1) for r in running)      # this step's decode comes first
        while waiting and len(running) + len(admitted) < max_batch:
            blocks = cache.blocks_needed(waiting[0].id, len(waiting[0].tokens()))
            if need + blocks > cache.allocator.num_free:
                break
            need += blocks
            admitted.append(waiting.popleft())
        for r, t in zip(admitted, engine.prefill(admitted)):
            r.output.append(t)
        for r in [r for r in admitted if r.done]:
            engine.release(r)
        running += [r for r in admitted if not r.done]
        while sum(cache.blocks_needed(r.id, 1) for r in running) > cache.allocator.num_free:
            victim = running.pop()
            engine.preempt(victim)
            waiting.appendleft(victim)
        for r, t in zip(running, engine.decode(running)):
            r.output.append(t)
        for r in [r for r in running if r.done]:
            engine.release(r)
        running = [r for r in running if not r.done]
    return {r.id: r.output for r in requests}


class SharedPrefixCache(PagedKVCache):
    """Prefix sharing: a request forked from another shares the blocks of their common prefix.

    `fork(child, parent, n)`: the child's first n tokens are the parent's. The full blocks among them
    are shared (a reference count per block: a block goes back to the allocator when its last owner
    frees it); the partly filled block, which both would write into next, is copied for the child
    (copy-on-write, done at the fork: it is the only shared block anyone would ever write into)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.refs: dict[int, int] = {}

    def fork(self, child, parent, n: int) -> None:
        b = self.block_size
        full, rest = divmod(n, b)
        need = 1 if rest else 0
        if need > self.allocator.num_free:
            raise OutOfBlocks(f"fork of request {parent} needs {need} block, none is free")
        table = list(self.block_table(parent)[:full])
        for block in table:
            self.refs[block] = self.refs.get(block, 1) + 1
        if rest:
            src, dst = self.block_table(parent)[full], self.allocator.allocate()
            for pools in (self.k_pools, self.v_pools):
                for pool in pools:
                    pool[dst, :rest] = pool[src, :rest]
            table.append(dst)
        self.tables[child], self.lengths[child] = table, n

    def free(self, req_id) -> None:
        for block in self.tables.pop(req_id, []):
            self.refs[block] = self.refs.get(block, 1) - 1
            if self.refs[block] == 0:
                del self.refs[block]
                self.allocator.free(block)
        self.lengths.pop(req_id, None)
