"""Lab 08 on the CPU: the paged decode and packed prefill kernels (references, in the interpreter), the
paged cache and the scheduler (references), the engine and the baselines (genfast.serving), the check
helpers against plausible bugs, the released notebook."""

import pytest
import torch

from genfast import checks, serving
from genfast.labs import lab08_serving as lab
from genfast.serving import OutOfBlocks
from genfast.tinylm import load
from kernels import kv_cache
from kernels import paged_attention as pa
from kernels import paged_cache as pc
from kernels import paged_prefill as pp

LAB = "lab08_serving"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The course model is tiny: on a shared machine one thread is many times faster than several."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def model_tok():
    return load("shakespeare")


# ---------------------------------------------------------------- the paged decode kernel
@pytest.mark.parametrize("lengths,H,H_kv,block_size", [
    ([1], 2, 2, 16),                   # one token
    ([16], 2, 2, 16),                  # exactly one block
    ([17], 2, 2, 16),                  # one block plus one
    ([100], 4, 1, 16),                 # long: several tiles and splits, GQA 4:1
    ([1, 16, 17, 100], 4, 2, 16),      # very different lengths in one launch
    ([9, 40, 8], 2, 2, 8),             # blocks smaller than the tile: a tile spans blocks
    ([33, 64], 2, 1, 32),              # blocks larger than the tile
])
def test_paged_kernel_matches_the_gathered_cache_at_edge_lengths(lengths, H, H_kv, block_size):
    (kp, vp, tables, lens), contiguous = pa.random_paged_cache(lengths, H_kv, 32, block_size, seed=len(lengths))
    q = torch.randn(len(lengths), H, 32, generator=torch.Generator().manual_seed(1))
    got = pa.paged_decode(q, kp, vp, tables, lens, max(lengths))
    checks.compare(got, pa.contiguous_attention(q, contiguous), atol=1e-5, rtol=1e-4)
    checks.compare(pa.paged_attention_spec(q, kp, vp, tables, lens), pa.contiguous_attention(q, contiguous),
                   atol=1e-5, rtol=1e-4)


def test_a_split_past_the_request_end_stores_zero_and_minus_infinity():
    (kp, vp, tables, lens), _ = pa.random_paged_cache([3, 70], 1, 32, 16)
    o_part, lse_part = pa.paged_partials(torch.randn(2, 1, 32), kp, vp, tables, lens, 70)
    assert o_part.shape[1] == 3                         # splits of 32 for the longest request
    assert torch.isneginf(lse_part[0, 1:]).all() and (o_part[0, 1:] == 0).all()
    assert torch.isfinite(lse_part[1]).all()


def test_paged_config_cuts_a_paged_and_a_contiguous_cache_of_the_same_tokens_alike(monkeypatch):
    from genfast import kvcache, runtime
    monkeypatch.setattr(runtime, "on_gpu", lambda: True)
    monkeypatch.setattr(serving, "_sm_count", lambda: 132)
    monkeypatch.setattr(kvcache, "_sm_count", lambda: 132)
    paged = serving.paged_config(32 * 8, 8192, 4096)
    assert paged["SPLIT_LEN"] == kvcache.split_config(32 * 8, 4096)["SPLIT_LEN"]
    assert paged["BLOCK_N"] == 64 and paged["SPLIT_LEN"] % 64 == 0


# ---------------------------------------------------------------- packed prefill
@pytest.mark.parametrize("lengths", [[1], [5, 17, 1, 40], [16, 16], [64, 3, 33]])
def test_packed_prefill_equals_each_prompt_alone(lengths):
    q, k, v, cu = pp.random_packed(lengths, 2, 32, seed=sum(lengths))
    checks.compare(pp.varlen_attention(q, k, v, cu), pp.varlen_attention_spec(q, k, v, cu), atol=1e-5, rtol=1e-4)
    checks.compare(serving.padded_prefill_spec(q, k, v, cu, max(lengths)), pp.varlen_attention_spec(q, k, v, cu),
                   atol=1e-5, rtol=1e-4)


def test_pack_prompts_and_padding_waste():
    tokens, cu, pos = pp.pack_prompts([[3, 1, 4], [1], [5, 9]])
    assert tokens.tolist() == [3, 1, 4, 1, 5, 9] and cu.dtype == torch.int32 and cu.tolist() == [0, 3, 4, 6]
    assert pos.tolist() == [0, 1, 2, 0, 0, 1]
    w = serving.padding_waste([1, 3])
    assert w["rows_padded"] == 6 and w["rows_packed"] == 4 and w["scores_padded"] == 12 and w["scores_packed"] == 7
    assert serving.padding_waste([8, 8])["scores_wasted"] == 0


# ---------------------------------------------------------------- the cache and the scheduler
def test_cache_appends_frees_and_refuses_whole():
    cache = pc.PagedKVCache(1, 4, 4, 1, 2)
    assert cache.append_slots(0, 5) == [0, 1, 2, 3, 4] and cache.block_table(0) == [0, 1]
    assert cache.blocks_needed(0, 3) == 0 and cache.blocks_needed(0, 4) == 1
    with pytest.raises(OutOfBlocks):
        cache.append_slots(1, 9)
    assert cache.allocator.num_free == 2 and cache.length(1) == 0
    cache.free(0)
    assert cache.allocator.num_free == 4 and cache.block_table(0) == []


def _tight_run(model, requests, num_blocks):
    cache = pc.PagedKVCache(4, num_blocks, 16, 4, 32)
    engine = serving.Engine(model, cache, pack_prompts=pp.pack_prompts)
    out = pc.serve(engine, serving.fresh(requests))
    return out, engine, cache


def test_scheduler_invariant_outputs_equal_generating_alone_and_blocks_are_never_shared(model_tok):
    model, tok = model_tok
    requests = lab.scheduler_workload()
    out, engine, cache = _tight_run(model, requests, 12)
    alone = {r.id: serving.generate_alone(model, r.prompt, r.max_new) for r in requests}
    assert out == alone
    assert cache.allocator.num_free == 12 and not cache.tables
    assert sum(len(s["preempted"]) for s in engine.trace) > 0
    for s in engine.trace:
        held = [b for blocks in s["tables"].values() for b in blocks]
        assert len(held) == len(set(held)), f"step {s['step']}: a block is in two tables"
        assert len(held) + s["free_blocks"] == 12
        for n, nb in zip(s["lengths"], s["blocks"]):
            assert (nb - 1) * 16 < n <= nb * 16     # less than one block wasted per request
    arrival = {r.id: r.arrival for r in requests}
    assert all(arrival[i] <= s["step"] for s in engine.trace for i in s["admitted"])


def test_memory_report_counts_slots_over_steps():
    trace = [dict(step=0, running=[0, 1], lengths=[5, 17], blocks=[1, 2], reserved_max=[10, 20]),
             dict(step=1, running=[1], lengths=[18], blocks=[2], reserved_max=[20])]
    r = serving.memory_report(trace, 16, 128)
    assert r["used"] == 40 and r["paged"] == 80 and r["contiguous_max"] == 384 and r["contiguous_request"] == 50
    assert r["paged_waste"] == 0.5 and r["peak_batch"] == 2


def test_the_three_schedules_give_the_same_tokens(model_tok):
    model, tok = model_tok
    requests = serving.workload(tok, 6, seed=3, new_range=(2, 12))
    outs = []
    for schedule, args in ((serving.serve_one_at_a_time, ()), (serving.serve_static, (3,)), (pc.serve, ())):
        cache = pc.PagedKVCache(4, 64, 16, 4, 32)
        res = serving.timed(schedule, serving.Engine(model, cache, pack_prompts=pp.pack_prompts), requests, *args)
        assert cache.allocator.num_free == 64
        outs.append((res["outputs"], res["steps"]))
    assert outs[0][0] == outs[1][0] == outs[2][0]
    assert outs[2][1] <= outs[1][1] < outs[0][1]        # continuous <= static < one at a time, in steps


def test_engine_on_the_reference_kernels_generates_the_same_tokens(model_tok):
    model, tok = model_tok
    requests = [serving.Request(0, tok.encode("ROMEO:\nBut").tolist(), 2), serving.Request(1, tok.encode("To").tolist(), 2)]
    cache = pc.PagedKVCache(4, 8, 16, 4, 32)
    engine = serving.Engine(model, cache, pa.paged_decode, pp.varlen_attention, pp.pack_prompts)
    out = pc.serve(engine, serving.fresh(requests))
    assert out == {r.id: serving.generate_alone(model, r.prompt, 2) for r in requests}


# ---------------------------------------------------------------- the check helpers
def test_checks_pass_the_references():
    lab.check_paged_cache(pc.BlockAllocator, pc.PagedKVCache)
    lab.check_paged_decode(pa.paged_decode)
    lab.check_combine(kv_cache.combine_splits_torch)
    lab.check_packed_prefill(pp.pack_prompts, pp.varlen_attention)


class _LeakyCache(pc.PagedKVCache):
    """Allocates before checking that the pool can hold the append (blocks leak on OutOfBlocks)."""

    def append_slots(self, req_id, n):
        table = self.tables.setdefault(req_id, [])
        for _ in range(self.blocks_needed(req_id, n)):
            table.append(self.allocator.allocate())
        start = self.length(req_id)
        self.lengths[req_id] = start + n
        return [table[t // self.block_size] * self.block_size + t % self.block_size for t in range(start, start + n)]


class _ForgetfulCache(pc.PagedKVCache):
    """free forgets the table but never returns the blocks."""

    def free(self, req_id):
        self.tables.pop(req_id, None)
        self.lengths.pop(req_id, None)


class _SilentAllocator(pc.BlockAllocator):
    def allocate(self):
        return self.free_list.popleft() if self.free_list else -1


def test_cache_check_catches_plausible_bugs():
    with pytest.raises(checks.CheckFailed, match="all or nothing"):
        lab.check_paged_cache(pc.BlockAllocator, _LeakyCache)
    with pytest.raises(checks.CheckFailed, match="free returns every block"):
        lab.check_paged_cache(pc.BlockAllocator, _ForgetfulCache)
    with pytest.raises(checks.CheckFailed, match="must raise serving.OutOfBlocks"):
        lab.check_paged_cache(_SilentAllocator, pc.PagedKVCache)


def test_decode_check_names_the_last_block_when_every_block_is_taken_as_full():
    def full_blocks(q, kp, vp, tables, lens, max_len):   # reads the unused slots of the last block
        bs = kp.shape[1]
        return serving.paged_attention_spec(q, kp, vp, tables, (lens + bs - 1) // bs * bs)
    with pytest.raises(checks.CheckFailed, match="Lengths that fill whole blocks pass"):
        lab.check_paged_decode(full_blocks)


def test_combine_check_catches_an_unweighted_mean():
    with pytest.raises(checks.CheckFailed, match="exp\\(lse_s - LSE\\)"):
        lab.check_combine(lambda o_part, lse_part: o_part.mean(dim=-2))


def test_prefill_check_catches_attention_across_prompts():
    def across(q, k, v, cu, max_len):                      # causal over the whole packed sequence
        T = q.shape[0]
        return serving.varlen_attention_spec(q, k, v, torch.tensor([0, T], dtype=torch.int32))
    with pytest.raises(checks.CheckFailed, match="the first prompt is right"):
        lab.check_packed_prefill(pp.pack_prompts, across)

    def no_positions(prompts):
        tokens, cu, pos = pp.pack_prompts(prompts)
        return tokens, cu, torch.arange(len(tokens))
    with pytest.raises(checks.CheckFailed, match="positions"):
        lab.check_packed_prefill(no_positions, pp.varlen_attention)


def test_scheduler_check_catches_static_batching_and_leaks():
    with pytest.raises(checks.CheckFailed, match="static batching"):
        lab.check_scheduler(lambda engine, reqs, max_batch: serving.serve_static(engine, reqs, 4),
                            pc.PagedKVCache, pp.pack_prompts)

    def never_releases(engine, reqs, max_batch):
        engine.release = lambda r: None
        return pc.serve(engine, reqs, max_batch)
    with pytest.raises(checks.CheckFailed, match="blocks still in use"):
        lab.check_scheduler(never_releases, pc.PagedKVCache, pp.pack_prompts)


def test_scheduler_check_stops_a_scheduler_that_never_ends():
    def idle_forever(engine, reqs, max_batch):
        while True:
            engine.decode([])
    with pytest.raises(checks.CheckFailed, match="without finishing"):
        lab.check_scheduler(idle_forever, pc.PagedKVCache, pp.pack_prompts)


# ---------------------------------------------------------------- the notebooks
def test_reference_solution_passes_the_code_policy():
    from autograder import grading, samples
    from genfast import policy
    nb = samples.make_sample(LAB, "reference")
    assert policy.check_notebook(nb, LAB, grading.released_notebook(LAB)) == []

def test_samples_apply_to_the_solution():
    from autograder import samples
    assert samples.cell_limit(LAB, "hangs") == {"seconds": 3, "names": ["serve"]}
    for student in ("buggy", "hangs"):
        samples.make_sample(LAB, student)


# ---------------------------------------------------------------- the figures of course/08_serving/notes.md
def test_notes_decode_step_table_and_batching_gain():
    from genfast import kvcache
    weights, per_request = 16.06e9, kvcache.kv_bytes_per_token(32, 8, 128) * 1024   # Llama-3-8B fp16, 1k tokens
    assert per_request == 128 * 2 ** 20
    rows = {1: (4.8, 207), 8: (5.1, 1564), 64: (7.4, 8698), 256: (15.1, 17009)}
    for B, (ms, tps) in rows.items():
        t = kvcache.decode_step_time(weights, per_request, B, 3.35e12)
        assert round(t * 1e3, 1) == ms and round(B / t) == tps


def test_notes_paged_waste_is_half_a_block_per_request():
    # lengths spread evenly over the positions inside a block: (b - 1) / 2 empty slots in the last block
    b = 16
    empty = [(-n) % b for n in range(1, 16 * 1000 + 1)]
    assert sum(empty) / len(empty) == (b - 1) / 2
    assert 7.5 / 200 < 0.04                    # under 4% from a few hundred tokens on (vLLM's figure)


def test_notes_padding_example():
    w = serving.padding_waste([5, 100])
    assert abs(w["rows_wasted"] - 0.475) < 1e-12 and round(w["scores_wasted"], 2) == 0.50


def test_prefix_sharing_bonus_check_passes_the_reference_and_catches_an_early_free():
    lab.check_prefix_sharing(pc.SharedPrefixCache)

    class FreesSharedBlocks(pc.SharedPrefixCache):
        free = pc.PagedKVCache.free                   # ignores the reference counts
    with pytest.raises(checks.CheckFailed, match="LAST owner"):
        lab.check_prefix_sharing(FreesSharedBlocks)
