"""Shortcut discovery without knowing the shortcut: spectral relevance analysis (SpRAy).

Lapuschkin et al. (2019) cluster a class's saliency maps and look for a group of images that the
model explains by something other than the object, such as a source tag in a corner. Here the
look is automated: per class, the maps are pooled to a coarse grid, normalised to unit mass, and
clustered spectrally with the number of clusters taken from the eigengap of the graph Laplacian.
Clusters whose difference from the class has the same pattern are twins and are merged (marked
images that fall into two clusters must not be compared with a rest that holds the other half).
Each group is compared with the class's other groups: its shift is the total variation distance
between the two mean maps, its concentration how much of its extra relevance sits in one region
the data suggests (a compact window, a band along one border, or the whole frame) beyond that
region's area. The class score is shift x concentration of its most suspicious group.

The same groups are found in the model's penultimate features (a tight subgroup far from the
rest of its class is a candidate even where the maps are flat, as for a colour cast): the score
there is the distance between the group's and the rest's centroids over the class's spread.

Neither score has a natural scale, so each is calibrated against the model's other classes:
a class is a candidate when its log score lies above the others' median by ``Z_FALSE_ALARM``
robust standard deviations (median absolute deviation x 1.4826), a one-sided Gaussian false-
alarm rate of ``FALSE_ALARM`` per class and signal. A candidate is a hypothesis: it becomes a
finding only when an intervention (``intervention.py``) shows that the model uses it.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field

import numpy as np

MIN_CLUSTER = 4  # smaller clusters are noise, not a strategy
TWIN = 0.5  # clusters whose differences from the class have this cosine similarity are merged
FALSE_ALARM = 0.01  # stated per-class false-alarm rate of each signal under the null
Z_FALSE_ALARM = 2.326  # the one-sided standard normal quantile of 1 - FALSE_ALARM
MIN_NULL = 4  # fewer other classes than this: no null, the fallback bounds below apply
# Fallback bounds for models with fewer than MIN_NULL + 1 classes: the medians of the null bounds
# measured on a different architecture and seed than the demo and its fine-tuned copies
# (docs/clever_hans.md; bench/clever_hans.py --discovery --model other --verbose).
FALLBACK_MAP_BOUND = 0.09
FALLBACK_FEATURE_BOUND = 2.5
MIN_LOG_SPREAD = 0.25  # a null whose classes agree closer than this (x1.28) is not trusted


@dataclass
class Region:
    """A region of the image the data suggests: a box on the pooled grid, and its name."""

    name: str  # e.g. "lower right corner", "bottom border", "frame"
    mask: np.ndarray  # (grid, grid) bool

    def pixels(self, height: int, width: int) -> np.ndarray:
        """The region as a (height, width) float mask in [0, 1]."""
        import cv2

        return cv2.resize(self.mask.astype(np.float32), (width, height),
                          interpolation=cv2.INTER_NEAREST)


@dataclass
class ClassDiscovery:
    """One signal's outcome (maps or features) for one class."""

    label: int
    name: str
    positions: np.ndarray  # sample positions of the class's images, in order
    clusters: np.ndarray  # group of each image, after merging twins
    k: int  # groups after merging
    eigenvalues: np.ndarray  # smallest eigenvalues of the normalised Laplacian
    means: np.ndarray  # (k, ...) mean map (or feature) per group
    signal: str = "maps"
    cluster_stats: list[dict] = field(default_factory=list)  # per group: size, shift, ...
    score: float = 0.0
    suspect: int | None = None  # the most suspicious group
    region: Region | None = None  # where the suspect group's extra relevance sits (maps)
    bound: float = float("inf")  # the calibrated bound the score is held against
    flagged: bool = False

    @property
    def members(self) -> np.ndarray:
        """Positions of the suspect group's images."""
        if self.suspect is None:
            return self.positions[:0]
        return self.positions[self.clusters == self.suspect]

    def summary(self) -> dict:
        stats = self.cluster_stats[self.suspect] if self.suspect is not None else {}
        out = {"score": round(self.score, 4), "bound": round(min(self.bound, 1e9), 4),
               "flagged": self.flagged, "n": len(self.positions), "clusters": self.k,
               "sizes": [int(s["size"]) for s in self.cluster_stats],
               "suspect_cluster": self.suspect,
               **{key: round(float(stats[key]), 4) for key in ("shift", "concentration",
                                                               "separation") if key in stats}}
        if self.region is not None:
            out["region"] = self.region.name
        return out


def pooled_maps(attributions: np.ndarray, grid: int) -> np.ndarray:
    """|attribution| summed over channels, area-pooled to (grid, grid), normalised to mass 1."""
    import cv2

    heat = np.abs(np.asarray(attributions, np.float32)).sum(axis=-1)
    size = min(grid, heat.shape[1], heat.shape[2])
    pooled = np.stack([cv2.resize(h, (size, size), interpolation=cv2.INTER_AREA) for h in heat])
    mass = pooled.sum(axis=(1, 2), keepdims=True)
    return pooled / np.where(mass > 0, mass, 1.0)


def spectral_clusters(points: np.ndarray, k_max: int = 5, neighbours: int = 10,
                      seed: int = 0) -> tuple[np.ndarray, int, np.ndarray]:
    """Cluster points on their symmetric k-nearest-neighbour graph; k from the largest eigengap,
    but at least 2: a class the eigengap calls one cluster still gets its best split scored, so
    that every class adds a value to the null the others are calibrated against."""
    from scipy.sparse.csgraph import laplacian
    from sklearn.cluster import SpectralClustering
    from sklearn.neighbors import kneighbors_graph

    n = len(points)
    if n < 2 * MIN_CLUSTER:
        return np.zeros(n, int), 1, np.zeros(1)
    graph = kneighbors_graph(points.reshape(n, -1), min(neighbours, n - 1), include_self=False)
    affinity = (0.5 * (graph + graph.T)).toarray()
    eigenvalues = np.linalg.eigvalsh(laplacian(affinity, normed=True))[:k_max + 1]
    k = max(2, int(np.argmax(np.diff(eigenvalues))) + 1)
    with warnings.catch_warnings():  # a disconnected graph is a finding here, not a problem
        warnings.filterwarnings("ignore", "Graph is not fully connected")
        clusters = SpectralClustering(k, affinity="precomputed", random_state=seed,
                                      assign_labels="cluster_qr").fit_predict(affinity)
    return clusters, k, eigenvalues


def merge_twins(points: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Clusters relabelled 0..k'-1 after merging those whose mean differs from the class mean
    in the same direction (cosine >= TWIN): one strategy split in two is still one strategy."""
    flat = points.reshape(len(points), -1)
    labels = np.unique(clusters)
    centre = flat.mean(0)
    directions = np.stack([flat[clusters == c].mean(0) - centre for c in labels])
    norms = np.linalg.norm(directions, axis=1, keepdims=True)
    unit = directions / np.where(norms > 0, norms, 1)
    parent = list(range(len(labels)))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            if unit[i] @ unit[j] >= TWIN:
                parent[root(j)] = root(i)
    roots = np.array([root(i) for i in range(len(labels))])
    _, merged = np.unique(roots, return_inverse=True)
    return merged[np.searchsorted(labels, clusters)]


def candidate_regions(grid: int) -> list[Region]:
    """Compact windows (a quarter of the side) at every position, a band along each border
    (one and two cells wide), and the frame one cell wide."""
    regions = []
    side = max(1, grid // 4)
    for top in range(grid - side + 1):
        for left in range(grid - side + 1):
            mask = np.zeros((grid, grid), bool)
            mask[top:top + side, left:left + side] = True
            regions.append(Region(window_name(top + side / 2, left + side / 2, grid), mask))
    for width in (1, 2):
        for name, cut in (("top", np.s_[:width, :]), ("bottom", np.s_[-width:, :]),
                          ("left", np.s_[:, :width]), ("right", np.s_[:, -width:])):
            mask = np.zeros((grid, grid), bool)
            mask[cut] = True
            regions.append(Region(f"{name} border", mask))
    frame = np.ones((grid, grid), bool)
    frame[1:-1, 1:-1] = False
    regions.append(Region("frame", frame))
    return regions


def window_name(row: float, col: float, grid: int) -> str:
    """'lower right corner', 'top centre', 'centre', ... for a window centred at (row, col)."""
    third = grid / 3
    vertical = ("upper", "middle", "lower")[min(2, int(row // third))]
    horizontal = ("left", "centre", "right")[min(2, int(col // third))]
    if vertical == "middle" and horizontal == "centre":
        return "centre"
    if vertical == "middle":
        return f"{horizontal} edge"
    if horizontal == "centre":
        return f"{'top' if vertical == 'upper' else 'bottom'} centre"
    return f"{vertical} {horizontal} corner"


def concentration(excess: np.ndarray, regions: list[Region]) -> tuple[float, Region | None]:
    """How much of ``excess`` (non-negative, on the grid) one region holds beyond its area:
    max over regions of (share - area) / (1 - area), 0 for an even spread; and that region."""
    total = excess.sum()
    if total <= 0 or not regions:
        return 0.0, None
    masks = np.stack([r.mask for r in regions]).reshape(len(regions), -1)
    share = masks @ excess.reshape(-1) / total
    area = masks.mean(axis=1)
    lift = (share - area) / (1 - area)
    best = int(np.argmax(lift))
    return float(max(lift[best], 0.0)), regions[best]


def map_statistics(maps: np.ndarray, groups: np.ndarray,
                   regions: list[Region]) -> tuple[list[dict], list[Region | None]]:
    """Per group against the class's other groups: shift (total variation distance between the
    mean maps), concentration of the extra relevance, their product, and the region."""
    stats, where = [], []
    for g in range(int(groups.max()) + 1):
        members = groups == g
        size = int(members.sum())
        if size < MIN_CLUSTER or size == len(maps):
            stats.append({"size": size, "shift": 0.0, "concentration": 0.0, "suspicion": 0.0})
            where.append(None)
            continue
        excess = np.maximum(maps[members].mean(0) - maps[~members].mean(0), 0)
        shift = float(excess.sum())
        focus, region = concentration(excess, regions)
        stats.append({"size": size, "shift": shift, "concentration": focus,
                      "suspicion": shift * focus})
        where.append(region)
    return stats, where


def feature_statistics(features: np.ndarray, groups: np.ndarray) -> list[dict]:
    """Per group: the distance between its centroid and the rest of the class's, over the
    group's own spread (root mean square distance to its centroid): tight and far is high."""
    stats = []
    for g in range(int(groups.max()) + 1):
        members = groups == g
        size = int(members.sum())
        if size < MIN_CLUSTER or size == len(features):
            stats.append({"size": size, "separation": 0.0, "suspicion": 0.0})
            continue
        inside, outside = features[members], features[~members]
        gap = float(np.linalg.norm(inside.mean(0) - outside.mean(0)))
        spread = float(np.sqrt(((inside - inside.mean(0)) ** 2).sum(axis=1).mean()))
        separation = gap / max(spread, 1e-6)
        stats.append({"size": size, "separation": separation, "suspicion": separation})
    return stats


def discover_class(points: np.ndarray, positions: np.ndarray, label: int, name: str, *,
                   signal: str = "maps", k_max: int = 5, neighbours: int = 10,
                   seed: int = 0) -> ClassDiscovery:
    """Cluster one class's pooled maps (or features), merge twins, score each group."""
    clusters, _, eigenvalues = spectral_clusters(points, k_max, neighbours, seed)
    groups = merge_twins(points, clusters)
    k = int(groups.max()) + 1
    means = np.stack([points[groups == g].mean(0) for g in range(k)])
    if signal == "maps":
        stats, where = map_statistics(points, groups, candidate_regions(points.shape[1]))
    else:
        stats, where = feature_statistics(points, groups), [None] * k
    suspicion = [s["suspicion"] for s in stats]
    suspect = int(np.argmax(suspicion)) if k > 1 and max(suspicion) > 0 else None
    return ClassDiscovery(label=label, name=name, positions=positions, clusters=groups, k=k,
                          eigenvalues=eigenvalues, means=means, signal=signal,
                          cluster_stats=stats, score=float(max(suspicion)) if suspect is not None
                          else 0.0, suspect=suspect,
                          region=where[suspect] if suspect is not None else None)


def null_bounds(scores: np.ndarray, fallback: float) -> np.ndarray:
    """Per class, the bound its score must reach: the other classes' log scores form the null
    (median + Z_FALSE_ALARM robust standard deviations); ``fallback`` with too few classes."""
    scores = np.asarray(scores, float)
    if len(scores) < MIN_NULL + 1:
        return np.full(len(scores), fallback)
    logs = np.log(np.maximum(scores, 1e-6))
    bounds = np.empty(len(scores))
    for c in range(len(scores)):
        others = np.delete(logs, c)
        centre = np.median(others)
        spread = 1.4826 * np.median(np.abs(others - centre))
        bounds[c] = np.exp(centre + Z_FALSE_ALARM * max(spread, MIN_LOG_SPREAD))
    return bounds


def calibrated(found: list[ClassDiscovery], fallback: float) -> list[ClassDiscovery]:
    """Each class with its bound from the null of the other classes, flagged when above it."""
    bounds = null_bounds(np.array([d.score for d in found]), fallback)
    return [dataclasses.replace(d, bound=float(bound),
                                flagged=bool(d.suspect is not None and d.score >= bound))
            for d, bound in zip(found, bounds, strict=True)]


@dataclass(frozen=True)
class Sample:
    """The images searched (each explained for its label) and what is known of them already:
    ``features`` (penultimate, rows aligned with ``images``; None skips that signal), the
    model's ``probs`` on them, their ``maps`` (None: made by ``discover``), and
    ``properties``, ``property_search``'s result on them (None: computed by the search)."""

    images: np.ndarray
    labels: np.ndarray
    positions: np.ndarray
    class_names: list[str]
    features: np.ndarray | None = None
    probs: np.ndarray | None = None
    maps: np.ndarray | None = None
    properties: tuple | None = None


@dataclass(frozen=True)
class SpraySettings:
    """How SpRAy runs: the attribution ``method`` whose maps are clustered, pooled to
    ``grid`` x ``grid`` cells, into at most ``k_max`` groups per class."""

    method: str = "gradient"
    grid: int = 16
    k_max: int = 5
    seed: int = 0


def discover(handle, sample: Sample, settings: SpraySettings = SpraySettings()
             ) -> tuple[list[ClassDiscovery], np.ndarray]:
    """SpRAy on every class of the model's maps of the sample's images (explaining the label),
    calibrated against the other classes: the classes in label order, and the pooled maps in
    the order of ``sample.images``. ``sample.maps`` (attributions of them) skips the backward
    pass."""
    from auditor.methods.attribution import attribute

    labels, positions = sample.labels, sample.positions
    maps = (attribute(handle, sample.images, labels, settings.method) if sample.maps is None
            else sample.maps)
    pooled = pooled_maps(maps, settings.grid)
    found = [discover_class(pooled[labels == c], positions[labels == c], int(c),
                            sample.class_names[c], k_max=settings.k_max, seed=settings.seed)
             for c in np.unique(labels)]
    return calibrated(found, FALLBACK_MAP_BOUND), pooled


def discover_features(features: np.ndarray, labels: np.ndarray, positions: np.ndarray,
                      class_names: list[str], *, k_max: int = 5,
                      seed: int = 0) -> list[ClassDiscovery]:
    """The same search on penultimate features, standardised over all images and reduced to
    at most 20 principal components (the clustering graph needs few, informative axes)."""
    from sklearn.decomposition import PCA

    x = np.asarray(features, np.float32).reshape(len(features), -1)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    components = min(20, x.shape[1], max(1, len(x) - 1))
    x = PCA(components, random_state=seed).fit_transform(x)
    found = [discover_class(x[labels == c], positions[labels == c], int(c), class_names[c],
                            signal="features", k_max=k_max, seed=seed)
             for c in np.unique(labels)]
    return calibrated(found, FALLBACK_FEATURE_BOUND)


def all_alike(points: np.ndarray) -> bool:
    """Whether every row is the same (to float32's precision): t-SNE's PCA start then divides
    by a spread of zero, and scikit-learn's Barnes-Hut code crashes the whole process with a
    segmentation fault (a random nested MobileNetV2's penultimate features, the same for every
    image, ended its audit in Clever Hans with no word)."""
    return bool(np.ptp(points, axis=0).max() <= 1e-6 * np.abs(points).max())


def embed_2d(points: np.ndarray, seed: int = 0) -> np.ndarray:
    """A 2-D t-SNE embedding (PCA to 50 dimensions first when there are more).

    One thread: scikit-learn's OpenMP threads slow t-SNE down tenfold when the cores are busy,
    and the audit shares them with TensorFlow."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    points = np.asarray(points, np.float32).reshape(len(points), -1)
    if len(points) < 4 or all_alike(points):  # one point: nothing to lay out
        return np.zeros((len(points), 2), np.float32)
    points = points / np.abs(points).max()  # t-SNE is scale-free; float32 squares of 1e-20 are 0
    if points.shape[1] > 50 and len(points) > 50:
        points = PCA(50, random_state=seed).fit_transform(points)
    perplexity = float(min(30, max(2, (len(points) - 1) // 3)))
    with threadpool_limits(1):
        return TSNE(2, perplexity=perplexity, init="pca", random_state=seed,
                    max_iter=500).fit_transform(points).astype(np.float32)
