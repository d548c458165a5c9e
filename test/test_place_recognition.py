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


def test_inverted_index_scores_equal_pairwise_l1_scores(vocabulary):
    # the vectorised posting-list walk gives DBoW2's L1 score of every pair, and skips the excluded
    rec = PlaceRecognizer(vocabulary, min_score=0.0, min_relative_score=0.0, exclude_recent=0)
    descs = [random_descriptors(100 + k, 150) for k in range(12)]
    for k, d in enumerate(descs):
        rec.add(10 + k, d)
    q = vocabulary.bow_vector(descs[4])
    got = rec.scores(q, exclude=[11])
    for k in range(12):
        ref = bow_score(q, vocabulary.bow_vector(descs[k]))
        if k == 1 or ref == 0:
            assert 10 + k not in got
        else:
            assert got[10 + k] == pytest.approx(ref, rel=1e-5)
    assert max(got, key=got.get) == 14


def test_rerank_orders_candidates_by_direct_matches(vocabulary):
    # keyframe 1 shares many of the query's words but not its descriptors (every descriptor 90 bits
    # off: often the same word of a coarse vocabulary, never a match), keyframe 2 is half the query
    # seen again (5 bits off): bag of words ranks 1 first, the re-ranked list puts 2 first
    rng = np.random.default_rng(3)
    base = random_descriptors(42, 300)

    def flipped(d, nbits):
        bits = np.unpackbits(d, axis=1)
        for row in bits:
            row[rng.choice(256, nbits, replace=False)] ^= 1
        return np.packbits(bits, axis=1)

    kfs = [random_descriptors(43, 300), np.concatenate([flipped(base, 90), flipped(base, 90)]),
           flipped(base[:100], 5)]
    query = flipped(base, 5)
    order = {}
    for rerank in (0, 5):
        rec = PlaceRecognizer(vocabulary, min_score=0.0, min_relative_score=0.0, exclude_recent=0,
                              rerank=rerank, max_candidates=5)
        for k, d in enumerate(kfs):
            rec.add(k, d)
        order[rerank] = rec.query(query, exclude=[])
    assert order[0][0][0] == 1
    assert order[5][0][0] == 2 and order[5][0][1] > 0.25
    assert all(k != 1 for k, _ in order[5])  # no match at all: dropped
