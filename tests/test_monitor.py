"""matry.tune.RecallMonitor: sampling, the recall arithmetic, interval coverage, detection of
a degraded index, the bounded queue, failures, and lifecycle."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import matry
import numpy as np
import pytest
from matry import tune

K = 10


@pytest.fixture(scope="module")
def data() -> tuple[matry.Index, np.ndarray]:
    """3,000 gaussian vectors in 24-d, M=6: recall@10 is about 0.50 at ef=10, 0.86 at ef=48
    and 0.98 at ef=128, so ef is a real dial here."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3000, 24)).astype(np.float32)
    index = matry.Index(24, M=6, ef_construction=40, seed=0)
    index.add(vectors, num_threads=1)
    pool = rng.normal(size=(2000, 24)).astype(np.float32)
    return index, pool


def _true_recall(index: matry.Index, queries: np.ndarray, ef: int) -> float:
    old = index.ef
    index.ef = ef
    try:
        return tune.recall(index, queries, k=K, latency_queries=0).recall
    finally:
        index.ef = old


class ExactWithMisses:
    """Exact search (numpy) whose search() replaces the last ``misses`` results of every query
    with far-away ids: recall@k is exactly (k - misses) / k."""

    def __init__(self, vectors: np.ndarray, misses: int) -> None:
        self.vectors = vectors
        self.misses = misses
        self.exact_calls = 0

    def exact_search(self, queries: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        self.exact_calls += 1
        q = np.atleast_2d(np.asarray(queries, dtype=np.float64))
        d = ((q[:, None, :] - self.vectors[None, :, :]) ** 2).sum(axis=2)
        ids = np.argsort(d, axis=1, kind="stable")[:, :k]
        return ids.astype(np.int64), np.take_along_axis(d, ids, axis=1).astype(np.float32)

    def search(self, queries: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        # the base class's exact search: subclasses and tests replace exact_search itself
        ids, distances = ExactWithMisses.exact_search(self, queries, k)
        q = np.atleast_2d(np.asarray(queries, dtype=np.float64))
        d = ((q[:, None, :] - self.vectors[None, :, :]) ** 2).sum(axis=2)
        far = np.argsort(-d, axis=1, kind="stable")[:, : self.misses]
        if self.misses:
            ids[:, k - self.misses :] = far
            distances[:, k - self.misses :] = np.take_along_axis(d, far, axis=1)
        return ids, distances


# ------------------------------------------------------------------ the arithmetic


@pytest.mark.parametrize("misses", [0, 2, 5])
def test_recall_is_the_served_fraction_of_the_exact_neighbours(misses: int) -> None:
    rng = np.random.default_rng(1)
    fake = ExactWithMisses(rng.normal(size=(200, 8)), misses)
    with tune.RecallMonitor(fake, target=0.9, k=K, sample_rate=1.0, min_samples=5) as monitor:
        for _ in range(4):
            monitor.search(rng.normal(size=(10, 8)))
        assert monitor.flush(10)
        status = monitor.status()
    assert status.total_samples == status.n_samples == 40
    assert status.recall == pytest.approx((K - misses) / K)
    assert status.low <= status.recall <= status.high
    assert status.violated == ((K - misses) / K < 0.85)
    assert status.state == ("ok" if misses == 0 else "violated")


def test_ties_with_the_kth_neighbour_count_as_hits() -> None:
    """A duplicate of a neighbour is as correct as the neighbour: serving the other copy than
    exact search picked is not a miss (the rule tune.recall uses)."""
    base = np.random.default_rng(2).normal(size=(50, 6))
    twins = ExactWithMisses(np.concatenate([base, base]), 0)  # ids i and i + 50 are equal

    class ServesTheOtherCopy(ExactWithMisses):
        def search(self, queries: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
            ids, distances = twins.exact_search(queries, k)
            return (ids + 50) % 100, distances

    fake = ServesTheOtherCopy(twins.vectors, 0)
    queries = base[:20] + 1e-3
    served, _ = fake.search(queries, 1)
    exact, _ = fake.exact_search(queries, 1)
    assert (served != exact).all()  # never the id exact search chose, yet always right
    with tune.RecallMonitor(fake, k=1, sample_rate=1.0) as monitor:
        monitor.search(queries, k=1)
        assert monitor.flush(10)
        assert monitor.status().recall == pytest.approx(1.0)


def test_results_pass_through_unchanged(data: tuple[matry.Index, np.ndarray]) -> None:
    index, pool = data
    with tune.RecallMonitor(index, sample_rate=0.5, seed=0) as monitor:
        ids, distances = monitor.search(pool[:50], k=12, ef=32)
        expected_ids, expected_distances = index.search(pool[:50], k=12, ef=32)
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_array_equal(distances, expected_distances)
        one_ids, _ = monitor.search(pool[0])  # one 1-D query, k defaults to the monitor's
        assert one_ids.shape == (1, K)


# ------------------------------------------------------------------ sampling


def test_sampling_rate_single_and_batch_calls(data: tuple[matry.Index, np.ndarray]) -> None:
    index, pool = data
    totals = []
    for seed in (0, 0, 1):
        with tune.RecallMonitor(index, sample_rate=0.05, window=2000, seed=seed) as monitor:
            for row in pool[:2000]:
                monitor.search(row)
            for start in range(0, 2000, 100):
                monitor.search(pool[start : start + 100])
            assert monitor.flush(30)
            status = monitor.status()
        assert status.dropped == 0 and status.skipped == 0
        totals.append(status.total_samples)
    # 4,000 queries at p = 0.05: 200 expected, sd 13.8; the same seed samples the same queries
    assert totals[0] == totals[1]
    for total in totals:
        assert abs(total - 200) < 5 * 13.8


def test_calls_that_cannot_be_measured_are_skipped(data: tuple[matry.Index, np.ndarray]) -> None:
    index, pool = data
    with tune.RecallMonitor(index, k=K, sample_rate=1.0) as monitor:
        monitor.search(pool[:5], k=5)  # fewer results than the monitor's k
        monitor.search(pool[:3], filter=np.arange(4))  # 4 allowed ids: recall@10 undefined
        assert monitor.flush(10)
        assert monitor.status().skipped == 8 and monitor.status().total_samples == 0
    small = matry.Index(24)
    small.add(pool[:4])
    with tune.RecallMonitor(small, k=K, sample_rate=1.0) as monitor:
        monitor.search(pool[5:8])  # 4 live vectors
        assert monitor.flush(10)
        status = monitor.status()
    assert status.skipped == 3 and status.n_samples == 0 and status.recall is None
    fake = ExactWithMisses(np.ones((20, 4)), 0)  # its exact_search takes no filter
    with tune.RecallMonitor(fake, sample_rate=1.0) as monitor:
        monitor.observe(np.ones((2, 4)), *fake.search(np.ones((2, 4))), filter=[1, 2])
        assert monitor.flush(10) and monitor.status().skipped == 2


def test_filtered_searches_are_checked_against_filtered_exact_search(
    data: tuple[matry.Index, np.ndarray],
) -> None:
    """The exact check runs under the same filter: one for the call, or one per query row
    (sampled rows keep their own), and the caller's array may change after the call."""
    index, pool = data
    queries = pool[:200]
    even = np.arange(0, 3000, 2)
    per_row = [even if i % 2 else np.arange(1, 3000, 3) for i in range(len(queries))]

    def expected(filter: Any) -> float:
        ids, distances = index.search(queries, k=K, ef=24, filter=filter)
        exact_ids, exact_distances = index.exact_search(queries, k=K, filter=filter)
        workload = tune._recall.Workload(queries, K, exact_ids, exact_distances[:, -1], None)
        return float(tune._recall.per_query_recall(workload, ids, distances).mean())

    for filter in (even, per_row):
        with tune.RecallMonitor(index, sample_rate=1.0, window=1000) as monitor:
            allowed = even.copy()
            call_filter = allowed if filter is even else filter
            monitor.search(queries, ef=24, filter=call_filter)
            allowed[:] = 1  # the caller reuses its buffer
            assert monitor.flush(10)
            status = monitor.status()
        assert status.n_samples == 200 and status.skipped == 0
        assert status.recall == pytest.approx(expected(filter))
        assert status.recall != pytest.approx(_true_recall(index, queries, 24))
    with tune.RecallMonitor(index, sample_rate=0.3, window=1000, seed=4) as monitor:
        for _ in range(5):
            monitor.search(queries, ef=24, filter=per_row)
        assert monitor.flush(10)
        sampled = monitor.status()
    assert 200 < sampled.n_samples < 400 and sampled.errors == 0
    assert abs(sampled.recall - expected(per_row)) < 0.05  # type: ignore[operator]


# ------------------------------------------------------------------ the statistics


def test_interval_covers_the_true_recall_in_repeated_trials(
    data: tuple[matry.Index, np.ndarray],
) -> None:
    """200 trials, each 120 random queries of a 2,000-query pool seen by a monitor (reset in
    between) at sample rate 0.5, about 60 samples each: the 95% interval must contain the
    pool's recall in >= 90% of them, and be informative (mean width under 0.15). (189 of 200
    when written.)"""
    index, pool = data
    ef = 48
    truth = _true_recall(index, pool, ef)
    assert 0.75 < truth < 0.95  # far from 1, where covering would be easy
    rng = np.random.default_rng(3)
    covered, widths, sizes = 0, [], []
    with tune.RecallMonitor(index, k=K, sample_rate=0.5, window=200, seed=0) as monitor:
        for _ in range(200):
            served = pool[rng.integers(0, len(pool), size=120)]
            monitor.search(served[:60], ef=ef)
            for row in served[60:]:
                monitor.search(row, ef=ef)
            assert monitor.flush(30)
            status = monitor.status()
            monitor.reset()
            covered += status.low <= truth <= status.high
            widths.append(status.high - status.low)
            sizes.append(status.n_samples)
    assert covered >= 180, (covered, truth)
    assert float(np.mean(widths)) < 0.15
    assert 40 < float(np.mean(sizes)) < 80


def test_running_interval_equals_recall_interval_of_the_window(
    data: tuple[matry.Index, np.ndarray],
) -> None:
    """The monitor keeps its interval from integer running sums; it must be exactly
    tune.recall_interval of the per-query recalls in the (sliding) window."""
    index, pool = data
    with tune.RecallMonitor(index, sample_rate=1.0, window=150, confidence=0.9) as monitor:
        for start in (0, 100, 200, 300):
            monitor.search(pool[start : start + 100], ef=24)
            assert monitor.flush(10)
            status = monitor.status()
            window = np.asarray(monitor._window) / K
            assert status.n_samples == len(window) == min(150, start + 100)
            assert status.recall == pytest.approx(window.mean(), abs=1e-12)
            expected = tune.recall_interval(window, K, 0.9)
            assert status.interval == pytest.approx(expected, abs=1e-12)
    served, _ = index.search(pool[250:400], k=K, ef=24)  # the last 150 samples
    exact, _ = index.exact_search(pool[250:400], k=K)
    hits = [len(set(a) & set(b)) for a, b in zip(served.tolist(), exact.tolist())]
    assert status.recall == pytest.approx(sum(hits) / (150 * K), abs=0.01)


def test_lowering_ef_is_detected_within_the_documented_samples(
    data: tuple[matry.Index, np.ndarray],
) -> None:
    """Window 200, target 0.9: recall 0.98 at ef=128, then ef drops to 10 (recall 0.49).
    Documented (README): the at_risk alert within 40 samples, violated within 60 (24 and 47
    when written); the rule of thumb is window * (recall_before - target) / (recall_before -
    recall_after) samples, give or take the interval's half-width."""
    index, pool = data
    alerts: dict[str, list[tune.RecallStatus]] = {"at_risk": [], "violated": []}
    monitors = {
        level: tune.RecallMonitor(
            index,
            target=0.9,
            k=K,
            sample_rate=1.0,
            window=200,
            alert_on=level,
            on_alert=alerts[level].append,
        )
        for level in alerts
    }
    try:
        for monitor in monitors.values():
            monitor.search(pool[:200], ef=128)
            assert monitor.flush(30)
            assert monitor.status().state == "ok" and not alerts["at_risk"]
        detected_after: dict[str, int] = {}
        for bad in range(1, 101):
            row = pool[200 + bad]
            for level, monitor in monitors.items():
                monitor.search(row, ef=10)
                assert monitor.flush(10)
                if alerts[level] and level not in detected_after:
                    detected_after[level] = bad
            if len(detected_after) == 2:
                break
    finally:
        for monitor in monitors.values():
            monitor.close()
    assert detected_after["at_risk"] <= 40 and detected_after["violated"] <= 60, detected_after
    assert detected_after["at_risk"] < detected_after["violated"]
    assert len(alerts["at_risk"]) == len(alerts["violated"]) == 1  # once, not per sample
    fired = alerts["violated"][0]
    assert fired.violated and fired.alerting and fired.high < 0.9


def test_alert_rearms_after_recovery(data: tuple[matry.Index, np.ndarray]) -> None:
    index, pool = data
    fired: list[tune.RecallStatus] = []
    with tune.RecallMonitor(
        index, target=0.9, sample_rate=1.0, window=100, on_alert=fired.append
    ) as monitor:
        monitor.search(pool[:100], ef=10)
        assert monitor.flush(10) and len(fired) == 1
        monitor.search(pool[100:200], ef=10)
        assert monitor.flush(10) and len(fired) == 1  # still bad: no second alert
        monitor.reset()  # e.g. after raising ef
        assert monitor.status().state == "warming_up" and not monitor.status().alerting
        monitor.search(pool[200:300], ef=256)
        assert monitor.flush(10) and monitor.status().state == "ok"
        monitor.search(pool[300:500], ef=10)
        assert monitor.flush(10) and len(fired) == 2


# ------------------------------------------------------------------ the queue and failures


class BlockingExact(ExactWithMisses):
    def __init__(self, vectors: np.ndarray) -> None:
        super().__init__(vectors, 0)
        self.release = threading.Event()

    def exact_search(self, queries: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        self.release.wait(30)
        return super().exact_search(queries, k)


def test_full_queue_drops_samples_and_never_blocks_the_caller() -> None:
    fake = BlockingExact(np.random.default_rng(4).normal(size=(100, 4)))
    queries = np.random.default_rng(5).normal(size=(200, 4))
    monitor = tune.RecallMonitor(fake, sample_rate=1.0, queue_size=5, batch_size=1)
    try:
        started = time.perf_counter()
        for row in queries:
            monitor.search(row)
        elapsed = time.perf_counter() - started
        status = monitor.status()
        assert status.pending <= 6 and status.dropped >= 194  # one taken by the worker
        assert elapsed < 5  # the worker is stuck; the callers were not
        assert not monitor.flush(0.05)
        fake.release.set()
        assert monitor.flush(30)
        status = monitor.status()
        assert status.total_samples + status.dropped == 200 and status.pending == 0
    finally:
        fake.release.set()
        monitor.close()


class SlowExact(ExactWithMisses):
    slow_calls = 0

    def exact_search(self, queries: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        self.slow_calls += 1
        time.sleep(0.02)
        return super().exact_search(queries, k)


def test_max_busy_bounds_the_background_work() -> None:
    """Exact searches of 20 ms under max_busy=0.1: at most one per ~200 ms, the rest of the
    offered samples wait or are dropped; flush() still drains the queue at full speed."""
    fake = SlowExact(np.random.default_rng(8).normal(size=(100, 4)), 0)
    monitor = tune.RecallMonitor(
        fake, sample_rate=1.0, batch_size=1, max_delay=0.0, max_busy=0.1, queue_size=20
    )
    try:
        started = time.monotonic()
        while time.monotonic() - started < 0.6:
            monitor.search(np.ones(4))
            time.sleep(0.002)
        busy_calls = fake.slow_calls
        status = monitor.status()
        assert busy_calls <= 1 + 0.6 / 0.2 + 1  # one per 20 ms of work + 180 ms of pause
        assert status.dropped > 0 and status.total_samples < busy_calls + 1
        flushed = time.monotonic()
        assert monitor.flush(10)
        assert time.monotonic() - flushed < 20 * 0.02 + 2  # no pauses while flushing
        status = monitor.status()
        assert status.total_samples + status.dropped >= 100 and status.pending == 0
    finally:
        monitor.close()


def test_exact_search_failures_are_counted_and_the_monitor_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = ExactWithMisses(np.random.default_rng(6).normal(size=(50, 4)), 0)
    real = fake.exact_search
    fail = [True]

    def flaky(queries: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        if fail[0]:
            raise RuntimeError("disk gone")
        return real(queries, k)

    fake.exact_search = flaky  # type: ignore[method-assign]
    with (
        caplog.at_level(logging.ERROR, logger="matry.tune"),
        tune.RecallMonitor(fake, sample_rate=1.0) as monitor,
    ):
        monitor.search(np.ones((3, 4)))
        assert monitor.flush(10)
        assert monitor.status().errors == 1
        assert monitor.status().last_error == "RuntimeError: disk gone"
        fail[0] = False
        monitor.search(np.ones((3, 4)))
        assert monitor.flush(10)
        assert monitor.status().total_samples == 3
    assert "exact search failed" in caplog.text


def test_a_raising_callback_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    fake = ExactWithMisses(np.random.default_rng(7).normal(size=(50, 4)), 5)

    def broken(status: tune.RecallStatus) -> None:
        raise ValueError("pager offline")

    with (
        caplog.at_level(logging.ERROR, logger="matry.tune"),
        tune.RecallMonitor(fake, sample_rate=1.0, min_samples=3, on_alert=broken) as m,
    ):
        m.search(np.ones((5, 4)))
        assert m.flush(10)
        status = m.status()
    assert status.errors == 1 and "pager offline" in str(status.last_error)
    assert status.alerting and status.violated
    assert "on_alert raised" in caplog.text


def test_concurrent_callers(data: tuple[matry.Index, np.ndarray]) -> None:
    index, pool = data
    with tune.RecallMonitor(index, sample_rate=0.2, window=5000, seed=1) as monitor:

        def serve(offset: int) -> None:
            for row in pool[offset : offset + 250]:
                monitor.search(row)

        threads = [threading.Thread(target=serve, args=(o,)) for o in range(0, 1000, 250)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert monitor.flush(30)
        status = monitor.status()
    # 1,000 queries at p = 0.2: 200 expected, sd 12.6
    assert abs(status.total_samples - 200) < 5 * 12.6 and status.errors == 0


# ------------------------------------------------------------------ lifecycle and arguments


def test_status_before_any_sample(data: tuple[matry.Index, np.ndarray]) -> None:
    with tune.RecallMonitor(data[0]) as monitor:
        status = monitor.status()
        assert "state='warming_up'" in repr(monitor)
    assert status.recall is None and status.interval == (0.0, 1.0)
    assert status.state == "warming_up" and not status.at_risk and not status.violated


def test_close_stops_sampling_but_not_searching(data: tuple[matry.Index, np.ndarray]) -> None:
    index, pool = data
    monitor = tune.RecallMonitor(index, sample_rate=1.0)
    monitor.search(pool[:10])
    monitor.close()
    assert monitor.closed and not monitor._thread.is_alive()
    assert monitor.status().total_samples == 10  # queued samples were measured first
    ids, _ = monitor.search(pool[:10])
    assert ids.shape == (10, K) and monitor.status().pending == 0
    monitor.close()  # twice is fine


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"target": 0.0}, ValueError, "target"),
        ({"target": 1.5}, ValueError, "target"),
        ({"k": 0}, ValueError, "k: must be a positive integer"),
        ({"sample_rate": 0.0}, ValueError, "sample_rate"),
        ({"sample_rate": float("nan")}, ValueError, "sample_rate"),
        ({"window": 0}, ValueError, "window"),
        ({"min_samples": 2000}, ValueError, "min_samples: must be <= window"),
        ({"confidence": 1.0}, ValueError, "confidence"),
        ({"alert_on": "bad"}, ValueError, "alert_on"),
        ({"on_alert": 3}, TypeError, "on_alert"),
        ({"queue_size": 0}, ValueError, "queue_size"),
        ({"max_delay": -1}, ValueError, "max_delay"),
        ({"max_busy": 0.0}, ValueError, "max_busy"),
        ({"max_busy": float("nan")}, ValueError, "max_busy"),
        ({"num_threads": -1}, ValueError, "num_threads"),
        ({"seed": "x"}, ValueError, "seed"),
    ],
)
def test_bad_arguments(
    data: tuple[matry.Index, np.ndarray], kwargs: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        tune.RecallMonitor(data[0], **kwargs)


def test_index_must_search_and_search_exactly() -> None:
    with pytest.raises(TypeError, match="without exact_search"):
        tune.RecallMonitor(object.__new__(type("OnlySearch", (), {"search": lambda s: 0})))
