"""palette.py: k-means of an fp16 tensor's histogram, against brute force and against coremltools' k-means."""

import itertools

import numpy as np
import pytest

from snapbench.converters.palette import (
    EXACT_UP_TO,
    clustering_error,
    fp16_histogram,
    histogram_kmeans,
    kmeans_1d,
    lloyd_1d,
    palettize_fp16,
)


def _sse(values, counts, centroids, cluster):
    return float(np.sum(counts * (values - centroids[cluster]) ** 2))


def _brute_force(values, counts, k):
    """The best cost over every way of cutting the sorted values into k runs."""
    n, best = len(values), np.inf
    for cuts in itertools.combinations(range(1, n), k - 1):
        edges = (0, *cuts, n)
        cost = 0.0
        for a, b in zip(edges[:-1], edges[1:]):
            mu = np.sum(counts[a:b] * values[a:b]) / np.sum(counts[a:b])
            cost += np.sum(counts[a:b] * (values[a:b] - mu) ** 2)
        best = min(best, cost)
    return best


def test_kmeans_1d_is_the_optimum():
    rng = np.random.default_rng(0)
    for _ in range(40):
        n = int(rng.integers(2, 11))
        k = int(rng.integers(1, min(n, 5) + 1))
        values = np.sort(rng.standard_normal(n) * rng.choice([1e-3, 1.0, 50.0]))
        counts = rng.integers(1, 30, n).astype(np.float64)
        centroids, cluster = kmeans_1d(values, counts, k)
        assert len(centroids) == k and (np.diff(cluster) >= 0).all()
        assert _sse(values, counts, centroids, cluster) == pytest.approx(_brute_force(values, counts, k),
                                                                         rel=1e-9, abs=1e-12)


def test_fewer_distinct_values_than_entries_are_kept_exactly():
    w = np.array([[0.5, -1.0], [0.5, 2.0]], dtype=np.float16)
    lut, indices = palettize_fp16(w, 6)
    assert lut.dtype == np.float16 and lut.shape == (64,) and indices.dtype == np.uint8
    assert np.array_equal(lut[indices].reshape(w.shape), w)


def test_histogram_counts_every_element():
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((50, 70)) * 0.02).astype(np.float16)
    values, counts, patterns = fp16_histogram(w)
    assert counts.sum() == w.size and (np.diff(values) >= 0).all()
    assert np.array_equal(np.sort(np.unique(w).astype(np.float64)), np.unique(values))


@pytest.mark.parametrize("tail", ["normal", "student_t3"])
def test_large_tensor_is_near_the_exact_optimum(tail):
    """Above EXACT_UP_TO distinct values: within 0.1% of the exact k-means of the same histogram."""
    rng = np.random.default_rng(2)
    raw = rng.standard_normal(200_000) if tail == "normal" else rng.standard_t(3, 200_000)
    values, counts, _ = fp16_histogram((raw * 0.02).astype(np.float16))
    assert len(values) > EXACT_UP_TO  # the coarse + Lloyd path
    exact = _sse(values, counts, *kmeans_1d(values, counts, 64))
    fast = _sse(values, counts, *histogram_kmeans(values, counts, 64))
    assert exact <= fast <= exact * 1.001


def test_lloyd_never_empties_a_cluster():
    values = np.array([0.0, 10.0, 20.0, 20.1, 20.2])
    counts = np.ones(5)
    centroids, cluster = lloyd_1d(values, counts, np.array([1, 2]))
    assert np.isfinite(centroids).all() and sorted(set(cluster.tolist())) == [0, 1, 2]


def test_matches_coremltools_kmeans_on_a_conv_weight():
    """coremltools' own k-means (what OpPalettizerConfig(mode="kmeans") runs here: scikit-learn on every
    element) vs palette.py on the same tensor: the same error to 0.1% (here scikit-learn finds the exact
    optimum of this small tensor, and the coarse + Lloyd path is 0.03% above it)."""
    from coremltools.models.neural_network.quantization_utils import _get_kmeans_lookup_table_and_weight

    rng = np.random.default_rng(3)
    w = (rng.standard_normal((64, 32, 3, 3)) * 0.05).astype(np.float16)
    theirs_lut, theirs_idx = _get_kmeans_lookup_table_and_weight(6, w)
    ours_lut, ours_idx = palettize_fp16(w, 6)
    theirs = clustering_error(w, np.asarray(theirs_lut).astype(np.float16), theirs_idx)
    ours = clustering_error(w, ours_lut, ours_idx)
    assert ours <= theirs * 1.001


def test_a_palettized_package_holds_the_histogram_palettes(tmp_path):
    """Through coremltools: the 6-bit package's conv weight, decompressed, is palette.py's table lookup of
    the fp16 weight, and the table (64 entries) is what palettize_fp16 computed."""
    import coremltools as ct
    import torch
    from torch import nn

    from snapbench.converters.compression import compress
    from snapbench.converters.convert_package import to_coreml, trace
    from snapbench.converters.options import ConvertOptions
    from snapbench.converters.package_io import PackageIO
    from snapbench.converters.runtime import conversion_context

    torch.manual_seed(0)
    conv = nn.Conv2d(32, 64, 3, padding=1).eval()
    io = PackageIO((("x", (1, 32, 8, 8)),), (("y", (1, 64, 8, 8)),))
    opts = ConvertOptions(mode="deploy", weight_bits=6)
    with conversion_context():
        mlmodel = compress(to_coreml(trace(conv, (torch.randn(1, 32, 8, 8),)), io, opts), opts)
    fp16 = conv.weight.detach().numpy().astype(np.float16)
    lut, indices = palettize_fp16(fp16, 6)
    dense = ct.optimize.coreml.decompress_weights(mlmodel)
    weights = [v.val for v in ct.optimize.coreml.get_weights_metadata(dense, weight_threshold=2048).values()]
    assert len(weights) == 1 and weights[0].shape == fp16.shape
    assert np.array_equal(weights[0], lut[indices].reshape(fp16.shape))
