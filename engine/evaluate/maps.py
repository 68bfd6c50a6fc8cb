"""2-D maps of the embeddings for the scatter plot: UMAP and PCA, cached on disk.

- PCA: the projection on the first two principal components. Exact (SVD) for small
  inputs, a seeded randomised range finder (Halko, Martinsson & Tropp, 2011) for large
  ones; components are sign-fixed, so a map never flips between runs.
- UMAP (McInnes, Healy & Melville, 2018) through umap-learn. ``import umap`` takes ~13 s
  and the first fit compiles its numba code (~30 s); :func:`configure_numba_cache` keeps
  the compiled code on disk in the user cache folder so that is paid once per machine.

``metric="cosine"`` matches how contrastive losses compare embeddings (NT-Xent and InfoNCE
use cosine similarity): PCA then works on L2-normalised rows, UMAP uses the cosine distance.

:func:`load_or_compute_map` stores each map beside its parameters in the run's maps/
folder, so reopening a run shows its map at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.config.settings import setting, validate
from engine.evaluate.neighbours import check_finite, normalise
from engine.run import progress as counts
from engine.run.io import write_atomic, write_json_atomic

Progress = Callable[[str], None]

METHODS = ("umap", "pca")
METRICS = ("cosine", "euclidean")
LOADING_UMAP = "Loading UMAP (first use compiles code, about a minute; later runs are fast)"

# Below this many points UMAP's spectral initialisation fails (scipy's eigh needs k < N),
# and a "neighbourhood graph" of 2 points says nothing: such maps are made with PCA.
MIN_UMAP_POINTS = 4
#: UMAP fits on at most this many points and transforms the rest (fit_sample's default).
#: umap-learn's single-threaded (seeded, reproducible) fit grows faster than linearly with
#: the points; its transform of the others is a nearest-neighbour search in the fitted data
#: plus a short optimisation of the new points only.
UMAP_FIT_SAMPLE = 20_000

# Exact PCA (float64 eigendecomposition of the D x D covariance or the N x N Gram matrix,
# min(N, D)^2 x max(N, D) operations) up to this size: 50k x 512 takes about 0.3 s on two
# cores. Above it (e.g. 50k x 2048, ~10 s exact) a seeded randomised SVD takes ~1 s.
_EXACT_PCA_FLOPS = 3e9


@dataclass
class MapParams:
    """How a 2-D map is made; validated on construction (ConfigError, a ValueError)."""

    method: str = setting("umap", "Projection method.", choices=METHODS)
    n_neighbors: int = setting(
        15, "UMAP: neighbours per point; larger values keep more of the global structure "
        "(clipped to the number of points minus one).", min=2, max=1000)
    min_dist: float = setting(
        0.1, "UMAP: how tightly points may pack together in the map.", min=0.0, max=1.0)
    metric: str = setting(
        "cosine", "Distance between embeddings (cosine: as the contrastive loss compares "
        "them; PCA then uses unit-length rows).", choices=METRICS)
    seed: int = setting(0, "Random seed; the same seed gives the same map.",
                        min=0, max=2**32 - 1)
    fit_sample: int = setting(
        UMAP_FIT_SAMPLE, "UMAP: fit the map on at most this many points (a seeded sample) "
        "and place the others with the fitted map's transform, so large folders map in "
        "minutes.", min=100, max=10**7)

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def relevant(self) -> dict[str, Any]:
        """The parameters that change the result: PCA ignores the UMAP-only ones, so
        changing n_neighbors does not make a PCA map be computed again. ``fit_sample`` at
        its default is left out (maps saved before it existed keep their key; it changes
        only maps of more points than it)."""
        values = self.to_dict()
        if self.method == "pca":
            del values["n_neighbors"], values["min_dist"]
        if self.method == "pca" or self.fit_sample == UMAP_FIT_SAMPLE:
            del values["fit_sample"]
        return values

    def key(self) -> str:
        """A short hash of the relevant parameters, stable across runs and machines."""
        text = json.dumps(self.relevant(), sort_keys=True)
        return hashlib.blake2b(text.encode("utf-8"), digest_size=5).hexdigest()


def configure_numba_cache() -> Path:
    """Point numba's on-disk cache at ``user_cache_dir()/"numba"`` (unless NUMBA_CACHE_DIR
    is already set) and return the folder. Call it before ``import umap``: numba reads the
    variable when it is imported (it is re-read here if numba is already loaded).

    A folder that cannot be created falls back to one in the system's temporary folder.
    """
    from engine.config.locations import user_cache_dir

    if not os.environ.get("NUMBA_CACHE_DIR"):
        folder = user_cache_dir() / "numba"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            folder = Path(tempfile.gettempdir()) / "contrastive-explorer-numba"
            folder.mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = str(folder)
    folder = Path(os.environ["NUMBA_CACHE_DIR"])
    numba_config = getattr(sys.modules.get("numba.core.config"), "CACHE_DIR", None)
    if numba_config is not None and numba_config != str(folder):
        # numba was imported before the variable was set: make it read it again (functions
        # already compiled keep the folder they were given).
        from numba.core import config

        config.reload_config()
    return folder


def _enable_umap_numba_caching() -> None:
    """Let umap-learn's own numba functions use the on-disk cache too.

    pynndescent marks its functions ``cache=True``, but umap-learn (0.5) does not, so every
    new process recompiled its layout code (~10 s on two cores). Turning caching on for
    each not-yet-cached dispatcher before the first fit makes later processes load the
    compiled code instead; numba still recompiles when umap's source files change.
    """
    try:
        from numba.core.caching import NullCache
        from numba.core.dispatcher import Dispatcher
    except ImportError:  # a numba without these internals: just compile every time
        return
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] != "umap":
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Dispatcher) and isinstance(value._cache, NullCache):
                # Caching is an optimisation only: a function numba cannot cache compiles.
                with contextlib.suppress(Exception):
                    value.enable_caching()


def _import_umap(progress: Progress | None) -> Any:
    if "umap" not in sys.modules and progress is not None:
        progress(LOADING_UMAP)
    configure_numba_cache()
    import umap

    _enable_umap_numba_caching()
    return umap


def check_features(features: np.ndarray) -> np.ndarray:
    """``features`` as a finite (N, D) float32 array with N >= 1, or ValueError."""
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(
            f"features must be a non-empty 2-D array (images x dimensions); got shape "
            f"{features.shape}")
    check_finite(features, "features")
    return features.astype(np.float32, copy=False)


def _flip_signs(components: np.ndarray) -> np.ndarray:
    """Make each component's largest-magnitude entry positive (as scikit-learn's
    ``svd_flip(u_based_decision=False)``), so the map's orientation is deterministic."""
    biggest = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(len(components)), biggest])
    signs[signs == 0] = 1
    return components * signs[:, None]


def _exact_components(x: np.ndarray, n: int) -> np.ndarray:
    """Top ``n`` principal axes of the centred float64 ``x`` from the eigenvectors of the
    smaller of its covariance (D x D) and Gram (N x N) matrices: exact, and several times
    faster than an SVD of ``x`` (as scikit-learn's "covariance_eigh" solver)."""
    rows, cols = x.shape
    if cols <= rows:
        _, vectors = np.linalg.eigh(x.T @ x)  # ascending eigenvalues
        return vectors[:, ::-1][:, :n].T
    values, u = np.linalg.eigh(x @ x.T)
    values, u = values[::-1][:n], u[:, ::-1][:, :n]
    axes = (x.T @ u).T  # v = X^T u / s
    # Directions of (numerically) zero variance carry no information: leave them zero
    # rather than normalising rounding noise into a spurious axis.
    keep = values > 1e-12 * max(values[0], 1e-300)
    norms = np.linalg.norm(axes, axis=1, keepdims=True)
    return np.where(keep[:, None], axes / np.where(norms > 0, norms, 1.0), 0.0)


def _orthonormal_columns(y: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the columns of the tall, thin ``y`` (N x q).

    Cholesky QR (one q x q Gram matrix) is many times faster than LAPACK's QR for
    N >> q; it needs full column rank, so rank-deficient data falls back to QR.
    """
    gram = (y.T @ y).astype(np.float64)
    try:
        lower = np.linalg.cholesky(gram)
    except np.linalg.LinAlgError:
        return np.linalg.qr(y)[0]
    return y @ np.linalg.inv(lower.T).astype(y.dtype)


def _randomized_components(x: np.ndarray, n: int, seed: int, oversample: int = 10,
                           power_iterations: int = 4) -> np.ndarray:
    """Top ``n`` right singular vectors of the centred ``x`` (Halko et al., 2011, alg. 4.4).

    A few passes over the data instead of an O(N D min(N, D)) decomposition; seeded, so
    deterministic.
    """
    rng = np.random.default_rng(seed)
    q = min(n + oversample, *x.shape)
    basis = x @ rng.standard_normal((x.shape[1], q)).astype(x.dtype)  # (N, q)
    for _ in range(power_iterations):  # power iterations sharpen a flat spectrum
        basis = _orthonormal_columns(x @ (x.T @ _orthonormal_columns(basis)))
    small = (basis.T @ x).astype(np.float64)  # (q, D)
    _, _, vt = np.linalg.svd(small, full_matrices=False)
    return vt[:n]


def pca_map(features: np.ndarray, metric: str = "cosine", seed: int = 0) -> np.ndarray:
    """Projection of ``features`` on their first two principal components, (N, 2) float32.

    Columns beyond the data's rank (one point, one dimension) are zero. ``seed`` only
    matters for inputs large enough to use the randomised method.
    """
    x = check_features(features)
    if metric == "cosine":
        x = normalise(x)
    n, d = x.shape
    exact = min(n, d) ** 2 * max(n, d) <= _EXACT_PCA_FLOPS
    x = x.astype(np.float64 if exact else np.float32, copy=False)
    x = x - x.mean(axis=0, dtype=np.float64).astype(x.dtype)  # a centred copy
    k = min(2, n, d)
    if exact:
        components = _exact_components(x, k)
    else:
        components = _randomized_components(x, k, seed)
    components = _flip_signs(components.astype(np.float64))
    out = np.zeros((n, 2), np.float32)
    out[:, :k] = x @ components.T.astype(x.dtype)
    return out


class _EpochCounter:
    """A file for the progress bar umap-learn draws over its layout epochs (tqdm, through
    ``tqdm_kwds``): each bar it writes, in the ``BAR`` format, becomes ``on(done, total)``.
    umap-learn has no other hook into its epochs; the nearest-neighbour search and the
    spectral start before them report nothing."""

    BAR = "<{n}/{total}>"
    _COUNT = re.compile(r"<(\d+)/(\d+)>")

    def __init__(self) -> None:
        self.on: Callable[[int, int], None] = lambda done, total: None

    def tqdm_kwds(self) -> dict[str, Any]:
        return {"file": self, "bar_format": self.BAR, "disable": False, "mininterval": 0.25,
                "ascii": True, "dynamic_ncols": False}

    def write(self, text: str) -> int:
        found = self._COUNT.findall(text)
        if found:
            done, total = found[-1]
            self.on(int(done), int(total))
        return len(text)

    def flush(self) -> None:
        pass


def _placing(start: int, size: int, total: int) -> Callable[[int, int], None]:
    """Progress ("place", points) of a transform of ``size`` points after ``start``."""
    return lambda done, epochs: counts.report("place", start + size * done // max(epochs, 1),
                                              total, "points")


def umap_map(features: np.ndarray, params: MapParams,
             progress: Progress | None = None) -> np.ndarray:
    """UMAP of ``features`` into (N, 2) float32; fewer than 4 points fall back to PCA.
    Above ``params.fit_sample`` points, UMAP is fitted on a seeded sample of that many and
    the other points are placed with the fitted map's transform."""
    x = check_features(features)
    n = x.shape[0]
    if n < MIN_UMAP_POINTS:
        if progress is not None:
            progress(f"Only {n} point{'s' if n != 1 else ''}: too few for UMAP, using PCA")
        return pca_map(x, params.metric, params.seed)
    umap = _import_umap(progress)
    n_neighbors = min(params.n_neighbors, n - 1)
    if progress is not None:
        progress(f"Computing the UMAP map of {n:,} points ({n_neighbors} neighbours)")
    # random_state makes the map reproducible, and makes umap-learn run single-threaded
    # (its parallel layout is not deterministic); n_jobs=1 says so without its warning.
    epochs = _EpochCounter()
    epochs.on = lambda done, total: counts.report("map", done, total, "epochs")
    reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=params.min_dist,
                        metric=params.metric, random_state=params.seed, n_jobs=1,
                        tqdm_kwds=epochs.tqdm_kwds())
    with warnings.catch_warnings():
        # Duplicate or disconnected points make umap-learn warn; the map is still drawn.
        warnings.simplefilter("ignore", UserWarning)
        if n <= params.fit_sample:
            # Writable: numba compiles its code again for read-only (memory-mapped) arrays.
            fitted = reducer.fit_transform(np.require(x, requirements="W"))
            return np.ascontiguousarray(fitted, dtype=np.float32)
        fit = np.sort(np.random.default_rng(params.seed).choice(n, params.fit_sample,
                                                                replace=False))
        rest = np.setdiff1d(np.arange(n), fit, assume_unique=True)
        out = np.zeros((n, 2), np.float32)
        out[fit] = reducer.fit_transform(x[fit])
        chunk = max(1, params.fit_sample)
        for start in range(0, len(rest), chunk):
            rows = rest[start:start + chunk]
            if progress is not None:
                progress(f"Placing {start + len(rows):,} of {len(rest):,} more points on the "
                         f"map fitted on {params.fit_sample:,}")
            # The transform's own epochs count as the share of this chunk's points placed.
            epochs.on = _placing(start, len(rows), len(rest))
            out[rows] = reducer.transform(x[rows])
    return out


def compute_map(features: np.ndarray, params: MapParams, *,
                progress: Progress | None = None) -> np.ndarray:
    """The 2-D map of ``features`` (N x D) made as ``params`` say: (N, 2) float32."""
    start = time.perf_counter()
    if params.method == "pca":
        out = pca_map(features, params.metric, params.seed)
    else:
        out = umap_map(features, params, progress)
    used = "UMAP" if params.method == "umap" and len(out) >= MIN_UMAP_POINTS else "PCA"
    if progress is not None:
        progress(f"{used} map of {len(out):,} points made in "
                 f"{time.perf_counter() - start:.1f} s")
    return out


def features_fingerprint(features: np.ndarray) -> str:
    """A hash of the shape and of up to 1,024 evenly spaced rows: cheap even for 50k x 2048
    features, and different for any re-embedding (which changes every row)."""
    features = np.ascontiguousarray(features)
    rows = np.unique(np.linspace(0, len(features) - 1, num=min(len(features), 1024),
                                 dtype=np.int64))
    h = hashlib.blake2b(digest_size=8)
    h.update(repr((features.shape, str(features.dtype))).encode())
    h.update(np.ascontiguousarray(features[rows]).tobytes())
    return h.hexdigest()


def map_path(cache_dir: Path, params: MapParams, tag: str) -> Path:
    """``cache_dir/<method>-<tag>-<key>.npy``: where a map is stored."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", tag):
        raise ValueError(f"map tag must be letters, digits, '.', '_' or '-'; got {tag!r}")
    return Path(cache_dir) / f"{params.method}-{tag}-{params.key()}.npy"


def load_cached_map(path: Path, fingerprint: str, n: int) -> np.ndarray | None:
    """The stored map at ``path`` if it is intact and was made from these features."""
    try:
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        if meta.get("features_fingerprint") != fingerprint:
            return None  # same tag, different features (the run was embedded again)
        out = np.load(path, allow_pickle=False)
    except (OSError, ValueError, AttributeError):  # missing, partial or not ours
        return None
    if out.shape != (n, 2) or not np.isfinite(out).all():
        return None
    return out.astype(np.float32, copy=False)


def load_or_compute_map(features: np.ndarray, params: MapParams, cache_dir: Path, tag: str,
                        progress: Progress | None = None) -> np.ndarray:
    """The map of ``features``, from ``cache_dir`` when it was made before, else computed
    and stored there (``<method>-<tag>-<key>.npy`` and a ``.json`` with the parameters).

    ``tag`` names the features, e.g. "last-h" (checkpoint last, representation h). A stored
    map is reused only if it was made from the same features (a fingerprint in the .json),
    so embedding a run again never shows a stale map.
    """
    features = check_features(features)
    path = map_path(cache_dir, params, tag)
    fingerprint = features_fingerprint(features)
    cached = load_cached_map(path, fingerprint, len(features))
    if cached is not None:
        if progress is not None:
            progress(f"Loaded the {params.method.upper()} map from {path.name}")
        return cached
    start = time.perf_counter()
    out = compute_map(features, params, progress=progress)
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, out, allow_pickle=False)
    # Drop the old .json, write the .npy, then the .json that vouches for it: a crash in
    # between leaves a map without metadata, which is recomputed rather than trusted.
    path.with_suffix(".json").unlink(missing_ok=True)
    write_atomic(path, lambda f: f.write(buffer.getvalue()))
    write_json_atomic(path.with_suffix(".json"), {
        "params": params.to_dict(), "key": params.key(), "tag": tag,
        "points": len(out), "features_fingerprint": fingerprint,
        "seconds": round(seconds, 3), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return out
