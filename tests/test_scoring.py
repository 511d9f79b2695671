import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rating_edge.scoring import CODEWORDS, ecoc_decode, multitude, score_probs


def codeword_probs(g, seeds=2, p=0.9):
    bits = CODEWORDS[g]
    return np.repeat(np.where(bits > 0, p, 1 - p)[:, None], seeds, axis=1)


@pytest.mark.parametrize("g", range(4))
def test_ecoc_exact_codewords(g):
    assert ecoc_decode(codeword_probs(g)) == g


def test_ecoc_hamming_tie_goes_to_lowest_grade():
    # hard bits [1,0,1] in both seeds: Hamming distance 2 to grade 1 (1,0,0) and grade 3 (1,1,1);
    # the official code (np.argmin) takes grade 1 whatever the probabilities
    for mid, last in (([0.45, 0.45], [0.6, 0.6]), ([0.4, 0.4], [0.99, 0.99])):
        p = np.array([[0.9, 0.9], mid, last])
        assert ecoc_decode(p) == 1


def test_ecoc_full_tie_goes_to_lower_grade():
    p = np.array([[0.75, 0.25], [0.0, 0.0], [0.0, 0.0]])
    assert ecoc_decode(p) == 0


def test_ecoc_thresholds_and_operator():
    p = np.full((3, 2), 0.3)
    assert ecoc_decode(p) == 0
    assert ecoc_decode(p, threshold=0.3, strict=False) == 3  # p >= 0.3 on every bit
    assert ecoc_decode(p, threshold=0.3, strict=True) == 0


def test_ecoc_p_exactly_half_is_bit_zero():
    p = np.full((3, 2), 0.5)
    assert ecoc_decode(p) == 0


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, (7, 5, 3, 2), elements=st.floats(0, 1)))
def test_ecoc_vectorised_equals_loop(p):
    batch = ecoc_decode(p)
    assert batch.shape == (7, 5)
    for i in range(7):
        for j in range(5):
            assert batch[i, j] == ecoc_decode(p[i, j])


def test_ecoc_rejects_bad_shapes_and_values():
    with pytest.raises(ValueError):
        ecoc_decode(np.zeros((2, 2)))
    with pytest.raises(ValueError):
        ecoc_decode(np.full((3, 2), np.nan))


grades = arrays(np.int64, st.integers(1, 9), elements=st.integers(0, 3))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_multitude_invalid_only_in_the_official_fallback(data):
    m = data.draw(st.integers(1, 9))
    sh = data.draw(arrays(np.int64, m, elements=st.integers(0, 3)))
    vs = data.draw(arrays(np.int64, m, elements=st.integers(0, 3)))
    s, v, c = multitude(sh, vs)
    if s == 0 and v > 0:  # only when every SH vote is 0 and no VS vote is 0
        assert (sh == 0).all() and (vs > 0).all()
    assert c == max(s, v)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_multitude_is_majority_vote_when_all_valid_and_no_ties(data):
    m = data.draw(st.integers(1, 9))
    sh = data.draw(arrays(np.int64, m, elements=st.integers(1, 3)))  # no SH=0: every combination valid
    vs = data.draw(arrays(np.int64, m, elements=st.integers(0, 3)))
    qs, qv = np.bincount(sh, minlength=4), np.bincount(vs, minlength=4)
    if (qs == qs.max()).sum() > 1 or (qv == qv.max()).sum() > 1:
        return  # ties are covered separately
    s, v, _ = multitude(sh, vs)
    assert (s, v) == (qs.argmax(), qv.argmax())


def test_multitude_invalid_combination_skipped():
    # SH votes mostly 0, VS votes mostly 2: (0,2) is invalid, so the best valid combination wins
    sh = np.array([0, 0, 0, 1, 1])
    vs = np.array([2, 2, 2, 0, 1])
    # weights: (0,0)=3*1=3 ; (1,2)=2*3=6 ; (1,0)=2 ; (1,1)=2 -> (1,2)
    assert multitude(sh, vs) == (1, 2, 2)


def test_multitude_ties_lexicographic():
    sh = np.array([1, 2])
    vs = np.array([1, 2])
    # all four combos (1,1),(1,2),(2,1),(2,2) weigh 1 -> first lexicographic = (1,1)
    assert multitude(sh, vs) == (1, 1, 1)


def test_multitude_all_zero_gives_zero():
    assert multitude(np.zeros(5, np.int64), np.zeros(5, np.int64)) == (0, 0, 0)


def test_multitude_batched_and_errors():
    sh = np.array([[1, 1, 2, 3, 3], [0, 0, 0, 0, 0]])
    vs = np.array([[0, 0, 0, 1, 1], [1, 1, 1, 1, 1]])
    s, v, c = multitude(sh, vs)
    assert s.shape == (2,)
    for i in range(2):
        assert (s[i], v[i], c[i]) == multitude(sh[i], vs[i])
    # second row: SH all 0 with VS all 1 -> no valid combination has a positive weight: the official
    # fallback (most voted SH, most voted VS) = (0, 1), combined 1
    assert (s[1], v[1], c[1]) == (0, 1, 1)
    with pytest.raises(ValueError):
        multitude(np.array([1, 2]), np.array([1]))
    with pytest.raises(ValueError):
        multitude(np.array([4]), np.array([0]))
    with pytest.raises(ValueError):
        multitude(np.array([1.0]), np.array([0.0]))


def test_score_probs_shapes():
    rng = np.random.default_rng(0)
    out = score_probs(rng.random((3, 5, 3, 2)), rng.random((3, 5, 3, 2)))
    assert out["sh_models"].shape == (3, 5) and out["combined"].shape == (3,)
    assert np.all(out["sh_agree"] >= 0) and np.all(out["sh_agree"] <= 5)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_score_probs_equals_official_decoding(data):
    """Random decisions (ties, the fallback) against MULTITUDE.py re-created in tests/official_ref.py."""
    from official_ref import do_multitude, ecoc

    from rating_edge.scoring import Thresholds

    bits = data.draw(arrays(np.int64, (2, 5, 3, 2), elements=st.integers(0, 1)))
    if data.draw(st.booleans()):
        bits[0, :, 0, :] = 0  # every SH model grade 0 (the fallback when no VS model says 0)
    t = data.draw(arrays(np.float64, (5, 3, 2), elements=st.floats(0, 1)))
    th = Thresholds(t, t, np.zeros(t.shape, bool), np.zeros(t.shape, bool))
    p = np.where(bits > 0, t, np.nextafter(t, -1.0))  # p >= t exactly where the bit is 1
    out = score_probs(p[0][None], p[1][None], th)
    off = {m: [] for m in ("sh", "vs")}
    for i, m in enumerate(("sh", "vs")):
        for f in range(5):
            b = bits[i, f].copy()
            b[2] = 1 - b[2]  # official task "3,012" bit = NOT (grade > 2)
            off[m].append(ecoc([b[tk, s] for s in range(2) for tk in range(3)]))
    assert list(out["sh_models"][0]) == off["sh"]
    assert list(out["vs_models"][0]) == off["vs"]
    assert (int(out["sh"][0]), int(out["vs"][0]), int(out["combined"][0])) == do_multitude(off["sh"], off["vs"])


def test_thresholds_record_round_trip_and_errors():
    from rating_edge.scoring import Thresholds

    assert Thresholds.from_dict(None, 5, 2).is_default
    t = np.random.default_rng(0).random((5, 3, 2))
    th = Thresholds(t, t[::-1].copy(), t > 0.5, t < 0.5)
    back = Thresholds.from_dict(th.to_dict(), 5, 2)
    for m in ("sh", "vs"):
        np.testing.assert_array_equal(back.value(m), th.value(m))  # JSON floats round-trip exactly
        np.testing.assert_array_equal(back.strict(m), th.strict(m))
    with pytest.raises(ValueError, match="shape"):
        Thresholds.from_dict(th.to_dict(), 4, 2)
    bad = th.to_dict()
    bad["vs"]["threshold"][0][0][0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        Thresholds.from_dict(bad, 5, 2)
    with pytest.raises(ValueError, match="module 'vs'"):
        Thresholds.from_dict({"sh": th.to_dict()["sh"]}, 5, 2)
