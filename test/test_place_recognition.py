"""Bag of binary words: vocabulary training, quantisation, retrieval precision/recall."""

import numpy as np
import pytest

from mpslam_ros.slam.loop_synth import make_keyframe_sequence, random_descriptors
from mpslam_ros.slam.place_recognition import (BinaryVocabulary, PlaceRecognizer, bow_score, hamming_distances,
                                               train_vocabulary)


@pytest.fixture(scope="module")
def vocabulary():
    return train_vocabulary(random_descriptors(7, 10000), image_ids=np.arange(10000) // 100)


@pytest.fixture(scope="module")
def deep_vocabulary():
    # random descriptors need many words to tell places apart: 10^4 words (1,000 share too many)
    return train_vocabulary(random_descriptors(8, 50000), depth=4, image_ids=np.arange(50000) // 100)


def test_hamming_distance_matches_bit_count():
    a, b = random_descriptors(1, 5), random_descriptors(2, 4)
    d = hamming_distances(a, b)
    ref = np.unpackbits(a[:, None] ^ b[None], axis=2).sum(2)
    assert np.array_equal(d, ref)


def test_vocabulary_tree_shape_and_stable_words(vocabulary, tmp_path):
    assert 500 <= vocabulary.num_words <= 1000
    assert np.all(vocabulary.idf > 0)
    desc = random_descriptors(3, 500)
    words = vocabulary.words(desc)
    # a descriptor seen with 3% of its bits flipped often falls into the same word: uniformly random
    # descriptors have no cluster structure, so ~1/3 (chance would be 1/num_words) is what a tree gets
    bits = np.unpackbits(desc, axis=1)
    noisy = np.packbits(bits ^ (np.random.default_rng(0).random(bits.shape) < 0.03), axis=1)
    assert np.mean(vocabulary.words(noisy) == words) > 0.2
    path = tmp_path / "voc.npz"
    vocabulary.save(path)
    again = BinaryVocabulary.load(path)
    assert np.array_equal(again.words(desc), words)
    with pytest.raises(ValueError, match="voc.npz"):
        path.write_bytes(b"junk")
        BinaryVocabulary.load(path)


def test_bow_score_range(vocabulary):
    d = random_descriptors(4, 300)
    v = vocabulary.bow_vector(d)
    assert abs(sum(v.values()) - 1) < 1e-9
    assert bow_score(v, v) == pytest.approx(1.0)
    assert bow_score(v, vocabulary.bow_vector(random_descriptors(5, 300))) < 0.5


def test_retrieval_finds_revisits_and_skips_recent(deep_vocabulary):
    seq = make_keyframe_sequence(seed=11, laps=2, keyframes_per_lap=40)
    # with this vocabulary unrelated views score <= 0.085, overlapping ones >= 0.10 (seed 11)
    rec = PlaceRecognizer(deep_vocabulary, min_score=0.09, exclude_recent=10, max_candidates=1)
    L = seq.lap_length
    correct = retrieved = revisits = found_revisits = 0
    for kf in seq.keyframes:
        found = rec.query(kf.descriptors)
        assert all(kf.id - c > 10 for c, _ in found)  # never a recent keyframe
        if found:  # a retrieved place is right when the two views share world points
            c = found[0][0]
            retrieved += 1
            correct += len(np.intersect1d(seq.keyframes[c].landmark_ids, kf.landmark_ids)) >= 25
        if kf.id >= L + 2:  # second lap: the same place one lap earlier is there to be found
            revisits += 1
            found_revisits += bool(found) and abs(found[0][0] - (kf.id - L)) <= 2
        rec.add(kf.id, kf.descriptors)
    assert correct / retrieved > 0.9  # precision of the top candidate
    assert found_revisits / revisits > 0.9  # recall over revisits
