"""Shortcut discovery without knowing the shortcut: spectral relevance analysis (SpRAy).

Lapuschkin et al. (2019) cluster a class's saliency maps and look for a group of images that the
model explains by something other than the object, such as a source tag in a corner. Here the
look is automated: per class, the maps are pooled to a coarse grid, normalised to unit mass, and
clustered spectrally with the number of clusters taken from the eigengap of the graph Laplacian.
A cluster is suspicious when its mean map differs from the rest of the class (total variation
distance) and its extra relevance sits in one compact window; the class score is the product of
the two for its most suspicious cluster.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from auditor.inputs.layers import final_layer_input

MIN_CLUSTER = 4  # smaller clusters are noise, not a strategy


@dataclass
class ClassDiscovery:
    """SpRAy's outcome for one class."""

    label: int
    name: str
    positions: np.ndarray  # sample positions of the class's maps, in order
    clusters: np.ndarray  # cluster of each map
    k: int
    eigenvalues: np.ndarray  # smallest eigenvalues of the normalised Laplacian
    means: np.ndarray  # (k, grid, grid) mean map per cluster
    cluster_stats: list[dict] = field(default_factory=list)  # per cluster: size, shift, ...
    score: float = 0.0
    suspect: int | None = None  # the most suspicious cluster
    flagged: bool = False

    def summary(self) -> dict:
        stats = self.cluster_stats[self.suspect] if self.suspect is not None else {}
        return {"score": round(self.score, 4), "flagged": self.flagged, "n": len(self.positions),
                "clusters": self.k, "sizes": [int(s["size"]) for s in self.cluster_stats],
                "suspect_cluster": self.suspect,
                **{key: round(float(stats[key]), 4) for key in ("shift", "compactness",
                                                                "border_share") if key in stats}}


def pooled_maps(attributions: np.ndarray, grid: int) -> np.ndarray:
    """|attribution| summed over channels, area-pooled to (grid, grid), normalised to mass 1."""
    import cv2

    heat = np.abs(np.asarray(attributions, np.float32)).sum(axis=-1)
    size = min(grid, heat.shape[1], heat.shape[2])
    pooled = np.stack([cv2.resize(h, (size, size), interpolation=cv2.INTER_AREA) for h in heat])
    mass = pooled.sum(axis=(1, 2), keepdims=True)
    return pooled / np.where(mass > 0, mass, 1.0)


def spectral_clusters(maps: np.ndarray, k_max: int = 5, neighbours: int = 10,
                      seed: int = 0) -> tuple[np.ndarray, int, np.ndarray]:
    """Cluster maps on their symmetric k-nearest-neighbour graph; k from the largest eigengap."""
    from scipy.sparse.csgraph import laplacian
    from sklearn.cluster import SpectralClustering
    from sklearn.neighbors import kneighbors_graph

    n = len(maps)
    if n < 2 * MIN_CLUSTER:
        return np.zeros(n, int), 1, np.zeros(1)
    graph = kneighbors_graph(maps.reshape(n, -1), min(neighbours, n - 1), include_self=False)
    affinity = (0.5 * (graph + graph.T)).toarray()
    eigenvalues = np.linalg.eigvalsh(laplacian(affinity, normed=True))[:k_max + 1]
    k = int(np.argmax(np.diff(eigenvalues))) + 1
    if k == 1:
        return np.zeros(n, int), 1, eigenvalues
    with warnings.catch_warnings():  # a disconnected graph is a finding here, not a problem
        warnings.filterwarnings("ignore", "Graph is not fully connected")
        clusters = SpectralClustering(k, affinity="precomputed", random_state=seed,
                                      assign_labels="cluster_qr").fit_predict(affinity)
    return clusters, k, eigenvalues


def cluster_statistics(maps: np.ndarray, clusters: np.ndarray, k: int) -> list[dict]:
    """Per cluster: how far its mean map is from the rest of the class, and how compact the
    difference is (the share of its extra mass inside the best window of 1/16 of the image)."""
    from scipy.ndimage import uniform_filter

    grid = maps.shape[1]
    window = max(1, grid // 4)
    border = np.ones(maps.shape[1:], bool)
    border[1:-1, 1:-1] = False
    stats = []
    for c in range(k):
        members = clusters == c
        size = int(members.sum())
        if size < MIN_CLUSTER or size == len(maps):
            stats.append({"size": size, "shift": 0.0, "compactness": 0.0, "border_share": 0.0,
                          "suspicion": 0.0})
            continue
        excess = np.maximum(maps[members].mean(0) - maps[~members].mean(0), 0)
        shift = float(excess.sum())  # = total variation distance between the two mean maps
        share = excess / shift if shift > 0 else excess
        compact = float(uniform_filter(share, window, mode="constant").max() * window * window)
        stats.append({"size": size, "shift": shift, "compactness": compact,
                      "border_share": float(share[border].sum()), "suspicion": shift * compact})
    return stats


def discover_class(maps: np.ndarray, positions: np.ndarray, label: int, name: str, *,
                   threshold: float, k_max: int = 5, neighbours: int = 10,
                   seed: int = 0) -> ClassDiscovery:
    """SpRAy on one class's pooled maps; flagged when the most suspicious cluster's score
    reaches ``threshold``."""
    clusters, k, eigenvalues = spectral_clusters(maps, k_max, neighbours, seed)
    means = np.stack([maps[clusters == c].mean(0) for c in range(k)])
    stats = cluster_statistics(maps, clusters, k)
    suspicion = [s["suspicion"] for s in stats]
    suspect = int(np.argmax(suspicion)) if k > 1 else None
    score = float(max(suspicion)) if k > 1 else 0.0
    return ClassDiscovery(label=label, name=name, positions=positions, clusters=clusters, k=k,
                          eigenvalues=eigenvalues, means=means, cluster_stats=stats, score=score,
                          suspect=suspect, flagged=score >= threshold)


def discover(handle, images: np.ndarray, labels: np.ndarray, positions: np.ndarray,
             class_names: list[str], method: str = "gradient", *, grid: int = 16,
             k_max: int = 5, threshold: float = 0.15,
             seed: int = 0) -> tuple[list[ClassDiscovery], np.ndarray]:
    """SpRAy on every class of the model's maps of its own images (explaining the label):
    the classes, flagged first then by score, and the pooled maps in the order of ``images``."""
    from auditor.methods.attribution import attribute

    maps = pooled_maps(attribute(handle, images, labels, method), grid)
    found = [discover_class(maps[labels == c], positions[labels == c], int(c), class_names[c],
                            threshold=threshold, k_max=k_max, seed=seed)
             for c in np.unique(labels)]
    found.sort(key=lambda d: (not d.flagged, -d.score))
    return found, maps


def embed_2d(points: np.ndarray, seed: int = 0) -> np.ndarray:
    """A 2-D t-SNE embedding (PCA to 50 dimensions first when there are more).

    One thread: scikit-learn's OpenMP threads slow t-SNE down tenfold when the cores are busy,
    and the audit shares them with TensorFlow."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    points = np.asarray(points, np.float32).reshape(len(points), -1)
    if len(points) < 4:
        return np.zeros((len(points), 2), np.float32)
    if points.shape[1] > 50 and len(points) > 50:
        points = PCA(50, random_state=seed).fit_transform(points)
    perplexity = float(min(30, max(2, (len(points) - 1) // 3)))
    with threadpool_limits(1):
        return TSNE(2, perplexity=perplexity, init="pca", random_state=seed,
                    max_iter=500).fit_transform(points).astype(np.float32)


def penultimate_features(handle, images: np.ndarray, batch_size: int = 256) -> np.ndarray | None:
    """The input of the model's final layer for each image, or None when the model cannot be
    split there (a subclassed model or a SavedModel wrapper)."""
    features = final_layer_input(handle)
    if features is None:
        return None
    chunks = [np.asarray(features(images[i:i + batch_size], training=False))
              for i in range(0, len(images), batch_size)]
    flat = [c.reshape(len(c), -1) for c in chunks]
    return np.concatenate(flat) if flat else None
