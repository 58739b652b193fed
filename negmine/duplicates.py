"""Documents that duplicate a labelled positive: false negatives by construction.

A mined negative whose text equals, or nearly equals, that of a labelled positive (relevance > 0) is
a false negative whatever the retriever thinks. :func:`find_duplicates` lists every document of the
corpus that is such a copy, as a ``DUPLICATES`` table (doc_id, dup_of, kind, similarity).

Texts are compared after :func:`normalise` (NFKC, casefold, punctuation to spaces, whitespace
collapsed) as sets of word n-gram shingles (:func:`shingles`). Similarity is their resemblance
(Broder, "On the resemblance and containment of documents", SEQUENCES 1997):

    r(A, B) = |S(A) ∩ S(B)| / |S(A) ∪ S(B)|        (the Jaccard coefficient of the shingle sets)

``exact``: equal normalised text (r = 1.0): every document is looked up in a dict of the positives'
normalised texts, so no exact pair is ever missed.
``near``: r(A, B) >= threshold, found in two steps. MinHash (Broder 1997) gives every document a
signature of ``num_perm`` minima, one per random permutation π_k of shingle hashes, chosen so that

    P[min π_k(S(A)) = min π_k(S(B))] = r(A, B).

Shingles are hashed stably (blake2b of each word, folded with the splitmix64 finaliser), and π_k(x) =
(a_k·x + b_k) mod 2^64 with a_k odd, a bijection that stands in for a random permutation.

LSH banding (Indyk & Motwani, STOC 1998; Leskovec, Rajaraman & Ullman, "Mining of Massive
Datasets", ch. 3.4) cuts the signature into b bands of r = num_perm / b rows; two documents become a
candidate pair when all rows of at least one band agree, which happens with probability

    P(candidate | r(A, B) = s) = 1 − (1 − s^r)^b,

an S-curve whose steepest point sits near s* = (1/b)^(1/r). :func:`lsh_bands` puts s* a little below
the threshold: for threshold 0.8 and 128 permutations, b = 16 and r = 8, so s* = 16^(−1/8) ≈ 0.71 and a
pair at s = 0.8 (0.9) becomes a candidate with probability 1 − (1 − 0.8^8)^16 ≈ 0.95 (≈ 0.9999).
Only the positives' band keys are indexed (they are few: O(positives · b) memory, sorted per band);
every document is hashed in blocks and probed against them (binary search), so memory does not grow
with the corpus. Every candidate pair is then checked with the exact shingle Jaccard, so the table
never holds a false near-duplicate: LSH only decides which pairs get checked, and a near-duplicate it
misses is a miss, never a wrong row.
"""

from __future__ import annotations

import hashlib
import time
from itertools import chain
import unicodedata
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from negmine.retrieve.candidates import doc_texts
from negmine.errors import BadInputError
from negmine.schemas import DUPLICATES

SHINGLE_SIZE = 3
BLOCK_DOCS = 512  # documents hashed per numpy block: memory stays O(block), not O(corpus) (about 150 bytes per word of the block at its peak)
MIDPOINT_MARGIN = 0.05  # automatic bands put the S-curve midpoint at least this far below the threshold

_U64 = np.uint64
_MIX1, _MIX2 = _U64(0xBF58476D1CE4E5B9), _U64(0x94D049BB133111EB)
_SEED_WORDS = _U64(0x9E3779B97F4A7C15)
_SEED_BANDS = _U64(0xD1B54A32D192ED03)


class _PunctuationToSpace(dict):
    """``str.translate`` table mapping every Unicode punctuation code point (category P*) to a space,
    filled lazily: a code point is looked up once, the first time a text holds it."""

    def __missing__(self, code_point: int) -> int:
        value = 32 if unicodedata.category(chr(code_point)).startswith("P") else code_point
        self[code_point] = value
        return value


_PUNCTUATION = _PunctuationToSpace()


def _words(text: str) -> list[str]:
    return unicodedata.normalize("NFKC", text).casefold().translate(_PUNCTUATION).split()


def normalise(text: str) -> str:
    """Unicode NFKC, casefolded, punctuation replaced by spaces, whitespace collapsed, stripped."""
    return " ".join(_words(text))


def _word_shingles(words: Sequence[str], size: int) -> set[tuple[str, ...]]:
    if len(words) < size:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}


def shingles(text: str, size: int = SHINGLE_SIZE) -> set[tuple[str, ...]]:
    """Word ``size``-grams of the normalised text. A text of fewer than ``size`` words gives its whole
    word sequence as one shingle; an empty text gives the empty set."""
    if size < 1:
        raise BadInputError("size", f"shingle size must be at least 1, got {size}")
    return _word_shingles(_words(text), size)


def jaccard(a: set, b: set) -> float:
    """|a ∩ b| / |a ∪ b|; two empty sets are identical, so their Jaccard is 1.0."""
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def lsh_bands(threshold: float, num_perm: int) -> int:
    """The number of bands b (a divisor of ``num_perm``) whose S-curve midpoint (1/b)^(1/r), r = num_perm / b,
    is the highest one at or below ``threshold − MIDPOINT_MARGIN``; ``num_perm`` bands (r = 1) when none is."""
    divisors = [b for b in range(1, num_perm + 1) if num_perm % b == 0]
    below = [b for b in divisors if (1 / b) ** (b / num_perm) <= threshold - MIDPOINT_MARGIN]
    return max(below, key=lambda b: (1 / b) ** (b / num_perm)) if below else num_perm


def _mix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a bijection on uint64 that spreads every input bit over the output."""
    x = x ^ (x >> _U64(30))
    x = x * _MIX1
    x = x ^ (x >> _U64(27))
    x = x * _MIX2
    return x ^ (x >> _U64(31))


class _Vocabulary(dict):
    """word → id, and ``digests[8·id : 8·id + 8]``: the word's 64-bit blake2b hash, computed once per distinct
    word (stable across processes, unlike ``hash``, which is salted per process)."""

    def __init__(self) -> None:
        super().__init__()
        self.digests = bytearray()

    def __missing__(self, word: str) -> int:
        self.digests += hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
        self[word] = value = len(self)
        return value


def _shingle_hashes(docs_words: Sequence[list[str]], size: int, vocabulary: _Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """A 64-bit hash of every shingle of every document (the hash of the word tuple, so equal shingles hash
    equal), and the number of shingles of each document (0 for an empty one)."""
    lengths = np.fromiter((len(w) for w in docs_words), dtype=np.int64, count=len(docs_words))
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=_U64), np.zeros(len(docs_words), dtype=np.int64)
    ids = np.fromiter(map(vocabulary.__getitem__, chain.from_iterable(docs_words)), dtype=np.int64, count=total)
    words = np.frombuffer(vocabulary.digests, dtype="<u8")[ids].astype(_U64)  # a copy: the view dies here
    counts = np.where(lengths >= size, lengths - size + 1, np.minimum(lengths, 1))
    doc_starts = np.cumsum(lengths) - lengths
    shingle_doc = np.repeat(np.arange(len(docs_words)), counts)
    first = np.cumsum(counts) - counts
    starts = doc_starts[shingle_doc] + np.arange(int(counts.sum())) - first[shingle_doc]
    width = np.minimum(lengths[shingle_doc], size)
    h = np.full(len(starts), _SEED_WORDS, dtype=_U64)
    for j in range(size):
        word = words[np.minimum(starts + j, total - 1)]
        h = np.where(j < width, _mix(h ^ word), h)
    return _mix(h ^ width.astype(_U64)), counts


class _MinHashLSH:
    """MinHash band keys of documents (``num_perm`` permutations π_k(x) = (a_k·x + b_k) mod 2^64, a_k odd, drawn
    from ``seed``), an index of the positives' keys, sorted per band, and the probe of a block of documents."""

    def __init__(self, num_perm: int, bands: int, seed: int):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(0, 2**64, size=num_perm, dtype=_U64, endpoint=False) | _U64(1)
        self.b = rng.integers(0, 2**64, size=num_perm, dtype=_U64, endpoint=False)
        self.bands, self.rows = bands, num_perm // bands
        self.vocabulary = _Vocabulary()
        self.indexed = np.zeros(0, dtype=np.int64)

    def band_keys(self, docs_words: Sequence[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """One 64-bit key per (document, band), from the band's r signature rows, and the mask of documents
        that have shingles (an empty document has no signature and no keys)."""
        hashes, counts = _shingle_hashes(docs_words, SHINGLE_SIZE, self.vocabulary)
        has = counts > 0
        offsets = (np.cumsum(counts) - counts)[has]
        signature = np.empty((len(offsets), len(self.a)), dtype=_U64)
        if len(offsets):
            for k in range(len(self.a)):
                signature[:, k] = np.minimum.reduceat(self.a[k] * hashes + self.b[k], offsets)
        keys = np.empty((len(offsets), self.bands), dtype=_U64)
        for band in range(self.bands):
            key = np.full(len(offsets), _SEED_BANDS, dtype=_U64)
            for k in range(band * self.rows, (band + 1) * self.rows):
                key = _mix(key ^ signature[:, k])
            keys[:, band] = key
        return keys, has

    def index(self, positives: np.ndarray, positive_words: Sequence[list[str]]) -> None:
        keys, has = self.band_keys(positive_words)
        self.indexed = positives[has]
        self.order = np.argsort(keys, axis=0, kind="stable")
        self.sorted_keys = np.take_along_axis(keys, self.order, axis=0)

    def probe(self, docs: np.ndarray, docs_words: Sequence[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """(document, positive) index pairs that agree on all rows of at least one band (repeats included)."""
        if not len(self.indexed):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        keys, has = self.band_keys(docs_words)
        docs = docs[has]
        found_docs, found_positives = [], []
        for band in range(self.bands):
            left = np.searchsorted(self.sorted_keys[:, band], keys[:, band], side="left")
            hits = np.searchsorted(self.sorted_keys[:, band], keys[:, band], side="right") - left
            hit = hits > 0
            hits, left = hits[hit], left[hit]
            within = np.arange(int(hits.sum())) - np.repeat(np.cumsum(hits) - hits, hits)
            found_docs.append(np.repeat(docs[hit], hits))
            found_positives.append(self.indexed[self.order[np.repeat(left, hits) + within, band]])
        return np.concatenate(found_docs), np.concatenate(found_positives)


def _check(threshold: float, num_perm: int, bands: int | None) -> int:
    if not 0 < threshold <= 1:
        raise BadInputError("--threshold", f"must be in (0, 1], got {threshold}")
    if num_perm < 1:
        raise BadInputError("--num-perm", f"must be at least 1, got {num_perm}")
    if bands is None:
        return lsh_bands(threshold, num_perm)
    if bands < 1 or num_perm % bands:
        raise BadInputError("--bands", f"must divide --num-perm {num_perm}, got {bands}; try {lsh_bands(threshold, num_perm)}")
    return bands


def _blocks(n: int) -> Iterable[range]:
    return (range(start, min(start + BLOCK_DOCS, n)) for start in range(0, n, BLOCK_DOCS))


def _confirm(pairs: np.ndarray, texts: Sequence[str], exact: set[tuple[int, int]], threshold: float) -> list[tuple[int, int, float]]:
    """(document, positive, Jaccard) of the candidate pairs (coded document · len(texts) + positive) whose exact
    shingle Jaccard reaches ``threshold``; pairs already found exact are skipped."""
    shingle_sets: dict[int, set[tuple[str, ...]]] = {}

    def shingles_of(i: int) -> set[tuple[str, ...]]:
        if i not in shingle_sets:
            shingle_sets[i] = _word_shingles(_words(texts[i]), SHINGLE_SIZE)
        return shingle_sets[i]

    near = []
    for code in pairs.tolist():
        i, p = divmod(code, len(texts))
        if i != p and (i, p) not in exact:
            similarity = jaccard(shingles_of(i), shingles_of(p))
            if similarity >= threshold:
                near.append((i, p, similarity))
    return near


def find_duplicates(
    corpus: pa.Table,
    qrels: pa.Table,
    threshold: float = 0.8,
    num_perm: int = 128,
    bands: int | None = None,
    seed: int = 42,
) -> tuple[pa.Table, dict]:
    """Every (document, positive) pair whose texts are exact or near duplicates, sorted by (dup_of, doc_id).

    ``corpus`` has the CORPUS schema (a document's text is :func:`negmine.retrieve.candidates.doc_texts`),
    ``qrels`` the QRELS schema; positives are its documents with relevance > 0 that the corpus holds.
    A positive may be the duplicate of another positive (both directions are listed). ``threshold`` is
    the least shingle Jaccard of a near duplicate; ``num_perm`` the MinHash signature length; ``bands``
    the LSH bands (default :func:`lsh_bands`); ``seed`` draws the permutations. Returns the
    ``DUPLICATES`` table and stats: documents, positives, exact_pairs, near_pairs,
    docs_duplicating_a_positive, seconds.
    """
    started = time.perf_counter()
    bands = _check(threshold, num_perm, bands)
    texts = doc_texts(corpus)
    doc_ids = corpus.column("doc_id").to_pylist()
    positive_ids = pc.unique(pc.filter(qrels.column("doc_id"), pc.greater(qrels.column("relevance"), 0)))
    positives = np.flatnonzero(pc.is_in(corpus.column("doc_id"), value_set=positive_ids).to_numpy(zero_copy_only=False))

    positive_words = [_words(texts[p]) for p in positives]
    positive_by_text: dict[str, list[int]] = {}
    for p, words in zip(positives.tolist(), positive_words):
        positive_by_text.setdefault(" ".join(words), []).append(p)
    lsh = _MinHashLSH(num_perm, bands, seed)
    lsh.index(positives, positive_words)

    exact: set[tuple[int, int]] = set()
    candidates: list[np.ndarray] = []
    for block in _blocks(len(texts)):
        block_words = [_words(texts[i]) for i in block]
        for i, words in zip(block, block_words):
            exact.update((i, p) for p in positive_by_text.get(" ".join(words), ()) if p != i)
        found_docs, found_positives = lsh.probe(np.asarray(block, dtype=np.int64), block_words)
        candidates.append(np.unique(found_docs * len(texts) + found_positives))
    near = _confirm(np.unique(np.concatenate(candidates)) if candidates else np.zeros(0, dtype=np.int64), texts, exact, threshold)

    by_pair: dict[tuple[str, str], tuple[str, str, str, float]] = {}
    for i, p, kind, similarity in [(i, p, "exact", 1.0) for i, p in exact] + [(i, p, "near", s) for i, p, s in near]:
        if doc_ids[i] != doc_ids[p]:  # a corpus read by negmine.ingest has unique ids; a hand-built one may not
            by_pair.setdefault((doc_ids[i], doc_ids[p]), (doc_ids[i], doc_ids[p], kind, similarity))
    rows = sorted(by_pair.values(), key=lambda r: (r[1], r[0]))
    table = pa.table(
        {
            "doc_id": [r[0] for r in rows],
            "dup_of": [r[1] for r in rows],
            "kind": [r[2] for r in rows],
            "similarity": np.asarray([r[3] for r in rows], dtype=np.float32),
        },
        schema=DUPLICATES,
    )
    stats = {
        "documents": len(texts),
        "positives": len(positives),
        "exact_pairs": sum(r[2] == "exact" for r in rows),
        "near_pairs": sum(r[2] == "near" for r in rows),
        "docs_duplicating_a_positive": len({r[0] for r in rows}),
        "seconds": time.perf_counter() - started,
    }
    return table, stats
