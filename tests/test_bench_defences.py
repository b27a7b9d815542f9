"""The speed harness against the cheats kernel leaderboards have seen, on a simulated GPU.

`SimDevice` is a GPU with a default stream, a second stream, CUDA-like events and a host
clock; a simulated kernel is a Python function that computes its result on the CPU and
launches `ms` of work on a stream. Each cheat is a learner function; the honest one must keep
its points.
"""
import threading
import time

import pytest
import torch

from genfast import bench


class SimEvent:
    def __init__(self, dev):
        self.dev, self.t = dev, None

    def record(self):
        self.t = max(self.dev.streams["default"], self.dev.host)

    def elapsed_time(self, end):
        return 0.0 if self.dev.fake_events else end.t - self.t


class SimDevice(bench.Device):
    def __init__(self):
        super().__init__(0)
        self.host, self.streams, self.fake_events = 0.0, {"default": 0.0, "other": 0.0}, False
        self.windows = []  # (thread, start, end) of every exclusive section, in real time

    def launch(self, ms, stream="default"):
        self.streams[stream] = max(self.streams[stream], self.host) + ms
        self.host += 0.002  # launch overhead

    def synchronize(self):
        self.host = max(self.host, *self.streams.values())

    def event(self):
        return SimEvent(self)

    def flush_l2(self):
        pass

    def host_ms(self):
        return self.host


def inputs(seed):
    return (torch.randn(256, generator=torch.Generator().manual_seed(seed)),)


def kernel(dev, ms, fn=lambda x: x * 2 + 1, stream="default"):
    def run(x):
        dev.launch(ms, stream)
        return fn(x)
    return run


def measure(dev, learner, reference_ms=1.0, **kw):
    return bench.measure(learner, kernel(dev, reference_ms), inputs, points=2, dev=dev, seed=1, **kw)


def test_an_honest_kernel_keeps_its_points_and_a_slow_one_gets_partial_credit():
    dev = SimDevice()
    assert measure(dev, kernel(dev, 1.0)).points == 2
    slow = measure(dev, kernel(dev, 2.0))
    assert 0 < slow.points < 2 and abs(slow.ratio - 0.5) < 0.01


def test_the_same_kernel_graded_ten_times_gets_the_same_points():
    dev = SimDevice()
    assert len({bench.measure(kernel(dev, 1.1), kernel(dev, 1.0), inputs, points=2, dev=dev).points
                for _ in range(10)}) == 1


def test_a_kernel_that_returns_its_last_output_earns_nothing():
    dev, cache = SimDevice(), {}

    def cached(x):  # computes once per shape, then replays: fast, and wrong on fresh inputs
        if x.shape not in cache:
            dev.launch(1.0)
            cache[x.shape] = x * 2 + 1
        return cache[x.shape]
    result = measure(dev, cached)
    assert result.points == 0 and "wrong result" in result.message


def test_a_kernel_that_caches_by_content_gains_nothing():
    dev, cache = SimDevice(), {}

    def by_content(x):
        key = hash(x.numpy().tobytes())
        if key not in cache:
            dev.launch(1.0)
            cache[key] = x * 2 + 1
        return cache[key]
    result = measure(dev, by_content)
    assert result.ratio is not None and result.ratio < 1.05  # every timed input is new: no hits


def test_zeros_and_constants_are_wrong_results():
    dev = SimDevice()
    for fake in (torch.zeros_like, lambda x: torch.full_like(x, 1.0)):
        result = measure(dev, kernel(dev, 0.1, fn=fake))
        assert result.points == 0 and "wrong result" in result.message


def test_writing_into_the_inputs_is_caught():
    dev = SimDevice()
    result = measure(dev, kernel(dev, 0.5, fn=lambda x: x.mul_(2).add_(1)))
    assert result.points == 0 and "wrote into its inputs" in result.message


def test_work_on_another_stream_is_timed_by_the_host():
    dev = SimDevice()

    def sneaky(x):
        dev.launch(1.0, stream="other")  # the real work, outside the timed stream
        dev.launch(0.01)
        return x * 2 + 1
    result = measure(dev, sneaky)
    assert result.ratio < 1.05 and "host clock" in result.message


def test_a_faked_event_clock_is_caught_by_the_host_clock():
    dev = SimDevice()

    def fakes_events(x):
        dev.fake_events = True  # as if torch.cuda.Event.elapsed_time had been patched
        dev.launch(1.0)
        return x * 2 + 1
    result = measure(dev, fakes_events)
    assert result.ratio < 1.05 and "host clock" in result.message


def test_an_implausible_speedup_earns_nothing_and_is_flagged():
    dev = SimDevice()
    result = measure(dev, kernel(dev, 0.1))  # ten times the reference
    assert result.points == 0 and "faster than the reference" in result.review
    below_roofline = measure(dev, kernel(dev, 0.5), reference_ms=0.6, roofline_ms=0.8)
    assert below_roofline.points == 0 and "roofline" in below_roofline.review


def test_a_crashing_kernel_earns_nothing():
    dev = SimDevice()

    def crashes(x):
        raise RuntimeError("illegal memory access")
    result = measure(dev, crashes)
    assert result.points == 0 and "RuntimeError" in result.message


def test_two_workers_never_time_on_one_gpu_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "LOCK_DIR", str(tmp_path))
    windows, lock = [], threading.Lock()

    class Recording(SimDevice):
        def exclusive(self):
            outer = super().exclusive()

            class Section:
                def __enter__(s):
                    outer.__enter__()
                    s.start = time.perf_counter()

                def __exit__(s, *exc):
                    with lock:
                        windows.append((s.start, time.perf_counter()))
                    return outer.__exit__(*exc)
            return Section()

    def worker():
        dev = Recording()

        def slow_honest(x):  # real time passes inside the timed section
            time.sleep(0.002)
            dev.launch(1.0)
            return x * 2 + 1
        bench.measure(slow_honest, kernel(dev, 1.0), inputs, points=1, dev=dev, rounds=2, reps=3, warmup=1)
    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    windows.sort()
    assert len(windows) == 3
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(windows, windows[1:])), windows


@pytest.mark.parametrize("reference", [None, lambda: None])
def test_on_a_cpu_nobody_gets_speed_points(reference, capsys):
    assert bench.speed_points(lambda: None, reference, points=2, name="k") == 0.0
    assert "skipped" in capsys.readouterr().out


def test_writing_into_a_dataclass_input_is_caught():
    from dataclasses import dataclass as dc

    @dc
    class Cache:
        k: torch.Tensor
        scale: float

    dev = SimDevice()
    make = lambda seed: (Cache(torch.randn(64, generator=torch.Generator().manual_seed(seed)), 2.0),)
    honest = lambda c: (dev.launch(1.0), c.k * c.scale)[1]

    def writes(c):
        dev.launch(0.5)
        c.k.mul_(c.scale)
        return c.k
    assert bench.measure(honest, honest, make, points=1, dev=dev, seed=0).points == 1
    result = bench.measure(writes, honest, make, points=1, dev=dev, seed=0)
    assert result.points == 0 and "wrote into its inputs" in result.message
