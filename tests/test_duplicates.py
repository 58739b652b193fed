"""Duplicates of labelled positives: normalisation and shingles by hand, Jaccard as the formula,
and the table of :func:`negmine.duplicates.find_duplicates` against the exact Jaccard of its pairs."""

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from negmine.retrieve.candidates import doc_texts
from negmine.duplicates import find_duplicates, jaccard, lsh_bands, normalise, shingles
from negmine.errors import BadInputError
from negmine.schemas import CORPUS, DUPLICATES, QRELS

WORDS = [f"term{i}" for i in range(40)]
POSITIVE = " ".join(WORDS)  # 40 distinct words: 40 − 3 + 1 = 38 distinct 3-word shingles


def _corpus(docs):
    """``docs``: (doc_id, title, text)."""
    return pa.table({n: [d[i] for d in docs] for i, n in enumerate(CORPUS.names)}, schema=CORPUS)


def _qrels(judged):
    """``judged``: (doc_id, relevance), one query each."""
    return pa.table(
        {"query_id": [f"q{i}" for i in range(len(judged))], "doc_id": [d for d, _ in judged], "relevance": [r for _, r in judged]},
        schema=QRELS,
    )


def _with(words, position, word):
    return " ".join(word if i == position else w for i, w in enumerate(words))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("  Hello,   WORLD!  ", "hello world"),
        ("state-of-the-art", "state of the art"),
        ("e.g. «quoted» (sic)", "e g quoted sic"),
        ("ﬁne ＡＢＣ", "fine abc"),  # NFKC: the ﬁ ligature and full-width letters
        ("Straße", "strasse"),  # casefold, not lower
        ("a\t\nb\u00a0c", "a b c"),  # a no-break space is whitespace after NFKC
        ("p < 0.05", "p < 0 05"),  # symbols (<) are not punctuation; the decimal point is
        ("", ""),
        ("?!…", ""),
    ],
)
def test_normalise(text, expected):
    assert normalise(text) == expected


def test_shingles():
    assert shingles("A b, c D") == {("a", "b", "c"), ("b", "c", "d")}
    assert shingles("a b c a b c") == {("a", "b", "c"), ("b", "c", "a"), ("c", "a", "b")}
    assert shingles("Hello, world") == {("hello", "world")}  # shorter than size: the whole sequence
    assert shingles("") == set() and shingles("...") == set()
    assert shingles("a b c", size=1) == {("a",), ("b",), ("c",)}
    assert len(shingles(POSITIVE)) == 40 - 3 + 1


def test_jaccard_is_the_formula():
    a, b = {1, 2, 3, 4}, {3, 4, 5}
    assert jaccard(a, b) == len({3, 4}) / len({1, 2, 3, 4, 5}) == 2 / 5
    assert jaccard(a, a) == 1.0
    assert jaccard(a, {9}) == 0.0
    assert jaccard(set(), set()) == 1.0


def test_lsh_bands_put_the_midpoint_a_bit_below_the_threshold():
    assert lsh_bands(0.8, 128) == 16  # r = 8: (1/16)^(1/8) ≈ 0.707 <= 0.75 < (1/8)^(1/16) ≈ 0.878
    assert (1 / 16) ** (1 / 8) <= 0.8 - 0.05 < (1 / 8) ** (1 / 16)
    assert lsh_bands(0.5, 128) == 32  # r = 4: (1/32)^(1/4) ≈ 0.420
    assert lsh_bands(0.01, 128) == 128  # no midpoint that low: one row per band


@pytest.mark.parametrize(
    "options, match",
    [
        ({"threshold": 0.0}, r"--threshold: must be in \(0, 1\], got 0.0"),
        ({"threshold": 1.5}, r"--threshold: must be in \(0, 1\], got 1.5"),
        ({"num_perm": 0}, "--num-perm: must be at least 1, got 0"),
        ({"bands": 3}, "--bands: must divide --num-perm 128, got 3; try 16"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(BadInputError, match=match) as error:
        find_duplicates(_corpus([("a", None, "x")]), _qrels([("a", 1)]), **options)
    assert error.value.exit_code == 2


def _example():
    near = _with(WORDS, 20, "changed")  # word 20 sits in shingles 18, 19, 20: 3 of 38 replaced
    corpus = _corpus(
        [
            ("pos", None, POSITIVE),
            ("copy", None, "  " + POSITIVE.upper().replace(" ", " ,\n ") + "!!"),
            ("split", " ".join(WORDS[:5]), " ".join(WORDS[5:])),  # title + " " + text is the positive
            ("near", None, near),
            ("unrelated", "Cats", "Cats purr and dogs bark."),
            ("judged", None, "Cats purr and dogs bark."),  # a copy of a non-positive is no finding
        ]
    )
    return corpus, _qrels([("pos", 1), ("judged", 0), ("missing", 1)])


def test_exact_and_near_duplicates_of_a_positive():
    corpus, qrels = _example()
    table, stats = find_duplicates(corpus, qrels)
    assert table.schema == DUPLICATES
    assert table.to_pylist() == [
        {"doc_id": "copy", "dup_of": "pos", "kind": "exact", "similarity": 1.0},
        {"doc_id": "near", "dup_of": "pos", "kind": "near", "similarity": pytest.approx((38 - 3) / (38 + 3), abs=1e-7)},
        {"doc_id": "split", "dup_of": "pos", "kind": "exact", "similarity": 1.0},
    ]
    assert table.column("similarity").to_pylist()[1] == np.float32(35 / 41)
    texts = dict(zip(corpus.column("doc_id").to_pylist(), doc_texts(corpus)))
    assert jaccard(shingles(texts["near"]), shingles(texts["pos"])) == 35 / 41
    assert {k: v for k, v in stats.items() if k != "seconds"} == {
        "documents": 6,
        "positives": 1,  # "missing" is not in the corpus
        "exact_pairs": 2,
        "near_pairs": 1,
        "docs_duplicating_a_positive": 3,
    }
    assert stats["seconds"] >= 0


def test_deterministic():
    corpus, qrels = _example()
    first, _ = find_duplicates(corpus, qrels)
    assert first.equals(find_duplicates(corpus, qrels)[0])


def test_the_threshold_is_inclusive_and_a_near_duplicate_below_it_is_absent():
    corpus, qrels = _example()
    at = find_duplicates(corpus, qrels, threshold=35 / 41)[0]
    below = find_duplicates(corpus, qrels, threshold=35 / 41 + 0.001)[0]
    assert ("near", "near") in zip(at.column("doc_id").to_pylist(), at.column("kind").to_pylist())
    assert below.column("doc_id").to_pylist() == ["copy", "split"]  # the exact copies stay
    two_changed = _with(_with(WORDS, 10, "x").split(), 30, "y")  # 6 of 38 shingles replaced: J = 32/44 < 0.8
    assert jaccard(shingles(two_changed), shingles(POSITIVE)) == (38 - 6) / (38 + 6)
    table, _ = find_duplicates(_corpus([("pos", None, POSITIVE), ("two", None, two_changed)]), _qrels([("pos", 1)]))
    assert table.num_rows == 0


def test_two_positives_with_the_same_text_duplicate_each_other():
    corpus = _corpus([("b", None, POSITIVE), ("a", "Term0", " ".join(WORDS[1:])), ("c", None, "other text")])
    table, stats = find_duplicates(corpus, _qrels([("a", 1), ("b", 2), ("c", 1)]))
    assert table.to_pylist() == [
        {"doc_id": "b", "dup_of": "a", "kind": "exact", "similarity": 1.0},
        {"doc_id": "a", "dup_of": "b", "kind": "exact", "similarity": 1.0},
    ]
    assert stats["docs_duplicating_a_positive"] == 2


BASES = ["alpha beta gamma delta", "alpha beta gamma", "beta gamma delta alpha beta", "gamma", "", "delta delta alpha"]


@st.composite
def corpora(draw):
    """Small corpora of texts made from few words (so exact and near copies are common), each dressed up
    in case, punctuation and spacing that normalisation removes."""
    texts = []
    for _ in range(draw(st.integers(1, 8))):
        random_words = st.lists(st.sampled_from(["alpha", "beta", "gamma", "delta"]), max_size=7)
        words = draw(st.one_of(st.sampled_from(BASES).map(str.split), random_words))
        dressed = [w.upper() if draw(st.booleans()) else w for w in words]
        texts.append(draw(st.sampled_from([" ", "  ", ", ", " - ", "\n"])).join(dressed) + draw(st.sampled_from(["", ".", "!?"])))
    positives = draw(st.sets(st.integers(0, len(texts) - 1), min_size=1))
    return texts, positives


@settings(max_examples=60, deadline=None)
@given(corpora(), st.sampled_from([0.2, 0.5, 0.8, 1.0]), st.sampled_from([None, 128]))
def test_rows_are_true_duplicates_and_exact_pairs_are_never_missed(example, threshold, bands):
    texts, positives = example
    ids = [f"d{i}" for i in range(len(texts))]
    corpus, qrels = _corpus([(d, None, t) for d, t in zip(ids, texts)]), _qrels([(ids[p], 1) for p in positives])
    table, stats = find_duplicates(corpus, qrels, threshold=threshold, bands=bands)
    rows = table.to_pylist()
    assert [(r["dup_of"], r["doc_id"]) for r in rows] == sorted({(r["dup_of"], r["doc_id"]) for r in rows})
    text = dict(zip(ids, texts))
    for r in rows:
        assert r["doc_id"] != r["dup_of"] and int(r["dup_of"][1:]) in positives
        similarity = jaccard(shingles(text[r["doc_id"]]), shingles(text[r["dup_of"]]))
        assert similarity >= threshold and r["similarity"] == np.float32(similarity)
        assert (r["kind"] == "exact") == (normalise(text[r["doc_id"]]) == normalise(text[r["dup_of"]]))
    found = {(r["doc_id"], r["dup_of"]) for r in rows}
    pairs = [(d, p) for p in positives for d in range(len(texts)) if d != p]
    assert {(ids[d], ids[p]) for d, p in pairs if normalise(texts[d]) == normalise(texts[p])} <= found
    if bands == 128:  # one row per band: a pair of Jaccard s is missed with probability (1 − s)^128, nil here
        assert found == {(ids[d], ids[p]) for d, p in pairs if jaccard(shingles(texts[d]), shingles(texts[p])) >= threshold}
    assert stats["exact_pairs"] + stats["near_pairs"] == len(rows)
