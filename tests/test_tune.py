"""Tests of matry.tune: recall measurement, the confidence interval, ef tuning, the grid, CLI."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import matry
import numpy as np
import pytest
from matry import tune
from matry.tune._grid import PLOT_DPI, PLOT_SIZE_INCHES, GridPoint, recommend
from matry.tune._recall import EfPoint, Measurement, make_workload, search_ef
from matry.tune._stats import dominates, pareto_indices, t_quantile

DIM = 24
K = 10
TARGET = 0.9
BUILD = {"M": 5, "ef_construction": 24}


def clustered(n: int, seed: int, dim: int = DIM, clusters: int = 16) -> np.ndarray:
    """Gaussian mixture whose within-cluster spread (0.8) is close to the spread of the centres
    (1.0), so true neighbours straddle clusters: with a sparse graph (M=5, ef_construction=24)
    recall@10 at ef=k is well below 0.9 and ef has to grow to reach it. The centres are fixed
    (seed 1234) so every call samples the same distribution."""
    centres = np.random.default_rng(1234).normal(size=(clusters, dim))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, clusters, size=n)
    return (centres[labels] + 0.8 * rng.normal(size=(n, dim))).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered(4000, seed=0)


@pytest.fixture(scope="module")
def tuning_queries() -> np.ndarray:
    return clustered(400, seed=1)


@pytest.fixture(scope="module")
def fresh_queries() -> np.ndarray:
    return clustered(2000, seed=2)


def build(vectors: np.ndarray, **overrides: object) -> matry.Index:
    params = {**BUILD, **overrides}
    index = matry.Index(vectors.shape[1], metric="cosine", seed=0, **params)
    index.add(vectors, num_threads=1)
    return index


@pytest.fixture(scope="module")
def index(data: np.ndarray) -> matry.Index:
    return build(data)


# --- the interval -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("probability", "df", "expected"),
    [
        (0.975, 1, 12.7062),
        (0.975, 2, 4.3027),
        (0.975, 3, 3.1824),
        (0.995, 5, 4.0321),
        (0.975, 10, 2.2281),
        (0.975, 30, 2.0423),
        (0.975, 999, 1.9623),
        (0.025, 10, -2.2281),
    ],
)
def test_t_quantile_matches_tables(probability: float, df: int, expected: float) -> None:
    assert t_quantile(probability, df) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(("a", "b"), [(8.0, 1.0), (40.0, 1.0), (2.0, 2.0)])
def test_interval_covers_true_mean_in_repeated_trials(a: float, b: float) -> None:
    """200 trials of 200 per-query recalls drawn from a known population (beta-binomial hits
    out of k=10): the 95% interval must contain the population mean in >= 90% of trials, and
    must not buy that coverage by being wide (mean half-width <= 1.5x the normal one)."""
    rng = np.random.default_rng(7)
    population = rng.binomial(K, rng.beta(a, b, size=200_000)) / K
    true_mean = population.mean()
    n_queries, trials = 200, 200
    covered = 0
    half_widths = []
    for _ in range(trials):
        drawn = rng.choice(population, size=n_queries)
        low, high = tune.recall_interval(drawn, K, 0.95)
        covered += low <= true_mean <= high
        half_widths.append((high - low) / 2)
    assert covered / trials >= 0.90
    normal_half_width = 1.96 * population.std() / math.sqrt(n_queries)
    assert np.mean(half_widths) <= 1.5 * normal_half_width


def test_interval_is_not_degenerate_when_all_queries_agree() -> None:
    low, high = tune.recall_interval(np.ones(100), K, 0.95)
    assert 0.99 < low < 1.0 and high == 1.0
    low, high = tune.recall_interval(np.full(100, 0.9), K, 0.95)
    assert low < 0.9 < high


# --- recall -----------------------------------------------------------------------------------


def test_recall_report_fields(index: matry.Index, tuning_queries: np.ndarray) -> None:
    report = tune.recall(index, tuning_queries, k=K, ef=40, num_threads=2)
    assert report.n_queries == len(tuning_queries) and report.held_out
    assert report.ef == 40 and report.k == K
    assert report.ci_low <= report.recall <= report.ci_high
    assert report.per_query.shape == (len(tuning_queries),)
    assert report.recall == pytest.approx(report.per_query.mean())
    assert report.qps > 0 and 0 < report.latency_p50_ms <= report.latency_p99_ms
    # Recount recall@k from scratch with numpy ground truth.
    ids, _ = index.search(tuning_queries, k=K, ef=40)
    normed = np.asarray(index.get(index.ids()))
    queries = tuning_queries / np.linalg.norm(tuning_queries, axis=1, keepdims=True)
    exact = np.argsort(-(queries @ normed.T), axis=1)[:, :K]
    truth = index.ids()[exact]
    hits = [len(set(a) & set(t)) for a, t in zip(ids.tolist(), truth.tolist())]
    assert report.recall == pytest.approx(np.mean(hits) / K, abs=0.01)


def test_recall_defaults_to_index_ef(index: matry.Index, tuning_queries: np.ndarray) -> None:
    assert tune.recall(index, tuning_queries, k=K).ef == index.ef


def test_sampled_queries_exclude_themselves(index: matry.Index) -> None:
    workload = make_workload(index, None, K, sample=300, seed=0, num_threads=2)
    assert workload.self_ids is not None and workload.n_queries == 300
    assert not (workload.exact_ids == workload.self_ids[:, None]).any()
    # An exhaustive search finds exactly the exact neighbours once each query drops itself.
    exhaustive = tune.recall(index, None, k=K, ef=len(index), sample=300)
    assert not exhaustive.held_out
    assert exhaustive.recall >= 0.99  # a self-inclusion mistake costs 1/k = 0.1
    cheap = tune.recall(index, None, k=K, ef=K, sample=300)
    assert cheap.recall < 0.95


# --- ef_for_recall ----------------------------------------------------------------------------


def test_tuned_ef_reaches_target_on_fresh_queries(
    index: matry.Index, tuning_queries: np.ndarray, fresh_queries: np.ndarray
) -> None:
    report = tune.ef_for_recall(index, TARGET, k=K, queries=tuning_queries, num_threads=2)
    assert report.reached and report.recall.ci_low >= TARGET
    assert report.ef > K  # the data is hard enough that ef matters
    evaluated = {point.ef: point for point in report.points}
    assert not evaluated[report.ef - 1].meets_target  # smallest: one less fails
    fresh = tune.recall(index, fresh_queries, k=K, ef=report.ef, num_threads=2)
    assert fresh.recall >= TARGET


def test_ef_for_recall_with_sampled_queries(index: matry.Index) -> None:
    report = tune.ef_for_recall(index, TARGET, k=K, sample=400, num_threads=2)
    assert not report.recall.held_out and report.recall.n_queries == 400
    assert report.recall.ci_low >= TARGET and report.ef > K


def test_tuned_ef_is_saved_with_the_index(
    data: np.ndarray, tuning_queries: np.ndarray, tmp_path: Path
) -> None:
    index = build(data[:2000])
    report = tune.ef_for_recall(index, TARGET, k=K, queries=tuning_queries, set=True)
    assert index.ef == report.ef != 64
    path = tmp_path / "tuned.matry"
    index.save(path)
    assert matry.read_metadata(path)["ef"] == report.ef
    loaded = matry.Index.load(path)
    assert loaded.ef == report.ef
    default_ids, _ = loaded.search(tuning_queries, k=K)
    tuned_ids, _ = loaded.search(tuning_queries, k=K, ef=report.ef)
    np.testing.assert_array_equal(default_ids, tuned_ids)
    again = tune.recall(loaded, tuning_queries, k=K)
    assert again.ef == report.ef and again.recall == pytest.approx(report.recall.recall)


def test_ef_for_recall_without_set_leaves_ef(index: matry.Index, tuning_queries) -> None:
    before = index.ef
    tune.ef_for_recall(index, TARGET, k=K, queries=tuning_queries)
    assert index.ef == before


def _scripted(passing: set[int], floor: int):
    """An evaluator whose pass/fail is scripted: passes at the listed ef and at ef >= floor."""
    calls: list[int] = []

    def evaluate(ef: int) -> tuple[Measurement, EfPoint]:
        calls.append(ef)
        ok = ef in passing or ef >= floor
        point = EfPoint(ef, 0.95 if ok else 0.8, 0.9, 1.0, 1.0, ok)
        return Measurement(ef, np.zeros(1), 1.0), point

    return evaluate, calls


def test_ef_search_finds_smallest_passing_ef() -> None:
    evaluate, calls = _scripted(set(), floor=37)
    found, evaluated = search_ef(evaluate, k=10, ef_max=10_000)
    assert found == 37
    assert len(calls) == len(set(calls)) < 12  # exponential + binary, no repeats
    assert found in evaluated and not evaluated[36][1].meets_target


def test_ef_search_ignores_a_lucky_pass() -> None:
    # 30 passes by noise but 31 fails: the answer is the start of the stable region.
    evaluate, _ = _scripted({30}, floor=35)
    found, _ = search_ef(evaluate, k=10, ef_max=10_000)
    assert found == 35


def test_ef_search_gives_up_at_ef_max() -> None:
    evaluate, calls = _scripted(set(), floor=10**9)
    found, _ = search_ef(evaluate, k=10, ef_max=500)
    assert found is None and max(calls) == 500


class _BrokenIndex:
    """An index whose approximate search never finds the true neighbours."""

    dim = 4
    ef = 64

    def __init__(self) -> None:
        self._vectors = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)

    def __len__(self) -> int:
        return len(self._vectors)

    def ids(self) -> np.ndarray:
        return np.arange(len(self._vectors), dtype=np.int64)

    def get(self, ids: np.ndarray) -> np.ndarray:
        return self._vectors[np.asarray(ids)]

    def exact_search(self, queries, k=10, num_threads=0):
        distances = ((queries[:, None, :] - self._vectors[None]) ** 2).sum(-1)
        order = np.argsort(distances, axis=1)[:, :k]
        return order.astype(np.int64), np.take_along_axis(distances, order, 1).astype(np.float32)

    def search(self, queries, k=10, ef=None, num_threads=0):
        ids, distances = self.exact_search(queries, k=len(self._vectors))
        return ids[:, ::-1][:, :k].copy(), distances[:, ::-1][:, :k].copy()


def test_unreachable_target_raises_with_report() -> None:
    queries = np.random.default_rng(1).normal(size=(200, 4)).astype(np.float32)
    with pytest.raises(tune.TargetUnreachableError, match="^target") as caught:
        tune.ef_for_recall(_BrokenIndex(), 0.5, k=5, queries=queries)  # type: ignore[arg-type]
    report = caught.value.report
    assert not report.reached and report.ef_max == 60
    assert max(point.ef for point in report.points) == 60


def test_target_that_the_sample_cannot_certify(index: matry.Index, tuning_queries) -> None:
    with pytest.raises(ValueError, match="^target: .*cannot be certified with 20 queries"):
        tune.ef_for_recall(index, 0.999, k=K, queries=tuning_queries[:20])


# --- grid -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grid_run(data: np.ndarray, tuning_queries: np.ndarray, tmp_path_factory):
    saved = tmp_path_factory.mktemp("grid") / "recommended.matry"
    report = tune.grid(
        data[:3000],
        tuning_queries,
        Ms=(4, 8),
        ef_constructions=(16, 48),
        k=K,
        target=TARGET,
        num_threads=2,
        progress=False,
        save_index=saved,
        qps_min_seconds=0.05,
    )
    return report, saved


def test_grid_measures_every_configuration(grid_run) -> None:
    report, _ = grid_run
    assert [(c.M, c.ef_construction) for c in report.configs] == [
        (4, 16),
        (4, 48),
        (8, 16),
        (8, 48),
    ]
    for config in report.configs:
        assert config.build_seconds > 0 and config.bytes_per_vector > 4 * DIM
        efs = [point.ef for point in config.points]
        assert efs == sorted(set(efs)) and efs[0] == K and len(efs) >= 4
        assert all(
            p.M == config.M and p.ef_construction == config.ef_construction for p in config.points
        )
    # More links cost more bytes per vector.
    by_m = {c.M: c.bytes_per_vector for c in report.configs if c.ef_construction == 48}
    assert by_m[8] > by_m[4]
    assert report.n_vectors == 3000 and report.n_queries == 400 and report.held_out


def test_frontier_contains_no_dominated_point(grid_run) -> None:
    report, _ = grid_run

    def objectives(p: GridPoint) -> tuple[float, ...]:
        return (p.recall, p.qps, -p.bytes_per_vector, -p.build_seconds)

    assert report.frontier
    for candidate in report.frontier:
        assert not any(
            dominates(objectives(other), objectives(candidate)) for other in report.points
        )
    # ... and every point left out is dominated by one.
    for point in report.points:
        if point not in report.frontier:
            assert any(dominates(objectives(o), objectives(point)) for o in report.points)


def test_pareto_indices_on_known_points() -> None:
    rows = [(0.9, 100.0), (0.95, 50.0), (0.9, 90.0), (0.99, 10.0), (0.95, 50.0), (0.8, 100.0)]
    assert pareto_indices(rows) == [0, 1, 3, 4]


def test_recommended_config_meets_target(grid_run, tuning_queries: np.ndarray) -> None:
    report, saved = grid_run
    rec = report.recommended
    assert rec is not None and rec.tuned and rec.meets_target and rec.ci_low >= TARGET
    tuned_points = [p for p in report.points if p.tuned and p.meets_target]
    assert rec.qps == max(p.qps for p in tuned_points)
    # The saved index is the measured graph at the recommended ef, and meets the target.
    loaded = matry.Index.load(saved)
    assert (loaded.M, loaded.ef_construction, loaded.ef) == (rec.M, rec.ef_construction, rec.ef)
    check = tune.recall(loaded, tuning_queries, k=K, num_threads=2)
    assert check.ci_low >= TARGET
    assert check.recall == pytest.approx(rec.recall)


def test_recommendation_respects_memory_budget(grid_run) -> None:
    report, _ = grid_run
    sizes = sorted({c.bytes_per_vector for c in report.configs})
    budget = sizes[0]
    chosen = recommend(report.configs, budget)
    meeting_small = [
        p for p in report.points if p.tuned and p.meets_target and p.bytes_per_vector <= budget
    ]
    if meeting_small:
        assert chosen is not None and chosen.bytes_per_vector <= budget
    else:
        assert chosen is None
    assert recommend(report.configs, sizes[0] / 2) is None


def test_grid_with_impossible_memory_budget(data: np.ndarray) -> None:
    report = tune.grid(
        data[:1000],
        Ms=(4,),
        ef_constructions=(16,),
        k=K,
        target=TARGET,
        memory_budget=1.0,
        qps_min_seconds=0.0,
        progress=True,
        sample=300,
        num_threads=2,
    )
    assert report.recommended is None and report.memory_budget == 1.0
    assert not report.held_out and report.n_queries == 300
    assert "none: no configuration meets the target" in report.to_markdown()


def test_grid_when_no_ef_reaches_the_target(
    data: np.ndarray, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A search that always loses its best hit cannot reach recall 0.95 at any ef."""
    real_search = matry.Index.search

    def search_missing_the_nearest(self, queries, k=10, **options):
        ids, distances = real_search(self, queries, k=k + 1, **options)
        return ids[:, 1:], distances[:, 1:]

    monkeypatch.setattr(matry.Index, "search", search_missing_the_nearest)
    saved = tmp_path / "never.matry"
    report = tune.grid(
        data[:300],
        data[300:400],
        Ms=(4,),
        ef_constructions=(16,),
        k=K,
        target=0.95,
        progress=False,
        save_index=saved,
        qps_min_seconds=0.0,
    )
    (config,) = report.configs
    assert config.tuned is None and report.recommended is None and not saved.exists()
    assert max(point.ef for point in config.points) == 300  # searched up to the live count
    assert all(not point.meets_target for point in config.points)
    assert "| not reached |" in report.to_markdown()
    report.plot(tmp_path / "never.png")
    assert _png_size(tmp_path / "never.png") == (
        round(PLOT_SIZE_INCHES[0] * PLOT_DPI),
        round(PLOT_SIZE_INCHES[1] * PLOT_DPI),
    )


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR"
    return struct.unpack(">II", header[16:24])


def test_plot_is_a_png_of_the_figure_size(grid_run, tmp_path: Path) -> None:
    report, _ = grid_run
    path = tmp_path / "tune.png"
    report.plot(path)
    expected = (round(PLOT_SIZE_INCHES[0] * PLOT_DPI), round(PLOT_SIZE_INCHES[1] * PLOT_DPI))
    assert _png_size(path) == expected
    assert path.stat().st_size > 10_000  # something was drawn


def test_markdown_and_json(grid_run, tmp_path: Path) -> None:
    report, _ = grid_run
    rec = report.recommended
    markdown = report.to_markdown(tmp_path / "report.md")
    assert (tmp_path / "report.md").read_text() == markdown
    assert (
        f"**Recommended:** M={rec.M}, ef_construction={rec.ef_construction}, ef={rec.ef}"
        in markdown
    )
    assert markdown.count("\n| ") >= len(report.configs) + len(report.frontier) + 2
    data = json.loads(report.to_json(tmp_path / "report.json"))
    assert json.loads((tmp_path / "report.json").read_text()) == data
    assert data["recommended"]["ef"] == rec.ef and data["target"] == TARGET
    assert len(data["configs"]) == len(report.configs)
    assert len(data["frontier"]) == len(report.frontier)


# --- CLI --------------------------------------------------------------------------------------


def _write_fvecs(path: Path, vectors: np.ndarray) -> None:
    dims = np.full((len(vectors), 1), vectors.shape[1], dtype="<i4")
    rows = np.hstack([dims.view("<f4"), vectors.astype("<f4")])
    rows.tofile(path)


def _write_bvecs(path: Path, vectors: np.ndarray) -> None:
    with open(path, "wb") as file:
        for row in vectors:
            file.write(struct.pack("<i", len(row)) + row.astype(np.uint8).tobytes())


@pytest.mark.parametrize("suffix", [".npy", ".fvecs"])
def test_cli_tunes_and_writes_outputs(
    suffix: str, data: np.ndarray, tuning_queries: np.ndarray, tmp_path: Path, capsys
) -> None:
    data_file, query_file = tmp_path / f"data{suffix}", tmp_path / f"queries{suffix}"
    if suffix == ".npy":
        np.save(data_file, data[:2000])
        np.save(query_file, tuning_queries[:300])
    else:
        _write_fvecs(data_file, data[:2000])
        _write_fvecs(query_file, tuning_queries[:300])
    out = {name: tmp_path / name for name in ("plot.png", "report.json", "index.matry")}
    status = tune.cli_main(
        [
            "--data",
            str(data_file),
            "--queries",
            str(query_file),
            "--target",
            str(TARGET),
            "--k",
            str(K),
            "--metric",
            "cosine",
            "--Ms",
            "4,8",
            "--ef-constructions",
            "24",
            "--plot",
            str(out["plot.png"]),
            "--json",
            str(out["report.json"]),
            "--save-index",
            str(out["index.matry"]),
            "--threads",
            "2",
            "--no-progress",
            "--qps-min-seconds",
            "0.05",
        ]
    )
    assert status == 0
    assert "**Recommended:**" in capsys.readouterr().out
    assert _png_size(out["plot.png"])[0] > 0
    report = json.loads(out["report.json"].read_text())
    assert report["n_vectors"] == 2000 and report["n_queries"] == 300
    loaded = matry.Index.load(out["index.matry"])
    assert len(loaded) == 2000
    assert loaded.ef == report["recommended"]["ef"] == matry.read_metadata(out["index.matry"])["ef"]
    assert report["recommended"]["M"] == loaded.M


def test_cli_reports_bad_arguments(tmp_path: Path, capsys) -> None:
    np.save(tmp_path / "d.npy", clustered(50, seed=3))
    status = tune.cli_main(["--data", str(tmp_path / "d.npy"), "--target", "1.5"])
    assert status == 2 and "target: must be in (0, 1]" in capsys.readouterr().err
    assert tune.cli_main(["--data", str(tmp_path / "d.npy"), "--Ms", "8,x"]) == 2
    assert "--Ms" in capsys.readouterr().err
    assert tune.cli_main(["--data", str(tmp_path / "missing.npy")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_vector_readers_round_trip(tmp_path: Path) -> None:
    vectors = clustered(30, seed=4, dim=7)
    np.save(tmp_path / "v.npy", vectors)
    _write_fvecs(tmp_path / "v.fvecs", vectors)
    for name in ("v.npy", "v.fvecs"):
        np.testing.assert_array_equal(tune.read_vectors(tmp_path / name), vectors)
    bytes_ = np.random.default_rng(0).integers(0, 256, size=(9, 5))
    _write_bvecs(tmp_path / "v.bvecs", bytes_)
    np.testing.assert_array_equal(tune.read_vectors(tmp_path / "v.bvecs"), bytes_)
    (tmp_path / "bad.fvecs").write_bytes((tmp_path / "v.fvecs").read_bytes()[:-4])
    with pytest.raises(ValueError, match="not a multiple of the row size"):
        tune.read_vectors(tmp_path / "bad.fvecs")


def test_parquet_and_arrow_list_columns(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    vectors = clustered(20, seed=5, dim=6)
    table = pa.table(
        {
            "word": [f"w{i}" for i in range(20)],
            "embedding": pa.array(vectors.tolist(), type=pa.list_(pa.float32())),
        }
    )
    pq.write_table(table, tmp_path / "v.parquet")
    feather.write_feather(table, tmp_path / "v.arrow")
    for name in ("v.parquet", "v.arrow"):
        np.testing.assert_array_equal(tune.read_vectors(tmp_path / name), vectors)
    ragged = pa.table({"embedding": pa.array([[1.0, 2.0], [3.0]], type=pa.list_(pa.float32()))})
    pq.write_table(ragged, tmp_path / "ragged.parquet")
    with pytest.raises(ValueError, match="row 1 of column 'embedding' has 1 values"):
        tune.read_vectors(tmp_path / "ragged.parquet")
    with pytest.raises(ValueError, match="--column: .* has no column 'nope'"):
        tune.read_vectors(tmp_path / "v.parquet", column="nope")


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [0.0, -0.5, 1.0001, 2.0, float("nan")])
def test_bad_target(index: matry.Index, data: np.ndarray, target: float) -> None:
    with pytest.raises(ValueError, match="^target: must be in"):
        tune.ef_for_recall(index, target)
    with pytest.raises(ValueError, match="^target: must be in"):
        tune.grid(data, target=target, progress=False)


def test_k_larger_than_live_count(index: matry.Index, tuning_queries: np.ndarray) -> None:
    too_many = len(index) + 1
    with pytest.raises(ValueError, match=f"^k: {too_many} is larger than the index's live count"):
        tune.recall(index, tuning_queries, k=too_many)
    with pytest.raises(ValueError, match=f"^k: {too_many} is larger than the index's live count"):
        tune.ef_for_recall(index, k=too_many, queries=tuning_queries)
    with pytest.raises(ValueError, match=f"^k: {len(index)} must be smaller"):
        tune.recall(index, None, k=len(index))


def test_empty_index(tuning_queries: np.ndarray) -> None:
    empty = matry.Index(DIM)
    with pytest.raises(ValueError, match="^index: is empty"):
        tune.recall(empty, tuning_queries)
    with pytest.raises(ValueError, match="^index: is empty"):
        tune.ef_for_recall(empty, queries=tuning_queries)


@pytest.mark.parametrize("bad", [(), [], (8, 0), (-4,), (8, 2.5), "8,16"])
def test_bad_Ms(data: np.ndarray, bad: object) -> None:  # noqa: N802 - M is the HNSW name
    with pytest.raises(ValueError, match="^Ms: "):
        tune.grid(data, Ms=bad, progress=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [(), (100, 0), (-1,), (True,)])
def test_bad_ef_constructions(data: np.ndarray, bad: object) -> None:
    with pytest.raises(ValueError, match="^ef_constructions: "):
        tune.grid(data, ef_constructions=bad, progress=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5, -0.1])
def test_bad_confidence(index: matry.Index, tuning_queries, confidence: float) -> None:
    with pytest.raises(ValueError, match="^confidence: must be in"):
        tune.ef_for_recall(index, queries=tuning_queries, confidence=confidence)
    with pytest.raises(ValueError, match="^confidence: must be in"):
        tune.recall(index, tuning_queries, confidence=confidence)


def test_bad_queries_and_efs(index: matry.Index, data: np.ndarray) -> None:
    with pytest.raises(ValueError, match="^queries: has dimension 3, the index has 24"):
        tune.recall(index, np.ones((5, 3)))
    with pytest.raises(ValueError, match="^queries: row 1 contains NaN"):
        tune.recall(index, np.array([[0.5] * DIM, [np.nan] * DIM]))
    with pytest.raises(ValueError, match="^efs: "):
        tune.grid(data, efs=(10, 0), progress=False)
    with pytest.raises(ValueError, match="^memory_budget: "):
        tune.grid(data, memory_budget=-5, progress=False)
