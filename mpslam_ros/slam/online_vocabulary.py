"""An incremental binary vocabulary built from the robot's own images (no training set).

As in iBoW-LCD (Garcia-Fidalgo & Ortiz 2018) and RTAB-Map, the words are descriptors seen before:
each descriptor of a new keyframe is looked up among the words; one within ``match_distance`` bits
of a word is that word, the others become new words. The vocabulary therefore describes the place the
robot is in, whatever it looks like (a vocabulary trained on a rendered house or on city streets
quantises an office badly), and needs no file.

Lookup must stay fast while the words grow with the map, so the words are indexed by an incremental
hierarchical clustering tree (like iBoW-LCD's OBIndex2 / FLANN's hierarchical index): leaves hold at
most ``leaf_size`` words; an overflowing leaf is split by k-majority clustering into ``branching``
children. A lookup descends one path (``branching`` comparisons per level, about log_b(words /
leaf_size) levels) and scans one leaf, so its cost grows with the log of the vocabulary, not with it.
The search is approximate (the nearest word may sit in a sibling leaf), as in FLANN; a missed word
only becomes a duplicate word.

Words keep the descriptor that created them (RTAB-Map; iBoW-LCD merges them by bit majority, which
needs per-bit counts: 8x the memory). Weights are tf-idf with ``idf = log(1 + N / n_w)`` (``N``
images indexed, ``n_w`` of them containing word ``w``; the ``1 +`` keeps the first images' words
from weighing zero).
"""

from __future__ import annotations

import threading
from typing import Dict, List, Tuple

import numpy as np

from mpslam_ros.slam.place_recognition import _POPCOUNT, _k_majority, hamming_distances


class OnlineBinaryVocabulary:
    """Words added as keyframes come; see the module docstring."""

    def __init__(self, match_distance: int = 50, leaf_size: int = 64, branching: int = 8,
                 seed: int = 0) -> None:
        if branching < 2 or leaf_size < branching:
            raise ValueError(f"OnlineBinaryVocabulary: need branching >= 2 and leaf_size >= branching, "
                             f"got branching={branching}, leaf_size={leaf_size}")
        self.match_distance = int(match_distance)
        self.leaf_size = int(leaf_size)
        self.branching = int(branching)
        self._rng = np.random.default_rng(seed)
        self._words = np.zeros((1024, 32), np.uint8)
        self._df = np.zeros(1024, np.int64)  # images containing each word
        self._num_words = 0
        self.num_images = 0
        # tree: node 0 is the root (a leaf until the first split)
        self._centres = np.zeros((64, 32), np.uint8)
        self._children = np.full((64, self.branching), -1, np.int32)
        self._num_nodes = 1
        self._leaf_words: Dict[int, List[int]] = {0: []}
        self._leaf_arrays: Dict[int, np.ndarray] = {}  # cache of _leaf_words as arrays
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ sizes
    @property
    def num_words(self) -> int:
        return self._num_words

    @property
    def nbytes(self) -> int:
        n, m = self._num_words, self._num_nodes
        return int(n * (32 + 8) + m * (32 + 4 * self.branching) + 8 * n)

    # ------------------------------------------------------------------ lookup
    def _descend(self, desc: np.ndarray) -> np.ndarray:
        """Leaf node of each descriptor (greedy descent)."""
        node = np.zeros(len(desc), np.int64)
        centres, children = self._centres, self._children
        while True:
            kids = children[node]
            inner = kids[:, 0] >= 0
            if not inner.any():
                return node
            rows = np.nonzero(inner)[0]
            k = kids[rows]
            d = _POPCOUNT[np.bitwise_xor(desc[rows, None, :], centres[np.maximum(k, 0)])].sum(axis=2, dtype=np.int32)
            d[k < 0] = 1 << 20
            node[rows] = k[np.arange(len(rows)), np.argmin(d, axis=1)]

    def _leaf_array(self, leaf: int) -> np.ndarray:
        arr = self._leaf_arrays.get(leaf)
        if arr is None:
            arr = self._leaf_arrays[leaf] = np.array(self._leaf_words[leaf], np.int64)
        return arr

    def _nearest(self, desc: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(nearest word or -1, its distance, leaf) of each descriptor."""
        n = len(desc)
        word = np.full(n, -1, np.int64)
        dist = np.full(n, 1 << 20, np.int64)
        leaf = self._descend(desc) if n else np.zeros(0, np.int64)
        if self._num_words == 0 or n == 0:
            return word, dist, leaf
        order = np.argsort(leaf, kind="stable")
        bounds = np.flatnonzero(np.diff(leaf[order])) + 1
        for group in np.split(order, bounds):
            ids = self._leaf_array(int(leaf[group[0]]))
            if len(ids) == 0:
                continue
            d = hamming_distances(desc[group], self._words[ids])
            j = np.argmin(d, axis=1)
            word[group] = ids[j]
            dist[group] = d[np.arange(len(group)), j]
        return word, dist, leaf

    def words(self, descriptors: np.ndarray) -> np.ndarray:
        """Word of each descriptor, -1 where no word is within ``match_distance`` (no update)."""
        desc = np.ascontiguousarray(descriptors, np.uint8).reshape(-1, 32)
        with self._lock:
            word, dist, _ = self._nearest(desc)
        return np.where(dist <= self.match_distance, word, -1)

    def _idf(self, ids: np.ndarray) -> np.ndarray:
        return np.log1p(max(1, self.num_images) / np.maximum(self._df[ids], 1))

    def _vector(self, words: np.ndarray) -> Dict[int, float]:
        w = words[words >= 0]
        if len(w) == 0:
            return {}
        ids, counts = np.unique(w, return_counts=True)
        weights = counts * self._idf(ids)
        s = weights.sum()
        if s <= 0:
            return {}
        return {int(i): float(x / s) for i, x in zip(ids, weights / 1.0)}

    def bow_vector(self, descriptors: np.ndarray) -> Dict[int, float]:
        """L1-normalised tf-idf vector over the words the descriptors match (vocabulary unchanged)."""
        with self._lock:
            return self._vector(self.words(descriptors))

    # ------------------------------------------------------------------ growth
    def add_image(self, descriptors: np.ndarray) -> Dict[int, float]:
        """Quantise one image's descriptors, adding unmatched ones as new words; returns its vector."""
        desc = np.ascontiguousarray(descriptors, np.uint8).reshape(-1, 32)
        with self._lock:
            word, dist, leaf = self._nearest(desc)
            new = np.nonzero(dist > self.match_distance)[0]
            for i in new:
                # a descriptor matching a word created from this same image joins it
                word[i] = self._insert(desc[i], int(leaf[i]))
            self.num_images += 1
            ids = np.unique(word[word >= 0])
            self._df[ids] += 1
            return self._vector(word)

    def _insert(self, d: np.ndarray, leaf: int) -> int:
        if self._num_words == len(self._words):
            self._words = np.concatenate([self._words, np.zeros_like(self._words)])
            self._df = np.concatenate([self._df, np.zeros_like(self._df)])
        w = self._num_words
        self._words[w] = d
        self._num_words += 1
        if self._children[leaf, 0] >= 0:  # the leaf was split by an earlier insert of this image
            leaf = int(self._descend(d[None])[0])
        members = self._leaf_words[leaf]
        members.append(w)
        self._leaf_arrays.pop(leaf, None)
        if len(members) > self.leaf_size:
            self._split(leaf)
        return w

    def _split(self, leaf: int) -> None:
        ids = np.array(self._leaf_words.pop(leaf), np.int64)
        self._leaf_arrays.pop(leaf, None)
        centres, labels = _k_majority(self._words[ids], self.branching, self._rng, iterations=5)
        if len(np.unique(labels)) < 2:  # identical words: cannot split, keep the (big) leaf
            self._leaf_words[leaf] = ids.tolist()
            return
        need = self._num_nodes + len(centres)
        if need > len(self._centres):
            grow = max(need, 2 * len(self._centres))
            self._centres = np.concatenate([self._centres, np.zeros((grow - len(self._centres), 32), np.uint8)])
            self._children = np.concatenate(
                [self._children, np.full((grow - len(self._children), self.branching), -1, np.int32)])
        for j in range(len(centres)):
            child = self._num_nodes
            self._num_nodes += 1
            self._centres[child] = centres[j]
            self._children[leaf, j] = child
            self._leaf_words[child] = ids[labels == j].tolist()
