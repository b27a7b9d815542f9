"""The similarity report on planted lab00 submissions: a disguised copy is flagged, two
honest solutions written independently are not, the untouched lab is left out."""
import csv
import hashlib
import re

import nbformat
import pytest

from autograder import samples, similarity

LAB = "lab00_triton_warmup"
STUB = "    # YOUR CODE HERE\n    raise NotImplementedError()"

# Two honest solutions, written apart from the reference: different loops, names and formulas.
BOB = {
    "add_kernel": ["""\
    start = tl.program_id(0) * BLOCK_SIZE
    idx = start + tl.arange(0, BLOCK_SIZE)
    inside = idx < n_elements
    tl.store(out_ptr + idx, tl.load(x_ptr + idx, mask=inside) + tl.load(y_ptr + idx, mask=inside), mask=inside)"""],
    "softmax_kernel": ["""\
    # three passes: the max, then the sum of exponentials, then the output
    row_max = tl.full((), float("-inf"), tl.float32)
    for off in range(0, n_cols, BLOCK):
        vals = tl.load(x_row + off + cols, mask=off + cols < n_cols, other=float("-inf"))
        row_max = tl.maximum(row_max, tl.max(vals.to(tl.float32), axis=0))
    total = tl.full((), 0.0, tl.float32)
    for off in range(0, n_cols, BLOCK):
        vals = tl.load(x_row + off + cols, mask=off + cols < n_cols, other=float("-inf"))
        total += tl.sum(tl.exp(vals.to(tl.float32) - row_max), axis=0)
    for off in range(0, n_cols, BLOCK):
        ok = off + cols < n_cols
        vals = tl.load(x_row + off + cols, mask=ok, other=0.0).to(tl.float32)
        result = tl.exp(vals - row_max) / total
        tl.store(out_row + off + cols, result.to(out_ptr.dtype.element_ty), mask=ok)"""],
    "matmul_kernel": ["""\
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in range(0, tl.cdiv(K, BLOCK_K)):
        offs_k = step * BLOCK_K + tl.arange(0, BLOCK_K)
        a_tile = tl.load(a_ptr + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak,
                         mask=(offs_m[:, None] < M) & (offs_k[None, :] < K), other=0.0)
        b_tile = tl.load(b_ptr + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn,
                         mask=(offs_k[:, None] < K) & (offs_n[None, :] < N), other=0.0)
        acc += tl.dot(a_tile, b_tile)
    result = acc.to(c_ptr.dtype.element_ty)
    in_c = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn, result, mask=in_c)"""],
    "roofline": ["""\
    flops = n
    bytes_moved = 2 * n * bytes_per_element + n * bytes_per_element  # two reads, one write
    return flops, bytes_moved""", """\
    flops = M * N * K * 2
    reads = (M * K + K * N) * bytes_per_element
    writes = M * N * bytes_per_element
    return flops, reads + writes""", """\
    intensity = flops / bytes_moved
    if intensity * bandwidth < peak_flops:
        return intensity * bandwidth
    return peak_flops"""],
    "block_sum_kernel": ["""\
    if i < x.size:
        shared[tid] = x[i]
    else:
        shared[tid] = 0.0
    cuda.syncthreads()
    s = 1
    while s < THREADS:  # interleaved pairs: thread 0 adds 1, then 2, then 4, ...
        if tid % (2 * s) == 0:
            shared[tid] += shared[tid + s]
        cuda.syncthreads()
        s *= 2
    if tid == 0:
        partial[cuda.blockIdx.x] = shared[0]"""],
}

CAROL = {
    "add_kernel": ["""\
    first = tl.program_id(axis=0) * BLOCK_SIZE
    where = tl.arange(0, BLOCK_SIZE) + first
    a = tl.load(x_ptr + where, mask=where < n_elements, other=0.0)
    b = tl.load(y_ptr + where, mask=where < n_elements, other=0.0)
    total = a + b
    tl.store(out_ptr + where, total, mask=where < n_elements)"""],
    "softmax_kernel": ["""\
    big = tl.full((), -float("inf"), tl.float32)
    acc = tl.full((), 0.0, tl.float32)
    pos = 0
    while pos < n_cols:
        valid = cols + pos < n_cols
        chunk = tl.where(valid, tl.load(x_row + cols + pos, mask=valid, other=0.0).to(tl.float32), -float("inf"))
        new_big = tl.maximum(tl.max(chunk, axis=0), big)
        acc = acc * tl.exp(big - new_big)
        acc = acc + tl.sum(tl.exp(chunk - new_big), axis=0)
        big = new_big
        pos += BLOCK
    pos = 0
    while pos < n_cols:
        valid = cols + pos < n_cols
        chunk = tl.load(x_row + cols + pos, mask=valid, other=0.0).to(tl.float32)
        probs = tl.exp(chunk - big) * (1.0 / acc)
        tl.store(out_row + cols + pos, probs.to(out_ptr.dtype.element_ty), mask=valid)
        pos += BLOCK"""],
    "matmul_kernel": ["""\
    row_ids = tl.arange(0, BLOCK_M) + pid_m * BLOCK_M
    col_ids = tl.arange(0, BLOCK_N) + pid_n * BLOCK_N
    k_ids = tl.arange(0, BLOCK_K)
    row_ok = row_ids < M
    col_ok = col_ids < N
    a_grid = a_ptr + stride_am * row_ids[:, None] + stride_ak * k_ids[None, :]
    b_grid = b_ptr + stride_bk * k_ids[:, None] + stride_bn * col_ids[None, :]
    total = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    left = K
    while left > 0:  # walk K down to zero, one block at a time
        k_ok = k_ids < left
        total = tl.dot(tl.load(a_grid, mask=row_ok[:, None] & k_ok[None, :], other=0.0),
                       tl.load(b_grid, mask=k_ok[:, None] & col_ok[None, :], other=0.0), total)
        a_grid += stride_ak * BLOCK_K
        b_grid += stride_bk * BLOCK_K
        left -= BLOCK_K
    tl.store(c_ptr + stride_cm * row_ids[:, None] + stride_cn * col_ids[None, :],
             total.to(c_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])"""],
    "roofline": ["""\
    return float(n), float(bytes_per_element * n * 3)""", """\
    multiply_adds = M * N * K
    elements = M * K + N * K + M * N
    return 2.0 * multiply_adds, float(elements * bytes_per_element)""", """\
    memory_bound = bandwidth * (flops / bytes_moved)
    return peak_flops if memory_bound > peak_flops else memory_bound"""],
    "block_sum_kernel": ["""\
    value = 0.0
    if i < x.size:
        value = x[i]
    shared[tid] = value
    cuda.syncthreads()
    half = THREADS
    for _ in range(7):  # log2(128) halvings
        half = half // 2
        if tid < half:
            shared[tid] = shared[tid] + shared[tid + half]
        cuda.syncthreads()
    if tid == 0:
        partial[cuda.blockIdx.x] = shared[0]"""],
}

# The copy: the reference with every local renamed (whole words, not keyword arguments, in the
# solution lines only),
# the roofline functions reordered and a few statements reflowed.
RENAMES = {
    "add_kernel": {"pid": "prog", "offsets": "idx", "mask": "keep", "x": "left", "y": "right"},
    "softmax_kernel": {"m": "top", "d": "denom", "start": "pos", "x": "chunk", "m_new": "top2", "mask": "ok"},
    "matmul_kernel": {"rm": "rows", "rn": "colz", "rk": "ks", "a_ptrs": "pa", "b_ptrs": "pb", "acc": "total",
                      "k": "kk", "a": "ta", "b": "tb", "c_ptrs": "pc"},
    "block_sum_kernel": {"stride": "step"},
}
REFLOW = [
    ("add_kernel", "tl.store(out_ptr + idx, left + right, mask=keep)",
     "tl.store(out_ptr + idx,\n             left + right,\n             mask=keep)"),
    ("matmul_kernel", "total = tl.dot(ta, tb, total)", "total = tl.dot(ta,\n                        tb, total)"),
    ("matmul_kernel", "pa += BLOCK_K * stride_ak", "pa = pa + BLOCK_K * stride_ak  # next K block"),
    ("block_sum_kernel", "step //= 2", "step = step // 2"),
    ("softmax_kernel", "denom = denom * tl.exp(top - top2) + tl.sum(tl.exp(chunk - top2), axis=0)",
     "denom = (denom * tl.exp(top - top2)\n                 + tl.sum(tl.exp(chunk - top2), axis=0))"),
]


def cells(nb):
    return {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")}


def honest(parts: dict[str, list[str]]):
    nb = samples.make_sample(LAB, "untouched")
    for gid, cell in cells(nb).items():
        for code in parts[gid]:
            assert STUB in cell.source
            cell.source = cell.source.replace(STUB, code, 1)
    return nb


def copied():
    nb = samples.make_sample(LAB, "reference")
    given = {gid: {line.strip() for line in c.source.splitlines()}
             for gid, c in cells(samples.make_sample(LAB, "untouched")).items()}
    for gid, cell in cells(nb).items():
        names = RENAMES.get(gid, {})
        pattern = re.compile(r"\b(" + "|".join(sorted(names, key=len, reverse=True)) + r")\b(?!=)") if names else None
        cell.source = "\n".join(line if pattern is None or line.strip() in given[gid]
                                else pattern.sub(lambda m: names[m.group(1)], line)
                                for line in cell.source.splitlines())
    for gid, old, new in REFLOW:
        assert old in cells(nb)[gid].source, (gid, old)
        cells(nb)[gid].source = cells(nb)[gid].source.replace(old, new)
    roof = cells(nb)["roofline"]
    funcs = roof.source.split("\n\n\n")
    assert len(funcs) == 3
    roof.source = "\n\n\n".join([funcs[2], funcs[0], funcs[1]])
    return nb


@pytest.fixture
def course(tmp_path, monkeypatch):
    grading = tmp_path / "grading"
    monkeypatch.setenv("COURSE_GRADING_DIR", str(grading))
    notebooks = {"alice": samples.make_sample(LAB, "reference"), "mallory": copied(),
                 "bob": honest(BOB), "carol": honest(CAROL), "dave": samples.make_sample(LAB, "untouched")}
    for student, nb in notebooks.items():
        folder = grading / "submitted" / student / LAB
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{LAB}.ipynb")
    (grading / "gradebook.db").write_bytes(b"not touched by the similarity report")
    return grading


def snapshot(grading):
    files = [grading / "gradebook.db", *sorted((grading / "submitted").rglob("*"))]
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in files if p.is_file()}


def score(rows, a, b):
    [row] = [r for r in rows if {r["student_a"], r["student_b"]} == {a, b}]
    return row


def test_similarity_report(course, capsys):
    before = snapshot(course)
    rows = similarity.report([LAB])[LAB]
    ref = similarity.REFERENCE

    copy_ref, copy_alice = score(rows, "mallory", ref), score(rows, "mallory", "alice")
    honest_pair = score(rows, "bob", "carol")
    print(f"copy vs reference {copy_ref['similarity']}, copy vs alice {copy_alice['similarity']}, "
          f"bob vs carol {honest_pair['similarity']}, bob vs reference {score(rows, 'bob', ref)['similarity']}, "
          f"carol vs reference {score(rows, 'carol', ref)['similarity']}")
    assert copy_ref["flagged"] and copy_ref["similarity"] >= 0.6
    assert copy_alice["flagged"] and copy_alice["similarity"] >= 0.6
    assert not honest_pair["flagged"] and honest_pair["similarity"] < 0.6
    assert not score(rows, "bob", ref)["flagged"] and not score(rows, "carol", ref)["flagged"]
    assert not any("dave" in (r["student_a"], r["student_b"]) for r in rows)  # the untouched lab is ignored
    assert len(rows) == 10  # reference, alice, mallory, bob, carol: 5 choose 2

    out = course / "similarity"
    with (out / f"{LAB}.csv").open() as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == similarity.COLUMNS
    flags = [r["flagged"] == "True" for r in table]
    assert flags == sorted(flags, reverse=True) and any(flags) and not all(flags)
    flagged = [float(r["similarity"]) for r in table if r["flagged"] == "True"]
    assert flagged == sorted(flagged, reverse=True)

    page = (out / f"{LAB}.html").read_text()
    assert "0.60" in page and "FLAGGED" in page and "vs mallory" in page
    # the copy's renamed lines sit next to the reference's, highlighted
    assert re.search(r"<span class='hit'>\s*\d+ +acc = tl.dot\(a, b, acc\)</span>", page)
    assert re.search(r"<span class='hit'>\s*\d+ +total = tl.dot\(ta,</span>", page)
    assert "Ignored" in page and "dave" in page
    assert "&lt;" in page  # the code is escaped
    assert f"href='{LAB}.html'" in (out / "index.html").read_text()
    assert snapshot(course) == before  # no grade, no submission changed


def test_renaming_and_reflowing_change_no_fingerprint():
    a = ["total = 0", "for item in values:", "    total += item * weight", "return total / len(values)"]
    b = ["s = 0  # running sum", "for v in xs:", "    s += v * \\", "        w", "return s / len(xs)"]
    assert [t for t, _ in similarity.tokens(a)] == [t for t, _ in similarity.tokens(b)]
    assert set(similarity.winnow(similarity.tokens(a))) == set(similarity.winnow(similarity.tokens(b)))
