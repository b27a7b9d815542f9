"""Lab 04 reference code on the CPU: quantized decode kernels, quantization, the KV cache, presses;
the learner side (genfast.kvcache, the check helpers, the released notebook)."""
import json
import re

import pytest
import torch
import torch.nn.functional as F

from genfast import checks, kvcache
from genfast.labs import lab04_kv_cache as lab
from genfast.tinylm import load
from kernels import kv_cache as kc
from kernels import kv_press as kp

LAB = "lab04_kv_cache"


@pytest.fixture(scope="module")
def model_tok():
    return load("shakespeare")


def qkv(B, H, H_kv, N, d, seed=0, outlier=True):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(B, H, d, generator=gen), torch.randn(B, H_kv, N, d, generator=gen), torch.randn(B, H_kv, N, d, generator=gen)
    if outlier:
        k[..., 0] *= 10
    return q, k, v


# ---------------------------------------------------------------- quantization
@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("dim", [-1, -2])
def test_round_trip_error_is_at_most_half_a_step(bits, dim):
    x = torch.randn(3, 37, 32) * torch.linspace(0.1, 10, 32)
    codes, scale = kc.quantize_symmetric(x, bits, dim)
    qmax = 2 ** (bits - 1) - 1
    assert codes.dtype == torch.int8 and int(codes.abs().max()) <= qmax
    assert bool(((codes.float() * scale - x).abs() <= scale / 2 + 1e-6).all())


def test_int4_packing_round_trip_and_layout():
    codes = torch.randint(-8, 8, (2, 5, 16), dtype=torch.int8)
    packed = kc.pack_int4(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (2, 5, 8)
    assert torch.equal(kc.unpack_int4(packed), codes)
    assert int(packed[0, 0, 3] & 15) == int(codes[0, 0, 3]) + 8 and int(packed[0, 0, 3] >> 4) == int(codes[0, 0, 11]) + 8


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_cache_bytes_and_error(bits):
    _, k, v = qkv(2, 4, 4, 64, 32)
    cache = kc.quantize_kv(k, v, bits)
    assert cache.nbytes() == kvcache.kv_bytes(2, 4, 64, 32, bits)
    kd, vd = kc.dequantize_kv(cache)
    assert bool(((kd - k).abs() <= cache.k_scale[..., None, :] / 2 + 1e-6).all())   # keys: per channel
    assert bool(((vd - v).abs() <= cache.v_scale[..., :, None] / 2 + 1e-6).all())   # values: per token


# ---------------------------------------------------------------- decode kernels
SHAPES = [(1, 1, 1, 1, 16), (1, 2, 2, 17, 16), (2, 4, 2, 70, 32)]


@pytest.mark.parametrize("B,H,H_kv,N,d", SHAPES)
@pytest.mark.parametrize("bits", [16, 8, 4])
def test_decode_kernel_matches_dequantize_then_attend(B, H, H_kv, N, d, bits):
    q, k, v = qkv(B, H, H_kv, N, d, seed=N + bits)
    if bits == 16:
        got, want = kc.decode_attention_fp16(q, k, v), kvcache.torch_decode_attention(q, k, v)
    else:
        cache = kc.quantize_kv(k, v, bits)
        got, want = kc.decode_attention(q, cache), kc.torch_decode_attention_quantized(q, cache)
    checks.compare(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("block_n,split_len", [(16, 16), (16, 48), (32, 1024)])
def test_decode_kernel_split_sizes(block_n, split_len):
    q, k, v = qkv(1, 2, 2, 70, 16, seed=block_n)
    cache = kc.quantize_kv(k, v, 4)
    checks.compare(kc.decode_attention(q, cache, block_n=block_n, split_len=split_len),
                   kc.torch_decode_attention_quantized(q, cache), atol=1e-5, rtol=1e-4)


def test_decode_kernel_strided_and_fp16_cache():
    q, k, v = qkv(1, 2, 2, 40, 32, seed=3)
    k_strided = k.transpose(1, 2).contiguous().transpose(1, 2)          # (B, N, H, d) memory
    checks.compare(kc.decode_attention_fp16(q, k_strided, v), kvcache.torch_decode_attention(q, k, v), atol=1e-5)
    got = kc.decode_attention_fp16(q.half(), k.half(), v.half())
    assert got.dtype == torch.float16
    checks.compare(got.float(), kvcache.sdpa_decode(q, k, v), atol=1e-2, rtol=1e-2)


def test_combine_is_exact():
    s = torch.randn(3, 50) * 3
    v = torch.randn(3, 50, 8)
    parts = [(torch.softmax(s[:, i:i + 16], -1)[..., None] * v[:, i:i + 16]).sum(1) for i in range(0, 50, 16)]
    lses = [torch.logsumexp(s[:, i:i + 16], -1) for i in range(0, 50, 16)]
    got = kc.combine_splits_torch(torch.stack(parts, 1), torch.stack(lses, 1))
    checks.compare(got, (torch.softmax(s, -1)[..., None] * v).sum(1), atol=1e-6)


def test_bytes_moved():
    assert kvcache.bytes_moved(8, 32, 32768, 128, 16) == 2 * 8 * 32 * 32768 * 128 * 2 + 2 * 8 * 32 * 128 * 2
    assert kvcache.bytes_moved(8, 32, 32768, 128, 4) < kvcache.bytes_moved(8, 32, 32768, 128, 8) < kvcache.bytes_moved(8, 32, 32768, 128, 16) / 1.9


# ---------------------------------------------------------------- the KV cache on the course model
def test_cached_generation_equals_uncached(model_tok):
    model, tok = model_tok
    prompt = tok.encode("ROMEO:\nBut soft").unsqueeze(0).repeat(2, 1)
    cached, cache = kp.generate_cached(model, prompt, 30)
    assert torch.equal(cached, kvcache.generate_uncached(model, prompt, 30))
    assert cache.lengths() == [prompt.shape[1] + 29] * 4


def test_cache_size_formula_matches_tensors(model_tok):
    model, tok = model_tok
    cfg = model.config
    _, cache = kp.generate_cached(model, tok.encode("KING:\n").unsqueeze(0), 20)
    measured = sum(t.numel() * t.element_size() for l in cache.layers for t in (l.k, l.v))
    assert measured == kp.kv_cache_bytes(cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cache.seen, 4)
    assert kp.kv_cache_bytes(32, 32, 128, 32768, 2) == 16 * 2 ** 30          # Llama-2-7B, 32k, fp16
    assert kp.kv_cache_bytes(32, 8, 128, 131072, 2) == 16 * 2 ** 30          # Llama-3-8B, 128k, fp16


# ---------------------------------------------------------------- presses
def random_layer(B=2, H=3, n=40, d=8, w=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    pos = torch.stack([torch.randperm(2 * n, generator=gen)[:n].sort().values for _ in range(B * H)]).reshape(B, H, n)
    return kvcache.LayerCache(torch.randn(B, H, n, d, generator=gen), torch.randn(B, H, n, d, generator=gen), pos,
                         torch.rand(B, H, n, generator=gen), torch.softmax(torch.randn(B, H, w, n, generator=gen), -1))


@pytest.mark.parametrize("press", [kp.SlidingWindow(12), kp.StreamingLLM(12, 4), kp.H2O(12), kp.SnapKV(12)],
                         ids=lambda p: p.name)
def test_eviction_keeps_exactly_the_budget(press):
    layer = random_layer()
    out = press(layer)
    assert out.k.shape[2] == out.v.shape[2] == out.pos.shape[2] == out.acc.shape[2] == out.recent.shape[3] == 12
    assert bool((out.pos.diff(dim=-1) > 0).all()), "kept entries stay in position order"
    newest = layer.pos.amax(-1)
    assert bool((out.pos.amax(-1) == newest).all()), "every eviction press keeps the newest token"
    # the kept k rows are the original rows of those positions
    idx = (layer.pos[..., None, :] == out.pos[..., :, None]).float().argmax(-1)
    assert torch.equal(torch.gather(layer.k, 2, idx[..., None].expand(-1, -1, -1, 8)), out.k)
    assert press(out).k.shape[2] == 12                                   # at the budget: nothing to do


def test_press_specifics():
    layer = random_layer(B=1, H=2, n=30)
    layer.pos = torch.arange(30).expand(1, 2, 30).clone()               # a cache that has evicted nothing yet
    sinks = kp.StreamingLLM(8, sinks=3)(layer)
    assert torch.equal(sinks.pos[..., :3], layer.pos[..., :3]) and torch.equal(sinks.pos[..., 3:], layer.pos[..., -5:])
    assert torch.equal(kp.SlidingWindow(8)(layer).pos, layer.pos[..., -8:])
    h2o = kp.H2O(8, recent=4)(layer)
    assert torch.equal(h2o.pos[..., -4:], layer.pos[..., -4:])
    heavy = layer.acc[..., :-4].topk(4, -1).indices.sort(-1).values
    assert torch.equal(h2o.pos[..., :4], torch.gather(layer.pos, 2, heavy))


def test_quantization_and_pooling_presses_keep_every_token():
    layer = random_layer(n=40)
    for bits in (8, 4):
        out = kp.KIVIQuant(bits, group=16)(layer)
        assert out.k.shape == layer.k.shape
        assert torch.equal(out.k[:, :, 32:], layer.k[:, :, 32:])          # the incomplete group stays exact
        assert torch.allclose(kp.KIVIQuant(bits, group=16)(out).k, out.k, atol=1e-6)   # idempotent
    pooled = kvcache.GQAPool(1)(random_layer(H=4))
    assert torch.allclose(pooled.k[:, 0], pooled.k[:, 3])


def test_needle_retrieval_separates_the_methods():
    assert kvcache.needle_retrieval(None, trials=8) == 1.0
    assert kvcache.needle_retrieval(kp.SlidingWindow(16), trials=8) == 0.0
    assert kvcache.needle_retrieval(kp.SnapKV(16), trials=8) == 1.0
    assert kvcache.needle_retrieval(kp.KIVIQuant(4), trials=8) == 1.0


def test_evaluate_with_and_without_press(model_tok):
    model, tok = model_tok
    toks = kvcache.heldout_windows(tok, 2, 40, seed=1)
    lp_full, _ = kp.evaluate(model, toks, None, prefill=30)
    with torch.no_grad():
        ref = torch.log_softmax(model(toks)[:, 29:-1], -1).gather(-1, toks[:, 30:, None])[..., 0]
    checks.compare(lp_full, ref, atol=1e-4)
    lp_win, _ = kp.evaluate(model, toks, kp.SlidingWindow(8), prefill=30)
    assert lp_win.shape == lp_full.shape and not torch.allclose(lp_win, lp_full)


# ---------------------------------------------------------------- the learner side
def _solution_namespace(grade_id):
    import nbformat
    from autograder import samples
    nb = nbformat.read(samples.notebook_path("solutions", LAB), as_version=4)
    source = next(c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    ns = dict(torch=torch, F=F, kvcache=kvcache)
    exec(samples.solution_code(source), ns)
    return ns


def test_press_forward_on_the_learner_layer_equals_the_reference_forward(model_tok):
    """The learner-side experiment (press_forward on the solution's cached_attention, genfast's
    presses on the reference scores and quantizer) gives the reference numbers."""
    model, tok = model_tok
    forward = kvcache.press_forward(_solution_namespace("kv_cache_forward")["cached_attention"])
    toks = kvcache.heldout_windows(tok, 3, 60, seed=2)
    built = kvcache.eviction_presses(kp.sliding_window_score, kp.streaming_llm_score, kp.h2o_score, kp.snapkv_score)
    pairs = [(None, None)] + [(built[name](12), ref) for name, ref in
                              (("sliding window", kp.SlidingWindow(12)), ("sinks + window", kp.StreamingLLM(12)),
                               ("H2O", kp.H2O(12)), ("SnapKV", kp.SnapKV(12)))]
    pairs += [(kvcache.KIVIQuant(4, quantize=kc.quantize_symmetric), kp.KIVIQuant(4)), (kvcache.GQAPool(2),) * 2]
    for mine, ref in pairs:
        lp_mine, _ = kvcache.evaluate(model, toks, mine, prefill=40, forward=forward)
        lp_ref, _ = kp.evaluate(model, toks, ref, prefill=40)
        checks.compare(lp_mine, lp_ref, atol=1e-4, what=getattr(ref, "name", "full cache"))


def test_one_split_config_and_cache_record_for_the_given_launcher_and_the_reference():
    assert kc.split_config is kvcache.split_config and kc.QuantizedKV is kvcache.QuantizedKV
    assert isinstance(kc.quantize_kv(*qkv(1, 1, 1, 4, 16)[1:], 8), kvcache.QuantizedKV)


def test_checks_pass_the_references_and_fail_a_wrong_score():
    lab.check_press_scores(kp.sliding_window_score, kp.streaming_llm_score, kp.h2o_score, kp.snapkv_score)
    lab.check_quantization(kc.quantize_symmetric, kc.pack_int4, kc.unpack_int4)
    lab.check_decode(kc.decode_attention, 4)
    lab.check_combine(kc.combine_splits_torch)
    with pytest.raises(checks.CheckFailed, match="h2o_score"):
        lab.check_press_scores(kp.sliding_window_score, kp.streaming_llm_score,
                               lambda pos, acc, recent: acc, kp.snapkv_score)
    with pytest.raises(LookupError, match="no expected output is shipped"):
        lab.check_decode(kc.decode_attention, 8, shapes=[(1, 1, 1, 3, 16)])
    lab.check_decode(kc.decode_attention, 8, shapes=[(1, 1, 1, 3, 16)], reference=kc)

def test_released_notebook_names_neither_kernels_nor_the_grader():
    from autograder import samples
    released = json.loads(samples.notebook_path(samples.release_dir(), LAB).read_text())
    for cell in released["cells"]:
        source = "".join(cell["source"])
        assert not re.search(r"\bkernels\b", source), source
        assert "GRADER" not in source, source


@pytest.mark.parametrize("bits", [8, 4])
def test_random_quantized_cache_of_the_speed_cells_is_a_valid_cache(bits):
    cache = kvcache.random_quantized_kv(1, 2, 40, 16, bits, device="cpu", seed=3)
    q = torch.randn(1, 2, 16)
    checks.compare(kc.decode_attention(q, cache), kc.torch_decode_attention_quantized(q, cache), atol=1e-5, rtol=1e-4)
