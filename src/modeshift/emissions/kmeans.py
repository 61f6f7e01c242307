"""k-means with k-means++ seeding, for starting values of Gaussian emissions."""

from __future__ import annotations

import numpy as np

__all__ = ["kmeans"]


def kmeans(
    points: np.ndarray, n_clusters: int, rng: np.random.Generator, n_iter: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster centres (n_clusters, D) and labels (n,) by Lloyd's algorithm.

    Seeds are chosen by k-means++ (Arthur & Vassilvitskii, 2007): each new seed
    is drawn with probability proportional to its squared distance from the
    nearest seed so far. A cluster that empties keeps its centre.
    """
    n = points.shape[0]
    centres = np.empty((n_clusters, points.shape[1]))
    centres[0] = points[rng.integers(n)]
    nearest = _squared_distances(points, centres[:1])[:, 0]
    for c in range(1, n_clusters):
        total = nearest.sum()
        index = rng.choice(n, p=nearest / total) if total > 0 else rng.integers(n)
        centres[c] = points[index]
        nearest = np.minimum(nearest, _squared_distances(points, centres[c : c + 1])[:, 0])
    labels = np.zeros(n, dtype=np.int64)
    for iteration in range(n_iter):
        new_labels = np.argmin(_squared_distances(points, centres), axis=1)
        if iteration > 0 and np.array_equal(new_labels, labels):
            break
        labels = new_labels
        counts = np.bincount(labels, minlength=n_clusters)
        sums = np.stack([np.bincount(labels, column, n_clusters) for column in points.T], axis=1)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return centres, labels


def _squared_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    cross = points @ centres.T
    return np.maximum((points**2).sum(axis=1)[:, None] - 2.0 * cross + (centres**2).sum(axis=1)[None, :], 0.0)
