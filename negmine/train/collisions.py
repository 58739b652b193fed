"""In-batch collisions: documents of a training batch that must not count as negatives of an anchor.

MultipleNegativesRankingLoss (InfoNCE; van den Oord et al. 2018, Henderson et al. 2017) scores each
anchor q_i against every document of the batch: the B positives, then the B first hard negatives, and
so on (column-major, as sentence-transformers concatenates the columns). Every document other than the
anchor's own positive d_i⁺ is a negative. Some of them are not: a labelled positive of q_i that came in
as another row's positive or hard negative, a text duplicate of one of q_i's positives, a candidate a
false-negative model scored as a likely positive, or d_i⁺ itself appearing again in another cell.
Pushing q_i away from those is training on false negatives.

The masked loss leaves those cells M_i out of the softmax denominator:

    L_i = −log( e^{s(q_i, d_i⁺)/τ} / Σ_{j ∉ M_i} e^{s(q_i, d_j)/τ} )

where j runs over the B·C documents of the batch (C document columns: positive, negative_1..) and
τ = 1/scale. The own positive cell is never in M_i, so no row's denominator is empty.

This module is pure (no torch): :func:`positive_groups` builds, per query, the set of documents that
must never be its negative; :func:`collision_mask` turns a batch's ids into the boolean M.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa


def positive_groups(qrels: pa.Table, duplicates: pa.Table | None = None, likely_positives: pa.Table | None = None) -> dict[str, set[str]]:
    """Per query id, the doc ids that must never be its negative.

    - its labelled positives (qrels rows with relevance > 0);
    - every document the ``duplicates`` table (schema ``DUPLICATES``) pairs with one of those positives,
      in either direction (a row says ``doc_id`` and ``dup_of`` have the same, or nearly the same, text);
      one hop only: duplicates of duplicates are not followed;
    - the (query_id, doc_id) rows of ``likely_positives`` (any table with those two columns; the train
      stage passes the candidates whose false-negative probability is above its threshold).
    """
    groups: dict[str, set[str]] = {}
    for q, d, r in zip(*(qrels.column(c).to_pylist() for c in ("query_id", "doc_id", "relevance"))):
        if r > 0:
            groups.setdefault(q, set()).add(d)
    if duplicates is not None and duplicates.num_rows:
        paired: dict[str, set[str]] = {}
        for d, p in zip(duplicates.column("doc_id").to_pylist(), duplicates.column("dup_of").to_pylist()):
            paired.setdefault(p, set()).add(d)
            paired.setdefault(d, set()).add(p)
        for group in groups.values():
            group |= {d for p in list(group) for d in paired.get(p, ())}
    if likely_positives is not None:
        for q, d in zip(likely_positives.column("query_id").to_pylist(), likely_positives.column("doc_id").to_pylist()):
            groups.setdefault(q, set()).add(d)
    return groups


def collision_mask(anchor_queries: Sequence[str], column_doc_ids: Sequence[Sequence[str]], groups: dict[str, set[str]]) -> np.ndarray:
    """M as a (B, B·C) boolean array: True where a document is left out of row i's softmax.

    ``anchor_queries[i]`` is the query id of row i; ``column_doc_ids[c][j]`` the doc id in column c
    (0 = positive, then negative_1..) of row j. Cell (i, c·B + j) — the column-major layout of the
    loss's score matrix — is True when that document is in ``groups[anchor_queries[i]]`` or equals
    row i's own positive ``column_doc_ids[0][i]``, except the own positive cell (i, i), which is never
    masked.
    """
    n_rows, n_columns = len(anchor_queries), len(column_doc_ids)
    if n_columns < 1:
        raise ValueError("collision_mask needs at least the positive column")
    cells_of: dict[str, list[int]] = {}
    for c, column in enumerate(column_doc_ids):
        if len(column) != n_rows:
            raise ValueError(f"column {c} has {len(column)} doc ids for {n_rows} anchors")
        for j, doc in enumerate(column):
            cells_of.setdefault(doc, []).append(c * n_rows + j)
    mask = np.zeros((n_rows, n_rows * n_columns), dtype=bool)
    for i, query in enumerate(anchor_queries):
        group = groups.get(query, ())
        if len(group) <= len(cells_of):  # walk the smaller of the two
            hits = [d for d in group if d in cells_of]
        else:
            hits = [d for d in cells_of if d in group]
        for doc in [*hits, column_doc_ids[0][i]]:
            mask[i, cells_of[doc]] = True
        mask[i, i] = False
    return mask
