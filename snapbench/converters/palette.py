"""6- and 4-bit lookup tables for fp16 weights: exact 1-D k-means on the histogram of a tensor's values.

coremltools' k-means palettisation clusters every element of a tensor (scikit-learn's KMeans, or
`kmeans1d` on `np.unique`'s output when a version of it that takes weights is installed); sorting
millions of fp16 values alone takes seconds per tensor, and SD-v1.5's UNet has ~700 of them.
An fp16 tensor has at most 65,536 distinct values, so here:
1. the histogram of its bit patterns (`np.bincount` on the uint16 view, linear time),
2. 1-D k-means of those values weighted by their counts: the exact optimum (Wang & Song's dynamic
   programme over the sorted values, each layer solved by divide and conquer on the monotone split
   points, O(k n log n) for n distinct values) when n <= EXACT_UP_TO; else that exact optimum of the
   values merged into at most EXACT_UP_TO runs (cut at equal steps of value, which keeps sparse
   tails apart, and at equal numbers of distinct values, which keeps the dense middle fine), refined
   by Lloyd's iterations on the full histogram to a local optimum (within 0.1% of the exact optimum
   on SD-like tensors, tests; ~0.1-0.2 s a tensor instead of ~1 s),
3. the index of every element through a 65,536-entry table from bit pattern to cluster.
coremltools then only packs the indices and builds the constexpr_lut_to_dense op (`lut_function`
of OpPalettizerConfig(mode="custom")).
"""

from __future__ import annotations

import numpy as np


def fp16_histogram(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct values of an fp16 tensor (ascending, float64), their counts and their uint16 bit patterns."""
    bits = np.ascontiguousarray(weight, dtype=np.float16).reshape(-1).view(np.uint16)
    counts = np.bincount(bits, minlength=1 << 16)
    patterns = np.flatnonzero(counts).astype(np.uint16)
    values = patterns.view(np.float16).astype(np.float64)
    order = np.argsort(values, kind="stable")
    return values[order], counts[patterns[order]].astype(np.float64), patterns[order]


def kmeans_1d(values: np.ndarray, counts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Optimal k-means of sorted 1-D `values` with weights `counts`: (centroids, cluster of each value).

    Minimises sum(count * (value - centroid)^2). Optimal clusters are runs of consecutive sorted values,
    so D[m][i] = min_j D[m-1][j] + SSE(values[j:i]) (the best cost of the first i values in m clusters),
    with the best j non-decreasing in i: each layer is solved by divide and conquer, all the
    sub-problems of one recursion level in one vectorised step.
    """
    n = len(values)
    if n <= k:  # every distinct value is its own centroid
        return values.astype(np.float64).copy(), np.arange(n)
    w = np.concatenate(([0.0], np.cumsum(counts)))
    s1 = np.concatenate(([0.0], np.cumsum(counts * values)))
    s2 = np.concatenate(([0.0], np.cumsum(counts * values * values)))

    def sse(j: np.ndarray, i: np.ndarray) -> np.ndarray:  # cost of one cluster holding values[j:i]
        return np.maximum(s2[i] - s2[j] - (s1[i] - s1[j]) ** 2 / (w[i] - w[j]), 0.0)

    everything = np.arange(n + 1)
    cost = np.full(n + 1, np.inf)
    cost[1:] = sse(np.zeros(n, dtype=np.int64), everything[1:])
    splits = np.zeros((k, n + 1), dtype=np.int64)  # splits[m][i]: where the last cluster of D[m][i] starts
    for m in range(1, k):
        cost, splits[m] = _layer(cost, sse, m + 1, n)
    # walk back from all n values in k clusters
    bounds = [n]
    for m in range(k - 1, 0, -1):
        bounds.append(int(splits[m][bounds[-1]]))
    bounds.append(0)
    bounds = bounds[::-1]
    centroids = np.array([(s1[b] - s1[a]) / (w[b] - w[a]) for a, b in zip(bounds[:-1], bounds[1:])])
    cluster = np.repeat(np.arange(k), np.diff(bounds))
    return centroids, cluster


def _layer(prev: np.ndarray, sse, m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """D[m][i] for i in [m, n] from D[m-1], and the split points (the start of the m-th cluster)."""
    cur = np.full(n + 1, np.inf)
    arg = np.zeros(n + 1, dtype=np.int64)
    # sub-problems: values i in [ilo, ihi] whose best split lies in [jlo, jhi]
    ilo, ihi = np.array([m]), np.array([n])
    jlo, jhi = np.array([m - 1]), np.array([n - 1])
    while ilo.size:
        mid = (ilo + ihi) // 2
        hi = np.minimum(jhi, mid - 1)
        lens = hi - jlo + 1
        starts = np.cumsum(lens) - lens
        j = np.arange(lens.sum()) - np.repeat(starts - jlo, lens)
        i = np.repeat(mid, lens)
        c = prev[j] + sse(j, i)
        best_cost = np.minimum.reduceat(c, starts)
        ties = np.flatnonzero(c == np.repeat(best_cost, lens))
        best = j[ties[np.searchsorted(ties, starts)]]  # the first minimum of each sub-problem
        cur[mid], arg[mid] = best_cost, best
        left, right = ilo <= mid - 1, mid + 1 <= ihi
        ilo, ihi, jlo, jhi = (np.concatenate((ilo[left], mid[right] + 1)), np.concatenate((mid[left] - 1, ihi[right])),
                              np.concatenate((jlo[left], best[right])), np.concatenate((best[left], jhi[right])))
    return cur, arg


EXACT_UP_TO = 2048  # distinct values clustered exactly; above, runs of them first (see the docstring)


def histogram_kmeans(values: np.ndarray, counts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means of a histogram (sorted values, counts): exact when small, else coarse-exact + Lloyd."""
    n = len(values)
    if n <= EXACT_UP_TO:
        return kmeans_1d(values, counts, k)
    runs = EXACT_UP_TO // 2
    span = values[-1] - values[0]
    by_value = np.minimum(((values - values[0]) / span * runs).astype(np.int64), runs - 1)
    by_rank = np.arange(n) * runs // n
    key = by_value * (runs + 1) + by_rank  # non-decreasing: a new run where either cut falls
    starts = np.concatenate(([0], np.flatnonzero(np.diff(key)) + 1))
    run_counts = np.add.reduceat(counts, starts)
    run_values = np.add.reduceat(counts * values, starts) / run_counts
    _, run_cluster = kmeans_1d(run_values, run_counts, k)
    firsts = starts[1:][np.diff(run_cluster) != 0]  # where each cluster after the first starts
    return lloyd_1d(values, counts, firsts)


def lloyd_1d(values: np.ndarray, counts: np.ndarray, firsts: np.ndarray,
             max_steps: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means on a sorted histogram from clusters starting at `firsts`; each step costs
    O(k log n) (cluster sums from prefix sums, boundaries by binary search), not O(elements)."""
    n = len(values)
    w = np.concatenate(([0.0], np.cumsum(counts)))
    s1 = np.concatenate(([0.0], np.cumsum(counts * values)))
    for _ in range(max_steps):
        edges = np.concatenate(([0], firsts, [n]))
        centroids = (s1[edges[1:]] - s1[edges[:-1]]) / (w[edges[1:]] - w[edges[:-1]])
        moved = np.searchsorted(values, (centroids[:-1] + centroids[1:]) / 2, side="right")
        # converged; or a step would empty a cluster (no value between two midpoints): stop before it
        if np.array_equal(moved, firsts) or (np.diff(np.concatenate(([0], moved, [n]))) <= 0).any():
            break
        firsts = moved
    edges = np.concatenate(([0], firsts, [n]))
    centroids = (s1[edges[1:]] - s1[edges[:-1]]) / (w[edges[1:]] - w[edges[:-1]])
    return centroids, np.repeat(np.arange(len(edges) - 1), np.diff(edges))


def palettize_fp16(weight: np.ndarray, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    """(lookup table of 2**nbits fp16 values, uint8 index of every element, flattened) for one tensor."""
    values, counts, patterns = fp16_histogram(weight)
    k = 1 << nbits
    centroids, cluster = histogram_kmeans(values, counts, k)
    lut = np.zeros(k, dtype=np.float16)
    lut[: len(centroids)] = centroids.astype(np.float16)
    table = np.zeros(1 << 16, dtype=np.uint8)  # bit pattern -> cluster
    table[patterns] = cluster
    bits = np.ascontiguousarray(weight, dtype=np.float16).reshape(-1).view(np.uint16)
    return lut, table[bits]


def clustering_error(weight: np.ndarray, lut: np.ndarray, indices: np.ndarray) -> float:
    """Sum of squared differences between a tensor and its palettised version (in float64)."""
    w = np.asarray(weight, dtype=np.float64).reshape(-1)
    return float(np.sum((w - np.asarray(lut, dtype=np.float64)[np.asarray(indices).reshape(-1)]) ** 2))
