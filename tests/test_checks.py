"""The shared checks and benchmark module behave as a learner sees them."""
import pytest
import torch

from genfast import bench, checks, runtime


def test_wrong_output_names_the_case_index_errors_and_hint():
    x = torch.arange(12.0).reshape(3, 4)
    wrong = x.clone()
    wrong[1, 2] += 0.5
    with pytest.raises(checks.CheckFailed) as err:
        checks.compare(wrong, x, what="my_kernel, case 'small'", hint="check the mask")
    message = str(err.value)
    assert "case 'small'" in message and "first bad index (1, 2)" in message
    assert "max abs error 0.5" in message and "max rel error" in message and "hint: check the mask" in message


def test_shape_and_type_mismatches_are_explained():
    with pytest.raises(checks.CheckFailed, match="wrong shape"):
        checks.compare(torch.zeros(3), torch.zeros(4))
    with pytest.raises(checks.CheckFailed, match="expected a tensor"):
        checks.compare(None, torch.zeros(4))


def test_nan_where_a_number_is_expected_fails():
    with pytest.raises(checks.CheckFailed):
        checks.compare(torch.tensor([1.0, float("nan")]), torch.tensor([1.0, 2.0]))
    checks.compare(torch.tensor([float("-inf"), 1.0]), torch.tensor([float("-inf"), 1.0]))


def test_unimplemented_function_says_so():
    def stub(x):
        raise NotImplementedError()
    case = checks.Case("n=3", lambda: dict(x=torch.zeros(3)))
    with pytest.raises(checks.CheckFailed, match="not implemented yet"):
        checks.check_function(stub, lambda x: x, [case])


def test_crash_names_the_case():
    def crash(x):
        return x[10]
    case = checks.Case("n=3", lambda: dict(x=torch.zeros(3)))
    with pytest.raises(checks.CheckFailed, match="IndexError on case 'n=3'"):
        checks.check_function(crash, lambda x: x, [case])


def test_check_value_compares_tuples():
    checks.check_value("f", lambda: (1, 2.0), expected=(1, 2.0))
    with pytest.raises(checks.CheckFailed, match="got"):
        checks.check_value("f", lambda: (1, 3.0), expected=(1, 2.0))


def test_chi_square_accepts_the_right_distribution_and_rejects_a_wrong_one():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    gen = torch.Generator().manual_seed(0)
    good = torch.multinomial(probs, 20_000, replacement=True, generator=gen)
    assert checks.check_distribution(good, probs) > 1e-3
    bad = torch.multinomial(torch.tensor([0.4, 0.4, 0.15, 0.05]), 20_000, replacement=True, generator=gen)
    with pytest.raises(checks.CheckFailed, match="do not follow"):
        checks.check_distribution(bad, probs)
    impossible = torch.tensor([0, 1, 3])
    assert checks.chi_square_pvalue(torch.bincount(impossible, minlength=4).double(),
                                    torch.tensor([0.5, 0.5, 0.0, 0.0])) == 0.0


def test_speed_is_skipped_on_cpu_with_zero_points_and_a_reason(capsys):
    if runtime.on_gpu():
        pytest.skip("this machine has a GPU")
    called = []
    points = bench.speed_points(lambda: called.append(1), lambda: called.append(2), points=2, name="k")
    assert points == 0.0 and not called
    assert "skipped: no GPU" in capsys.readouterr().out


def test_speed_points_scale_with_the_ratio():
    assert bench.points_for_ratio(1.3, 2) == 2
    assert bench.points_for_ratio(bench.FULL_POINTS_AT, 2) == 2
    assert bench.points_for_ratio(0.1, 2) == 0
    assert 0 < bench.points_for_ratio(0.6, 2) < 2


def test_a_kernel_check_states_its_precision_and_tolerance(monkeypatch):
    """A kernel that passes in the interpreter must not fail on a GPU for the wrong reason: the
    checks say in what precision they compare (TF32 for fp32 inputs to tl.dot on a GPU)."""
    import torch

    from genfast import checks, runtime
    assert "TF32" in checks.precision(torch.float32) and "CPU interpreter" in checks.precision(torch.float32)
    monkeypatch.setattr(runtime, "on_gpu", lambda: True)
    line = checks.precision(torch.bfloat16, atol=6e-2, rtol=3e-2)
    assert line.startswith("precision (GPU): bf16 inputs on tensor cores, fp32 accumulation")
    assert "atol=0.06, rtol=0.03" in line
    assert "atol=0.01, rtol=0.01" in checks.precision(torch.float16)  # the dtype's default tolerance


def _to_tf32(x: torch.Tensor, rounding: str) -> torch.Tensor:
    """fp32 -> TF32 (10-bit mantissa) emulated on the bits: round to nearest even, or truncate."""
    bits = x.view(torch.int32)
    if rounding == "nearest":
        bits = bits + 0xFFF + ((bits >> 13) & 1)  # half of the 13 dropped bits, ties to even
    return (bits & ~0x1FFF).view(torch.float32)


@pytest.mark.parametrize("rounding", ["nearest", "truncate"])
def test_tf32_dot_error_estimate_matches_a_measured_emulation(rounding):
    """checks.tf32_dot_error (module 0's TF32 note) against fp32 inputs cut to 10-bit mantissas,
    multiplied and summed in fp64, compared with the exact fp64 dot product."""
    gen = torch.Generator().manual_seed(0)
    measured = {}
    for K in (16, 256, 4096):
        a, b = torch.randn(1000, K, generator=gen), torch.randn(1000, K, generator=gen)
        exact = (a.double() * b.double()).sum(1)
        tf32 = (_to_tf32(a, rounding).double() * _to_tf32(b, rounding).double()).sum(1)
        measured[K] = (tf32 - exact).pow(2).mean().sqrt().item()
        estimate = checks.tf32_dot_error(K, rounding=rounding)
        assert 0.9 < measured[K] / estimate < 1.1, (K, measured[K], estimate)
        # relative to the result (RMS sqrt(K)) the error stays about 2^-11, whatever K
        assert 0.4 * 2 ** -11 < measured[K] / exact.pow(2).mean().sqrt().item() < 2 * 2 ** -11
    assert 12 < measured[4096] / measured[16] < 20  # grows like sqrt(K): sqrt(256) = 16
    # the same dot product in plain fp32 (fp32 products and sums) is over a hundred times closer
    assert (a.double() * b.double()).sum(1).sub((a * b).sum(1).double()).abs().max() < measured[4096] / 100
