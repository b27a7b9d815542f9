"""Checks for lab04_kv_cache: the KV cache of the course model, the eviction scores, the quantizer and
the int4 packing, the split-K decode kernel over an fp16 / int8 / int4 cache.

The cache checks need no reference: cached logits must equal one full forward, cached greedy tokens
the uncached ones (`genfast.kvcache.generate_uncached`), and the measured cache the size formula.
The scores and the quantizer are answers themselves, so the visible checks compare with expected
outputs shipped in genfast/fixtures (the entries each press keeps, the codes, scales and bytes);
the quantized caches of the visible decode checks are shipped too (quantizing them here would take
the answer), and the decode output is compared with the plain torch spec of attention over the
dequantized cache. The grader passes the instructor's modules as `reference` and checks more cases.
"""
from __future__ import annotations

import torch

from genfast import bench, checks, fixtures, runtime
from genfast.compile_info import KernelSignature
from genfast.kvcache import (LayerCache, QuantizedKV, bytes_moved, eviction_presses, generate_uncached,
                             quantize_symmetric, random_quantized_kv, sdpa_decode, torch_decode_attention)

LAB = "lab04_kv_cache"
GiB = 2 ** 30


def _expected(key: str, shape_note: str):
    return fixtures.load(LAB, key, what=shape_note)


# 1. the KV cache --------------------------------------------------------------------
def check_kv_cache(kv_cache_bytes, forward_with_cache, generate_with_cache, extra=False):
    """The size formula on two real models; prefill + 6 cached steps against one full forward; 30
    greedy tokens with the cache against without; the measured cache against the formula."""
    from genfast.tinylm import load
    model, tok = load("shakespeare")
    cfg = model.config
    checks.check_value("Llama-2-7B, 32k tokens, fp16 (GiB)", lambda: kv_cache_bytes(32, 32, 128, 32768, 2) / GiB,
                       expected=16.0, hint="2 (K and V) x layers x kv heads x head dim x tokens x bytes")
    checks.check_value("Llama-3-8B, 128k tokens, fp16 (GiB)", lambda: kv_cache_bytes(32, 8, 128, 131072, 2) / GiB,
                       expected=16.0)
    prompt = tok.encode("ROMEO:\nBut soft, what light").unsqueeze(0).repeat(2, 1)
    with torch.no_grad():
        full_logits = model(torch.cat([prompt, tok.encode("hrough").unsqueeze(0).repeat(2, 1)], 1))
        past = [None] * cfg.n_layer
        step_logits = [checks.call(forward_with_cache, model, prompt, past, name="cached_attention")[:, -1]]
        for ch in "hrough":
            step = checks.call(forward_with_cache, model, tok.encode(ch).unsqueeze(0).repeat(2, 1), past,
                               name="cached_attention", case=f"cached step '{ch}'")
            step_logits.append(step[:, -1])
    checks.compare(torch.stack(step_logits, 1), full_logits[:, prompt.shape[1] - 1:], atol=1e-4,
                   what="logits of prefill + 6 cached steps vs one full forward",
                   hint="the new queries see every cached key and the new keys up to themselves: mask tril(n)")
    print("cached steps give the same logits as the full forward")
    cached_tokens, past = checks.call(generate_with_cache, model, prompt, 30, name="generate_with_cache")
    checks.check_equal(cached_tokens, generate_uncached(model, prompt, 30),
                       what="greedy tokens with the cache vs without", hint="append the new k, v after the cached ones")
    measured = sum(t.numel() * t.element_size() for kv in past for t in kv) // prompt.shape[0]
    checks.check_value("measured cache bytes per sequence", lambda: measured,
                       expected=kv_cache_bytes(cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head,
                                               cached_tokens.shape[1] - 1, 4))
    print(tok.decode(cached_tokens[0]))
    if extra:
        checks.check_value("kv_cache_bytes(1, 1, 1, 1, 1)", kv_cache_bytes, 1, 1, 1, 1, 1, expected=2)
        long_prompt = tok.encode("KING HENRY:\nOnce more unto the breach, dear friends, once more;\n").unsqueeze(0)
        cached = checks.call(generate_with_cache, model, long_prompt, 30, name="generate_with_cache")[0]
        checks.check_equal(cached, generate_uncached(model, long_prompt, 30),
                           what="greedy tokens with the cache vs without (longer prompt)")


# 2. eviction scores -----------------------------------------------------------------
SCORE_SHAPES = [(1, 1, 10, 6), (2, 3, 40, 16)]   # (B, H, n, budget) of the visible check
SCORE_HINT = ("sinks: the first positions; recent window: relative to each head's LAST position; "
              "SnapKV: sum over the window's queries, then max-pool with padding kernel // 2")
SCORE_NAMES = ("sliding_window_score", "streaming_llm_score", "h2o_score", "snapkv_score")


def random_layer(B, H, n, w=6, seed=0, span=None) -> dict:
    """pos (sorted distinct positions per head), acc and recent of a cache that has evicted."""
    gen = torch.Generator().manual_seed(seed)
    span = span or 2 * n
    pos = torch.stack([torch.randperm(span, generator=gen)[:n].sort().values for _ in range(B * H)]).reshape(B, H, n)
    return dict(pos=pos, acc=torch.rand(B, H, n, generator=gen) * 5,
                recent=torch.softmax(torch.randn(B, H, w, n, generator=gen) * 3, dim=-1))


def kept(score, budget):
    return score.topk(budget, dim=-1).indices.sort(dim=-1).values


def score_args(name, s, budget):
    """The arguments each score gets in the check: sinks 4, H2O's window budget // 2, SnapKV's 3 and 5."""
    return {"sliding_window_score": (s["pos"],), "streaming_llm_score": (s["pos"], 4),
            "h2o_score": (s["pos"], s["acc"], budget // 2), "snapkv_score": (s["pos"], s["recent"], 3, 5)}[name]


def _shape_key(shape) -> str:
    return "x".join(str(x) for x in shape)


def check_press_scores(sliding_window_score, streaming_llm_score, h2o_score, snapkv_score,
                       shapes=SCORE_SHAPES, reference=None):
    """The entries each score keeps with each budget equal the reference's; then the four presses
    built on your scores keep exactly their budget."""
    mine = dict(zip(SCORE_NAMES, (sliding_window_score, streaming_llm_score, h2o_score, snapkv_score)))
    for B, H, n, budget in shapes:
        s = random_layer(B, H, n, seed=n + budget)
        for name in SCORE_NAMES:
            args = score_args(name, s, budget)
            got = checks.call(mine[name], *args, name=name)
            if not (isinstance(got, torch.Tensor) and got.shape == s["pos"].shape):
                raise checks.CheckFailed(f"{name}: expected a score tensor of shape {tuple(s['pos'].shape)}, "
                                         f"got {checks._describe(got)}")
            if reference is not None:
                want = kept(getattr(reference, name)(*args), budget)
            else:
                want = _expected(f"kept/{_shape_key((B, H, n, budget))}/{name}", f"{name} with B={B} H={H} n={n}")
            checks.check_equal(kept(got, budget), want,
                               what=f"{name}: entries kept with budget {budget} of {n} (B={B} H={H})", hint=SCORE_HINT)
        print(f"  ok  B={B} H={H} n={n} budget={budget}: all four presses keep the same entries")
    layer = LayerCache(torch.randn(2, 3, 40, 8), torch.randn(2, 3, 40, 8), **random_layer(2, 3, 40))
    for make in eviction_presses(*mine.values()).values():
        press = make(12)
        out = checks.call(press, layer, name=press.name)
        if out.k.shape[2] != 12:
            raise checks.CheckFailed(f"{press.name} kept {out.k.shape[2]} entries, expected the budget 12")
    print("every press keeps exactly its budget")


# 3. quantization and int4 packing ---------------------------------------------------
QUANTIZE_CASES = [((3, 16), 8, -1), ((2, 10, 16), 8, -2), ((2, 10, 16), 4, -1), ((4, 8), 4, -2), ((3, 16), 2, -1)]
PACK_SHAPES = [(2, 16), (3, 5, 8)]
QUANTIZE_HINT = ("per slice along `dim`: minimum = min x, scale = (max x - minimum) / (2^bits - 1), both kept as "
                 "size-1 dims; codes = round((x - minimum) / scale) clamped to [0, 2^bits - 1], as uint8 (a constant "
                 "slice has scale 0: divide by scale.clamp_min(1e-12))")


def quantize_input(shape, bits):
    x = checks.randn(*shape, seed=sum(shape) + bits)
    x[..., 0] *= 20                                     # an outlier channel
    return x


def packing_input(shape):
    gen = torch.Generator().manual_seed(shape[-1])
    return torch.randint(0, 16, shape, generator=gen, dtype=torch.uint8)


def check_quantization(quantize, pack_int4, unpack_int4, cases=QUANTIZE_CASES, pack_shapes=PACK_SHAPES,
                       reference=None):
    """quantize(x, bits, dim) -> (codes, scale, minimum), asymmetric, against the expected outputs;
    its round-trip error within scale / 2 (and next to the symmetric baseline's); pack / unpack."""
    for shape, bits, dim in cases:
        x = quantize_input(shape, bits)
        out = checks.call(quantize, x, bits, dim, name="quantize")
        if not (isinstance(out, tuple) and len(out) == 3):
            raise checks.CheckFailed(f"quantize must return a tuple (codes, scale, minimum), got {checks._describe(out)}"
                                     + (f" of length {len(out)}" if isinstance(out, tuple) else ""))
        codes, scale, minimum = out
        what = f"{tuple(shape)} int{bits} along dim {dim}"
        if reference is not None:
            ref_codes, ref_scale, ref_min = reference.quantize_asymmetric(x, bits, dim)
        else:
            key = f"quantize/{_shape_key(shape)}/int{bits}/dim{dim}"
            ref_codes, ref_scale, ref_min = (_expected(f"{key}/{f}", f"quantize of {what}")
                                             for f in ("codes", "scale", "minimum"))
        checks.compare(minimum, ref_min, atol=1e-7, rtol=1e-6, what=f"minimum of {what}", hint=QUANTIZE_HINT)
        checks.compare(scale, ref_scale, atol=1e-7, rtol=1e-6, what=f"scale of {what}", hint=QUANTIZE_HINT)
        if codes.dtype != torch.uint8:
            raise checks.CheckFailed(f"codes of {what}: dtype {codes.dtype}, expected torch.uint8. {QUANTIZE_HINT}")
        checks.check_equal(codes.to(torch.int64), ref_codes.to(torch.int64), what=f"codes of {what}", hint=QUANTIZE_HINT)
        err = (codes.float() * scale + minimum - x).abs()
        if not bool((err <= scale / 2 + 1e-6).all()):
            raise checks.CheckFailed(f"quantize {what}: round-trip error {err.max().item():.3g} exceeds scale / 2")
        sym_codes, sym_scale = quantize_symmetric(x, bits, dim)
        sym_err = (sym_codes.float() * sym_scale - x).abs()
        print(f"  ok  quantize {tuple(shape)} int{bits} dim={dim}: max error {err.max().item():.3g} <= scale/2, "
              f"mean error {err.mean().item():.3g} (symmetric baseline: {sym_err.mean().item():.3g})")
    for shape in pack_shapes:
        codes = packing_input(shape)
        packed = checks.call(pack_int4, codes, name="pack_int4")
        want = reference.pack_int4(codes) if reference is not None else \
            _expected(f"pack/{_shape_key(shape)}", f"pack_int4 of {tuple(shape)}")
        checks.check_equal(packed.to(torch.int64), want.to(torch.int64), what=f"pack_int4 of {tuple(shape)}",
                           hint="low nibble = code of channel j, high nibble = code of channel j + d/2; the result is uint8")
        checks.check_equal(checks.call(unpack_int4, packed, name="unpack_int4").to(torch.int64), codes.to(torch.int64),
                           what=f"unpack_int4(pack_int4(codes)) of {tuple(shape)}")
        print(f"  ok  pack/unpack {tuple(shape)}: {codes.numel()} codes in {packed.numel()} bytes")


# 4. the decode kernel ---------------------------------------------------------------
# (B, H, H_kv, N, d[, residual]) of the visible checks, per cache format; the quantized caches
# have key groups of DECODE_GROUP tokens and a window of DECODE_RESIDUAL (or the 6th entry) tokens
DECODE_SHAPES = {
    16: [(1, 1, 1, 1, 32), (1, 2, 2, 37, 32), (2, 4, 1, 100, 32)],
    8: [(1, 1, 1, 1, 32), (1, 2, 2, 40, 32), (1, 4, 2, 70, 32)],
    4: [(1, 1, 1, 1, 32), (1, 2, 2, 45, 32), (2, 4, 1, 64, 32)],
}
DECODE_GROUP, DECODE_RESIDUAL = 16, 16
DECODE_NAMES = {16: "decode (unquantized cache)", 8: "decode (int8 cache)", 4: "decode (int4 cache)"}
DECODE_HINT = ("if N <= 32 (one split) passes and longer fails, look at combine_splits: weights exp(lse_s - LSE); "
               "if N <= 16 passes, at the online softmax (alpha rescales acc and l, per query row); if only the "
               "last tokens fail, mask the loads with ok and the scores with -inf; if H_kv < H fails, the G query "
               "rows of a KV head are rows kv_row * G + g of Q, O_PART and LSE_PART; int8: the key scale multiplies q "
               "and q . minimum is added to the scores, the value scale multiplies p and sum(p * minimum) is added to acc")
INT4_HINT = ("byte j holds the code of channel j in the LOW nibble and of channel j + d/2 in the HIGH nibble: "
             "byte & 15 is the first half of the row, byte >> 4 the second; the same for the values")


def decode_dtype():
    return torch.float16 if runtime.on_gpu() else torch.float32


def decode_tolerance(dtype) -> dict:
    """fp16 on a GPU: the dots run on tensor cores in fp16 (q x scale and p x scale rounded to
    fp16), fp32 accumulation; fp32 in the interpreter, exact products."""
    return dict(atol=1e-2, rtol=1e-2) if dtype == torch.float16 else dict(atol=1e-5, rtol=1e-4)


def decode_kv(B, H_kv, N, d, dtype=torch.float32):
    """The cache of a decode case: keys with an outlier channel, values."""
    k = checks.randn(B, H_kv, N, d, seed=N + 1, dtype=dtype)
    k[..., 1] *= 8
    return k, checks.randn(B, H_kv, N, d, seed=N + 2, dtype=dtype)


def decode_residual(shape) -> int:
    return shape[5] if len(shape) > 5 else DECODE_RESIDUAL


def _decode_case(shape, bits, dtype, reference):
    """(inputs of decode, expected output) of one case."""
    B, H, H_kv, N, d = shape[:5]
    q = checks.randn(B, H, d, seed=N, dtype=dtype)
    if bits == 16:
        k, v = decode_kv(B, H_kv, N, d, dtype)
        spec = reference.torch_decode_attention if reference is not None else torch_decode_attention
        return dict(q=q, cache=(k, v)), spec(q, k, v).to(dtype)
    if reference is not None:
        cache = reference.quantize_kv(*decode_kv(B, H_kv, N, d, dtype), bits, DECODE_GROUP, decode_residual(shape))
        return dict(q=q, cache=cache), reference.torch_decode_attention_quantized(q, cache).to(dtype)
    key = f"decode/int{bits}/{_shape_key(shape)}"
    field = lambda f: _expected(f"{key}/{f}", f"the int{bits} decode case {shape}").to(q.device)
    cache = QuantizedKV(*(field(f) for f in ("k", "v", "k_scale", "k_min", "v_scale", "v_min")),
                        field("k_res").to(dtype), field("v_res").to(dtype), bits, DECODE_GROUP)
    return dict(q=q, cache=cache), torch_decode_attention(q, field("kd"), field("vd")).to(dtype)


def check_decode(decode, bits, shapes=None, reference=None):
    """decode(q, cache) against attention over the (dequantized) cache: fp16 inputs on a GPU, fp32 in
    the interpreter."""
    dtype = decode_dtype()
    tol = decode_tolerance(dtype)
    name, hint = DECODE_NAMES[bits], INT4_HINT if bits == 4 else DECODE_HINT
    shapes = DECODE_SHAPES[bits] if shapes is None else shapes
    print(checks.precision(dtype, **tol) + ("" if bits == 16 else f" (against the dequantized int{bits} cache)"))
    for shape in shapes:
        B, H, H_kv, N, d = shape[:5]
        case = f"B={B} H={H} H_kv={H_kv} N={N} d={d} " + (str(dtype)[6:] if bits == 16 else
                                                            f"int{bits} window {decode_residual(shape)}")
        inputs, expected = _decode_case(shape, bits, dtype, reference)
        actual = checks.call(decode, name=name, case=case, hint=hint, **inputs)
        max_abs = checks.compare(actual, expected, what=f"{name}, case '{case}'", hint=hint, **tol)
        print(f"  ok  {case:<50} max abs error {max_abs:.2e}")
    print(f"{name}: all {len(shapes)} cases passed.")


def check_combine(combine_splits):
    """Three splits with values 0, 1, 2 and masses 1, 2, 1 combine to 1; an empty split (lse -inf,
    o = 0) weighs nothing."""
    o_part = torch.ones(2, 3, 4) * torch.arange(3.0)[None, :, None]
    got = checks.call(combine_splits, o_part, torch.log(torch.tensor([[1.0, 2.0, 1.0]] * 2)), name="combine_splits")
    checks.compare(got, torch.ones(2, 4), atol=1e-6, what="combine_splits of splits 0, 1, 2 with masses 1, 2, 1")
    o_part = torch.cat([o_part, torch.zeros(2, 1, 4)], dim=1)
    lse = torch.log(torch.tensor([[1.0, 2.0, 1.0, 0.0]] * 2))
    got = checks.call(combine_splits, o_part, lse, name="combine_splits")
    checks.compare(got, torch.ones(2, 4), atol=1e-6, what="combine_splits with a fourth, empty split (lse = -inf)",
                   hint="weights exp(lse_s - LSE): exp(-inf) = 0; never compute -inf - -inf")


SPEED_SHAPE = (8, 32, 32768, 128)   # B, H, N, d: 2 GiB of fp16 K (and V) per cache


def decode_kernel_signature(bits: int) -> KernelSignature:
    """The learner's split-K, GQA-aware decode kernel over an fp16 cache or the int8 / packed-int4
    codes of a KIVI cache, d = 128, query tile of 16 rows (up to 16 query heads per KV head), as
    compiled for a GPU (genfast.kvcache.split_config there: 64-token tiles, 8 warps, 2 stages)."""
    cache = {16: "*fp16", 8: "*u8", 4: "*u8"}[bits]
    return KernelSignature(
        "decode_split_kernel", {"Q": "*fp16", "K": cache, "V": cache, "KS": "*fp32", "KM": "*fp32", "VS": "*fp32",
                                "VM": "*fp32", "O_PART": "*fp32", "LSE_PART": "*fp32"},
        lambda: [dict(BLOCK_N=64, HALF=64, BLOCK_G=16, BITS=bits, num_warps=8, num_stages=2)], {"sm_scale": "fp32"},
        reference=f"kv_cache._decode_split_kernel int{bits} (reference)")


def speed_decode(decode, bits, reference=None):
    """Speed points of decode(q, cache) over an int8 / int4 cache of SPEED_SHAPE, fresh inputs made on
    the GPU for every timed call (random codes and scales: the time does not depend on them)."""
    B, H, N, d = SPEED_SHAPE
    inputs = lambda seed: (bench.randn(B, H, d, seed=seed, dtype=torch.float16),
                           random_quantized_kv(B, H, N, d, bits, device="cuda", seed=seed + 1))
    return bench.speed_points(decode, reference, inputs=inputs, points=1,
                              name=f"int{bits} decode attention (B=8 H=32 N=32768 d=128)",
                              signature=decode_kernel_signature(bits))


def decode_vs_sdpa(decode):
    """The traffic and ideal time of a decode-attention step per cache format, multi-head and GQA
    (8 KV heads), and (on a GPU) your kernel against torch's fp16 SDPA."""
    B, H, N, d = SPEED_SHAPE
    for H_kv in (H, 8):
        for bits in (16, 8, 4):
            nbytes = bytes_moved(B, H, N, d, bits, H_kv=H_kv)
            line = (f"H_kv = {H_kv:>2} {'fp16' if bits == 16 else f'int{bits}':>5}: {nbytes / 1e9:5.2f} GB per step -> "
                    f"{nbytes / 2.55e12 * 1e3:5.2f} ms at 2.55 TB/s")
            if H_kv < H:
                once_per_head = bytes_moved(B, H, N, d, bits, H_kv=H_kv, per_query_head=True)
                line += f"  (a program per query head would read {once_per_head / 1e9:5.2f} GB)"
            print(line)
    if not runtime.on_gpu():
        print("(timings need a GPU)")
        return
    torch.manual_seed(0)
    q = torch.randn(B, H, d, device=runtime.device(), dtype=torch.float16)
    k, v = (torch.randn(B, H, N, d, device=runtime.device(), dtype=torch.float16) for _ in range(2))
    fp16_sdpa = bench.time_gpu(lambda: sdpa_decode(q, k, v))
    del k, v
    for bits in (8, 4):
        cache = random_quantized_kv(B, H, N, d, bits)
        t = bench.time_gpu(lambda: decode(q, cache))
        print(f"your int{bits} kernel: {t}  vs torch fp16 SDPA decode {fp16_sdpa}: "
              f"{fp16_sdpa.median_ms / t.median_ms:.2f}x")
        del cache

