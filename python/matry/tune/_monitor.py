"""Recall as a service-level objective: shadow a sample of live searches with exact search.

    monitor = tune.RecallMonitor(index, target=0.95, k=10, sample_rate=0.01, on_alert=page)
    ids, distances = monitor.search(queries, k=10)     # the index's own results, unchanged
    monitor.status()    # recall@10 over the last `window` sampled queries, its interval, state

Each query searched through the monitor is sampled with probability ``sample_rate``
(independently, by geometric skips: an unsampled call costs one counter decrement). A sampled
query, with the ids and distances it was served, goes to a bounded queue; a background thread
runs exact search on batches of them and keeps the per-query recall@k of the last ``window``
samples. The caller never waits for it: when the queue is full the sample is dropped and
counted.

The interval is ``matry.tune.recall_interval`` of the window, kept up to date in O(1) per
sample from integer running sums: a Student-t interval over per-query recall, widened to the
Wilson interval on the total hits (see ``_stats``). The sampled queries are a random sample of
the served ones, so it covers the recall of the recent query stream. Two flags read it against
the target: ``at_risk`` when its lower end is under the target (the target can no longer be
certified) and ``violated`` when even its upper end is (recall is below the target with the
stated confidence).
"""

from __future__ import annotations

import inspect
import logging
import math
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ._recall import (
    Workload,
    check_confidence,
    check_num_threads,
    check_positive_int,
    check_target,
    per_query_recall,
)
from ._stats import t_quantile, wilson_interval

__all__ = ["STATES", "RecallMonitor", "RecallStatus"]

_log = logging.getLogger("matry.tune")

#: Monitor states, best first; "warming_up" until ``min_samples`` queries are in the window.
STATES = ("warming_up", "ok", "at_risk", "violated")
_ALERT_LEVELS = ("at_risk", "violated")
_STOP = object()
_WAKE = object()  # flush(): measure what is queued now, without waiting for max_delay


@dataclass(frozen=True)
class RecallStatus:
    """What a :class:`RecallMonitor` knows now.

    ``recall`` is the mean recall@k of the ``n_samples`` queries in the window (None before
    the first); ``low``/``high`` its ``confidence`` interval ((0, 1) before the first sample).
    ``at_risk``: ``low < target``; ``violated``: ``high < target``. ``state`` is
    "warming_up" while ``n_samples < min_samples``, else "violated", "at_risk" or "ok".
    ``alerting`` is True from the alert until the state is "ok" again. Counters since start
    (or :meth:`RecallMonitor.reset`): ``total_samples`` measured, ``dropped`` (queue full),
    ``pending`` (queued, not measured yet), ``skipped`` (sampled but not measurable: the call
    asked for fewer than k results, used a filter, or the index held fewer than k vectors),
    ``errors`` (exact searches or callbacks that raised; ``last_error`` says what).
    """

    recall: float | None
    low: float
    high: float
    confidence: float
    target: float
    k: int
    n_samples: int
    window: int
    min_samples: int
    state: str
    at_risk: bool
    violated: bool
    alerting: bool
    total_samples: int
    dropped: int
    pending: int
    skipped: int
    errors: int
    last_error: str | None

    @property
    def interval(self) -> tuple[float, float]:
        return self.low, self.high


class RecallMonitor:
    """Shadows a sampled fraction of searches with exact search and tracks recall@k.

    Args:
        index: a :class:`matry.Index`, or any object with ``search(queries, k=..., **kw)`` and
            ``exact_search(queries, k=...)`` returning ``(ids, distances)`` arrays [n, k].
        target: the recall@k objective, in (0, 1].
        k: recall is measured on the first ``k`` results of each sampled query; calls asking
            for fewer results are not measured.
        sample_rate: probability that a query is shadowed, in (0, 1].
        window: number of most recent sampled queries the estimate is made from.
        confidence: of the interval.
        min_samples: queries needed in the window before the state leaves "warming_up" and
            an alert can fire.
        alert_on: "at_risk" (the interval's lower end is under the target) or "violated"
            (its upper end is).
        on_alert: called with the :class:`RecallStatus` once when the state reaches
            ``alert_on`` (or worse), on the monitor's thread; it fires again only after the
            state has been "ok" in between. Exceptions it raises are logged and counted.
        queue_size: sampled queries waiting for exact search, at most; more are dropped.
        batch_size: sampled queries per exact-search call of the background thread, at most.
        max_delay: seconds the background thread waits to gather up to ``batch_size``
            samples before measuring them (0: measure each as it comes; :meth:`flush` does
            not wait).
        max_busy: fraction of one core's time the background thread may spend measuring
            (e.g. 0.05); after each batch it pauses so as to stay under it, and samples that
            find the queue full meanwhile are dropped (and counted, never biasing the
            estimate: which samples are dropped does not depend on their recall). None: no
            limit, beyond ``queue_size``.
        num_threads: threads of each exact search (default 1, to stay out of the serving
            path's way; 0 = all cores).
        seed: seed of the sampling (None: from the OS).

    The exact search runs at the time the sample is processed, against the index as it is
    then: vectors added or removed between the search and its check (milliseconds, unless
    the queue is backed up) can turn a correct answer into a counted miss.
    """

    def __init__(
        self,
        index: Any,
        target: float = 0.95,
        k: int = 10,
        sample_rate: float = 0.01,
        *,
        window: int = 1000,
        confidence: float = 0.95,
        min_samples: int = 30,
        alert_on: str = "at_risk",
        on_alert: Callable[[RecallStatus], object] | None = None,
        queue_size: int = 1024,
        batch_size: int = 64,
        max_delay: float = 0.1,
        max_busy: float | None = None,
        num_threads: int = 1,
        seed: int | None = None,
    ) -> None:
        for method in ("search", "exact_search"):
            if not callable(getattr(index, method, None)):
                raise TypeError(
                    f"index: expected a matry.Index or an object with search() and "
                    f"exact_search(), got {type(index).__name__} without {method}()"
                )
        self._target = check_target(target)
        self._k = check_positive_int("k", k)
        rate = float(sample_rate)
        if not 0.0 < rate <= 1.0 or math.isnan(rate):
            raise ValueError(f"sample_rate: must be in (0, 1], got {sample_rate}")
        self._sample_rate = rate
        self._window_size = check_positive_int("window", window)
        self._confidence = check_confidence(confidence)
        self._min_samples = check_positive_int("min_samples", min_samples)
        if self._min_samples > self._window_size:
            raise ValueError(
                f"min_samples: must be <= window ({self._window_size}), got {min_samples}"
            )
        if alert_on not in _ALERT_LEVELS:
            raise ValueError(f"alert_on: expected one of {_ALERT_LEVELS}, got {alert_on!r}")
        self._alert_on = alert_on
        if on_alert is not None and not callable(on_alert):
            raise TypeError(f"on_alert: expected a callable or None, got {on_alert!r}")
        self._on_alert = on_alert
        self._queue_size = check_positive_int("queue_size", queue_size)
        self._batch_size = check_positive_int("batch_size", batch_size)
        delay = float(max_delay)
        if not 0.0 <= delay <= 60.0:  # NaN fails too
            raise ValueError(f"max_delay: must be between 0 and 60 seconds, got {max_delay}")
        self._max_delay = delay
        if max_busy is not None:
            busy = float(max_busy)
            if not 0.0 < busy <= 1.0:  # NaN fails too
                raise ValueError(f"max_busy: must be in (0, 1] or None, got {max_busy}")
            max_busy = busy
        self._max_busy = max_busy
        self._hurry = threading.Event()  # cuts a max_busy pause short (flush, close)
        self._flushing = 0
        self._num_threads = check_num_threads(num_threads)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed: expected an int or None, got {seed!r}")

        self._index = index
        self._exact_takes_threads = _accepts(index.exact_search, "num_threads")
        self._exact_takes_filter = _accepts(index.exact_search, "filter")
        self._rng = random.Random(seed)
        self._log_keep = math.log1p(-rate) if rate < 1.0 else 0.0
        self._sample_lock = threading.Lock()
        self._skip = self._gap()

        self._state_lock = threading.Lock()
        self._idle = threading.Condition(self._state_lock)
        # hits (0..k) of the sampled queries in the window, with their running sum and sum of
        # squares: integers, so the window's mean and variance stay exact at any length of run
        self._window: deque[int] = deque()
        self._hits_sum = 0
        self._hits_squares = 0
        self._generation = 0  # bumped by reset(): samples queued before it are discarded
        self._pending = 0
        self._total = self._dropped = self._skipped = self._errors = 0
        self._last_error: str | None = None
        self._alerting = False
        self._closed = False
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="matry-recall-monitor", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- properties

    @property
    def index(self) -> Any:
        return self._index

    @property
    def target(self) -> float:
        return self._target

    @property
    def k(self) -> int:
        return self._k

    @property
    def sample_rate(self) -> float:
        return self._sample_rate

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        status = self.status()
        shown = "n/a" if status.recall is None else f"{status.recall:.4f}"
        return (
            f"RecallMonitor(target={self._target}, k={self._k}, "
            f"sample_rate={self._sample_rate}, recall={shown}, state={status.state!r})"
        )

    # ---------------------------------------------------------------- the serving path

    def search(
        self, queries: Any, k: int | None = None, **kwargs: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """``index.search(queries, k, **kwargs)`` (k defaults to the monitor's), returned
        unchanged; a sampled fraction of its queries is queued for the recall check."""
        ids, distances = self._index.search(queries, k=self._k if k is None else k, **kwargs)
        self.observe(queries, ids, distances, filter=kwargs.get("filter"))
        return ids, distances

    def observe(self, queries: Any, ids: Any, distances: Any, *, filter: Any = None) -> None:
        """Offers the results of a search made elsewhere (same index) to the sampler."""
        if self._closed:
            return
        count = len(ids)
        with self._sample_lock:
            if count <= self._skip:  # the common case: nothing sampled in this call
                self._skip -= count
                return
            positions = []
            position = self._skip
            while position < count:
                positions.append(position)
                position += 1 + self._gap()
            self._skip = position - count
        self._enqueue(queries, ids, distances, positions, filter)

    def _gap(self) -> int:
        """Unsampled queries before the next sampled one: geometric with p = sample_rate."""
        if self._log_keep == 0.0:
            return 0
        return int(math.log(1.0 - self._rng.random()) / self._log_keep)

    def _enqueue(
        self, queries: Any, ids: Any, distances: Any, positions: list[int], filter: Any
    ) -> None:
        ids = np.asarray(ids)
        width = ids.shape[1] if ids.ndim == 2 else 0
        if width < self._k or (filter is not None and not self._exact_takes_filter):
            with self._state_lock:
                self._skipped += len(positions)
            return
        try:
            filter = self._sampled_filter(filter, positions, int(ids.shape[0]))
        except (TypeError, ValueError):  # not a filter this monitor can replay
            with self._state_lock:
                self._skipped += len(positions)
            return
        with self._state_lock:
            if self._closed:
                return
            room = max(0, self._queue_size - self._pending)
            if room < len(positions):  # queue full: keep what fits, count the rest
                self._dropped += len(positions) - room
                positions = positions[:room]
            if not positions:
                return
            if isinstance(filter, list):
                filter = filter[: len(positions)]
            rows = np.asarray(queries, dtype=np.float32).reshape(ids.shape[0], -1)[positions]
            sample = (
                rows,
                ids[positions, : self._k].astype(np.int64),
                np.asarray(distances, dtype=np.float32)[positions, : self._k],
                filter,
            )
            # under the lock: close() cannot slip its stop marker in before this sample
            self._pending += len(positions)
            self._queue.put((self._generation, sample))

    def _sampled_filter(self, filter: Any, positions: list[int], count: int) -> Any:
        """The call's filter as the exact search of the sampled rows needs it, copied: one
        filter per row stays one per sampled row, and ids become an IdSet (the caller may
        reuse its array, and an IdSet may name ids deleted before the check runs)."""
        if filter is None:
            return None
        if _per_query(filter, count):
            kept = [self._snapshot_filter(filter[p]) for p in positions]
            return None if all(item is None for item in kept) else kept
        return self._snapshot_filter(filter)

    def _snapshot_filter(self, filter: Any) -> Any:
        if filter is None:
            return None
        from ..filters import IdSet
        from ..index import Index

        if isinstance(self._index, Index):
            return filter if isinstance(filter, IdSet) else IdSet(np.asarray(filter))
        return np.array(filter, copy=True) if isinstance(filter, np.ndarray) else filter

    # ---------------------------------------------------------------- the background thread

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if item is _WAKE:
                continue
            # gather samples for up to max_delay: one exact-search call and one state update
            # for many of them (per sample, the Python around the search costs more than it)
            batch = [item]
            rows = len(item[1][0])
            deadline = time.monotonic() + self._max_delay
            stop = False
            while rows < self._batch_size:
                remaining = deadline - time.monotonic()
                try:
                    extra = self._queue.get(timeout=remaining) if remaining > 0 else None
                except queue.Empty:
                    extra = None
                if extra is None or extra is _WAKE:
                    break
                if extra is _STOP:
                    stop = True
                    break
                batch.append(extra)
                rows += len(extra[1][0])
            started = time.monotonic()
            self._measure(batch)
            if stop:
                return
            if (
                self._max_busy is not None
                and self._max_busy < 1.0
                and not self._flushing
                and not self._closed
            ):
                # a duty cycle of max_busy: samples arriving meanwhile queue up or are dropped
                pause = (time.monotonic() - started) * (1.0 / self._max_busy - 1.0)
                self._hurry.wait(pause)
                self._hurry.clear()

    def _measure(self, batch: list[Any]) -> None:
        count = sum(len(sample[0]) for _, sample in batch)
        try:
            values = self._recalls(batch)
            error = None
        except Exception as caught:  # counted and reported by status(); the thread goes on
            values, error = None, caught
            _log.exception("RecallMonitor: exact search failed")
        alert = None
        with self._state_lock:
            if error is not None:
                self._errors += 1
                self._last_error = f"{type(error).__name__}: {error}"
            else:
                assert values is not None
                for generation, recalls in values:
                    if generation == self._generation:
                        measured = recalls[~np.isnan(recalls)]
                        for hits in np.rint(measured * self._k).astype(np.int64).tolist():
                            self._push(hits)
                        self._total += int(measured.size)
                        self._skipped += int(recalls.size - measured.size)
                alert = self._update_alert()
        callback_error = None
        if alert is not None and self._on_alert is not None:
            try:
                self._on_alert(alert)  # outside the lock: it may call status()
            except Exception as caught:
                callback_error = caught
                _log.exception("RecallMonitor: on_alert raised")
        with self._state_lock:
            if callback_error is not None:
                self._errors += 1
                self._last_error = f"on_alert: {type(callback_error).__name__}: {callback_error}"
            self._pending -= count  # only now: flush() covers the callback too
            self._idle.notify_all()

    def _recalls(self, batch: list[Any]) -> list[tuple[int, np.ndarray]]:
        """Per-query recall@k of each queued sample (NaN where it cannot be measured)."""
        results = []
        plain = [(g, s) for g, s in batch if s[3] is None]
        filtered = [(g, s) for g, s in batch if s[3] is not None]
        if plain:
            queries = np.concatenate([s[0] for _, s in plain])
            approx_ids = np.concatenate([s[1] for _, s in plain])
            approx_distances = np.concatenate([s[2] for _, s in plain])
            recalls = self._recall_rows(queries, approx_ids, approx_distances, None)
            start = 0
            for generation, sample in plain:
                stop = start + len(sample[0])
                results.append((generation, recalls[start:stop]))
                start = stop
        for generation, sample in filtered:  # each call has its own filter
            results.append((generation, self._recall_rows(*sample)))
        return results

    def _recall_rows(
        self, queries: np.ndarray, approx_ids: np.ndarray, approx_distances: np.ndarray, filter: Any
    ) -> np.ndarray:
        options: dict[str, Any] = {}
        if self._exact_takes_threads:
            options["num_threads"] = self._num_threads
        if filter is not None:
            options["filter"] = filter
        exact_ids, exact_distances = self._index.exact_search(queries, k=self._k, **options)
        exact_ids = np.asarray(exact_ids, dtype=np.int64)
        exact_distances = np.asarray(exact_distances, dtype=np.float32)
        workload = Workload(
            queries=queries,
            k=self._k,
            exact_ids=exact_ids,
            kth_distance=exact_distances[:, self._k - 1].copy(),
            self_ids=None,
        )
        recalls = per_query_recall(workload, approx_ids, approx_distances)
        # fewer than k live vectors (under the filter): recall@k is undefined for that query
        recalls[(exact_ids < 0).any(axis=1)] = np.nan
        return recalls

    # ---------------------------------------------------------------- state

    def _push(self, hits: int) -> None:
        if len(self._window) == self._window_size:
            old = self._window.popleft()
            self._hits_sum -= old
            self._hits_squares -= old * old
        self._window.append(hits)
        self._hits_sum += hits
        self._hits_squares += hits * hits

    def _interval(self) -> tuple[float, float]:
        """``recall_interval`` of the window, from its running sums in O(1): the union of the
        Student-t interval over per-query recall and the Wilson interval on the total hits."""
        n, k = len(self._window), self._k
        mean = self._hits_sum / (n * k)
        if n >= 2:
            variance = (self._hits_squares - self._hits_sum**2 / n) / (n - 1) / (k * k)
            half = t_quantile(0.5 + self._confidence / 2.0, n - 1) * math.sqrt(
                max(variance, 0.0) / n
            )
            t_low, t_high = mean - half, mean + half
        else:
            t_low, t_high = 0.0, 1.0
        w_low, w_high = wilson_interval(float(self._hits_sum), n * k, self._confidence)
        return max(0.0, min(t_low, w_low)), min(1.0, max(t_high, w_high))

    def _snapshot(self) -> RecallStatus:
        """Status from the current window; the caller holds the state lock."""
        n = len(self._window)
        if n:
            mean: float | None = self._hits_sum / (n * self._k)
            low, high = self._interval()
        else:
            mean, low, high = None, 0.0, 1.0
        at_risk = n > 0 and low < self._target
        violated = n > 0 and high < self._target
        if n < self._min_samples:
            state = "warming_up"
        else:
            state = "violated" if violated else "at_risk" if at_risk else "ok"
        return RecallStatus(
            recall=mean,
            low=low,
            high=high,
            confidence=self._confidence,
            target=self._target,
            k=self._k,
            n_samples=n,
            window=self._window_size,
            min_samples=self._min_samples,
            state=state,
            at_risk=at_risk,
            violated=violated,
            alerting=self._alerting,
            total_samples=self._total,
            dropped=self._dropped,
            pending=self._pending,
            skipped=self._skipped,
            errors=self._errors,
            last_error=self._last_error,
        )

    def _update_alert(self) -> RecallStatus | None:
        """The status to alert with if the state just reached the alert level, else None."""
        status = self._snapshot()
        if status.state == "warming_up":
            return None
        if status.state == "ok":
            self._alerting = False
            return None
        if not self._alerting and STATES.index(status.state) >= STATES.index(self._alert_on):
            self._alerting = True
            return replace(status, alerting=True)
        return None

    def status(self) -> RecallStatus:
        """Current estimate, interval, flags and counters (see :class:`RecallStatus`)."""
        with self._state_lock:
            return self._snapshot()

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until every queued sample is measured; False if ``timeout`` s ran out first."""
        with self._idle:
            self._flushing += 1  # no max_busy pauses until the queue is drained
        try:
            self._queue.put(_WAKE)
            self._hurry.set()
            with self._idle:
                return self._idle.wait_for(lambda: self._pending == 0, timeout)
        finally:
            with self._idle:
                self._flushing -= 1

    def reset(self) -> None:
        """Forgets the window and the counters (say, after re-tuning ``ef``); samples still
        queued are discarded when they come out."""
        with self._state_lock:
            self._window.clear()
            self._hits_sum = self._hits_squares = 0
            self._generation += 1
            self._total = self._dropped = self._skipped = self._errors = 0
            self._last_error = None
            self._alerting = False

    def close(self, timeout: float | None = 5.0) -> None:
        """Stops sampling and the background thread (queued samples are measured first).
        ``search`` keeps working after it, without sampling."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        self._hurry.set()
        self._thread.join(timeout)

    def __enter__(self) -> RecallMonitor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _per_query(filter: Any, count: int) -> bool:
    """One filter per query row (matry's convention), as opposed to one list of ids."""
    if not isinstance(filter, (list, tuple)) or len(filter) != count or not filter:
        return False
    return all(item is None or not np.isscalar(item) for item in filter)


def _accepts(function: Callable[..., Any], name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # some builtins have no signature
        return False
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())
