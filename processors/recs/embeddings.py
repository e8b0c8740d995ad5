"""Video and user embeddings (pure: values in, vectors out; no I/O, no clock).

Videos are embedded by a truncated SVD of the user x video completion matrix (PureSVD, Cremonesi,
Koren and Turrin 2010: the top-N recommender that beats popularity by a wide margin on implicit
data, and needs nothing but a sparse SVD). Each entry is how far the user got into the video
(0..1). Rows are divided by the square root of the user's number of videos, so that a heavy
viewer does not outweigh everyone else, and columns by the square root of the video's number of
viewers, so that the leading factors describe tastes rather than popularity (popularity is the
heat term's job in the ranking). A video's embedding is its row of V scaled by the singular
values, made unit length: cosine similarity is then what the API ranks by.

A video without viewers has no column: its embedding comes from the videos it shares tags and an
uploader with (cold start), or, with nothing to go by, a fixed pseudo-random unit vector (cosine
about 0 with everyone: neither favoured nor hidden).

A user's embedding is the completion-weighted average of the embeddings of the user's most recently
watched videos (history.py keeps that history), made unit length.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.linalg import svds

# Dense SVD below this many matrix cells (exact, fast for small data); sparse ARPACK above.
DENSE_SVD_CELLS = 250_000


@dataclass(frozen=True)
class Watch:
    """The furthest a user got into a video (0..1) and when they last watched it (epoch ms)."""

    user_id: str
    video_id: str
    completion: float
    last_ms: int


def unit(vector: np.ndarray) -> np.ndarray | None:
    """`vector` scaled to length 1 (float32), or None for a zero vector."""
    norm = float(np.linalg.norm(vector))
    return None if norm == 0.0 or not np.isfinite(norm) else (vector / norm).astype(np.float32)


def learn_video_embeddings(watches: Iterable[Watch], dim: int) -> dict[str, np.ndarray]:
    """Unit embeddings of `dim` numbers for every video that has a viewer with completion > 0."""
    kept = sorted((w.user_id, w.video_id, min(1.0, float(w.completion))) for w in watches if w.completion > 0)
    if not kept:
        return {}
    # Ids in sorted order: the same watches in any order make the same matrix, hence the same embeddings.
    users = {user: i for i, user in enumerate(sorted({user for user, _, _ in kept}))}
    videos = {video: i for i, video in enumerate(sorted({video for _, video, _ in kept}))}
    rows = [users[user] for user, _, _ in kept]
    cols = [videos[video] for _, video, _ in kept]
    values = [value for _, _, value in kept]
    matrix = csr_matrix((np.asarray(values, dtype=np.float64), (rows, cols)), shape=(len(users), len(videos)))
    matrix.sum_duplicates()
    per_user = np.sqrt(np.diff(matrix.indptr)).clip(min=1)
    per_video = np.sqrt(np.bincount(matrix.indices, minlength=len(videos))).clip(min=1)
    scaled = csr_matrix(matrix.multiply(1 / per_user[:, None]).multiply(1 / per_video[None, :]))
    factors = _video_factors(scaled, dim)
    ids = list(videos)
    embeddings = {}
    for index, video_id in enumerate(ids):
        vector = unit(factors[index])
        embeddings[video_id] = vector if vector is not None else fallback_vector(video_id, dim)
    return embeddings


def _video_factors(matrix: csr_matrix, dim: int) -> np.ndarray:
    """V * S of the rank-`dim` truncated SVD (videos x dim), zero-padded when the rank is lower."""
    users, videos = matrix.shape
    rank = min(dim, users, videos)
    if users * videos <= DENSE_SVD_CELLS or rank >= min(users, videos) - 1:
        _, values, vt = np.linalg.svd(matrix.toarray(), full_matrices=False)
        values, vt = values[:rank], vt[:rank]
    else:
        # ARPACK from a fixed start vector: the same data gives the same embeddings.
        start = np.random.default_rng(0).uniform(size=min(users, videos))
        _, values, vt = svds(matrix, k=rank, v0=start)
        order = np.argsort(values)[::-1]
        values, vt = values[order], vt[order]
    factors = np.zeros((videos, dim), dtype=np.float64)
    factors[:, :rank] = (vt.T * values)
    return _fix_signs(factors)


def _fix_signs(factors: np.ndarray) -> np.ndarray:
    """An SVD factor's sign is arbitrary: make each column's largest entry positive (deterministic)."""
    if factors.size == 0:
        return factors
    largest = np.argmax(np.abs(factors), axis=0)
    signs = np.sign(factors[largest, np.arange(factors.shape[1])])
    signs[signs == 0] = 1
    return factors * signs


def fallback_vector(video_id: str, dim: int) -> np.ndarray:
    """A fixed pseudo-random unit vector for a video with nothing to go by."""
    seed = int.from_bytes(hashlib.sha256(video_id.encode()).digest()[:8], "big")
    vector = unit(np.random.default_rng(seed).normal(size=dim))
    assert vector is not None  # a normal sample of dim >= 2 numbers is never all zeros
    return vector


@dataclass(frozen=True)
class VideoTraits:
    """What is known of a video before anyone watched it (the catalog's record)."""

    tags: tuple[str, ...]
    uploader_id: str | None


def side_vectors(learned: Mapping[str, np.ndarray], traits: Mapping[str, VideoTraits]
                 ) -> dict[str, np.ndarray]:
    """The mean learned embedding per tag (`tag:NAME`) and per uploader (`uploader:ID`), unit length."""
    sums: dict[str, np.ndarray] = {}
    for video_id, vector in learned.items():
        trait = traits.get(video_id)
        if trait is None:
            continue
        for key in _trait_keys(trait):
            sums[key] = sums[key] + vector if key in sums else vector.astype(np.float64)
    out = {}
    for key, total in sums.items():
        vector = unit(total)
        if vector is not None:
            out[key] = vector
    return out


def _trait_keys(trait: VideoTraits) -> list[str]:
    keys = [f"tag:{tag.lower()}" for tag in dict.fromkeys(trait.tags)]
    return keys + ([f"uploader:{trait.uploader_id}"] if trait.uploader_id else [])


def cold_start_vector(video_id: str, trait: VideoTraits, sides: Mapping[str, np.ndarray], dim: int) -> np.ndarray:
    """A video without viewers: the mean of its tags' vectors, plus its uploader's with the same
    weight as all tags together; the fallback vector when none of them is known."""
    tags = [sides[key] for key in _trait_keys(VideoTraits(trait.tags, None)) if key in sides]
    uploader = sides.get(f"uploader:{trait.uploader_id}") if trait.uploader_id else None
    total = np.zeros(dim, dtype=np.float64)
    if tags:
        total += np.mean(tags, axis=0)
    if uploader is not None:
        total += uploader
    vector = unit(total)
    return vector if vector is not None else fallback_vector(video_id, dim)


def user_embedding(recent: Sequence[tuple[str, float]], vectors: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """The completion-weighted mean of the embeddings of `recent` (video_id, completion) pairs,
    unit length; None when none of them has an embedding or every weight is 0."""
    total: np.ndarray | None = None
    for video_id, completion in recent:
        vector = vectors.get(video_id)
        if vector is None or completion <= 0:
            continue
        total = vector * completion if total is None else total + vector * completion
    return None if total is None else unit(total)


def group_by_user(watches: Iterable[Watch]) -> dict[str, list[Watch]]:
    users: dict[str, list[Watch]] = defaultdict(list)
    for watch in watches:
        users[watch.user_id].append(watch)
    return dict(users)
