"""negmine.train.collisions: positive groups, the in-batch collision mask, and the masked MNRL loss against the formula."""

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from negmine.train.collisions import collision_mask, positive_groups
from negmine.schemas import DUPLICATES, FN_SCORES, QRELS


def test_positive_groups_join_labels_duplicates_and_likely_positives():
    qrels = pa.table({"query_id": ["q1", "q1", "q2", "q3"], "doc_id": ["a", "b", "c", "z"], "relevance": [1, 0, 2, 0]}, schema=QRELS)
    duplicates = pa.table({"doc_id": ["a2", "c", "x"], "dup_of": ["a", "c9", "y"], "kind": ["exact", "near", "near"], "similarity": [1.0, 0.9, 0.8]}, schema=DUPLICATES)
    likely = pa.table({"query_id": ["q2", "q4"], "doc_id": ["e", "f"], "source_rank": [3, 1], "fn_prob": [0.9, 0.7]}, schema=FN_SCORES)
    # b and z are judged non-relevant; c9 is paired with the positive c (either direction counts); x~y touches no positive
    assert positive_groups(qrels) == {"q1": {"a"}, "q2": {"c"}}
    assert positive_groups(qrels, duplicates, likely) == {"q1": {"a", "a2"}, "q2": {"c", "c9", "e"}, "q4": {"f"}}


def test_hand_written_batch():
    # 3 rows, columns positive and negative_1; cells in the loss's order: p0 p1 p2 n0 n1 n2
    anchors = ["q0", "q1", "q2"]
    columns = [["a", "b", "c"], ["x", "a", "b"]]
    groups = {"q0": {"a", "c"}, "q1": {"b"}, "q2": {"c", "x"}}
    expected = np.array([
        # p0     p1     p2     n0     n1     n2
        [False, False, True, False, True, False],   # q0: c (row 2's positive) and a (its own positive again, as row 1's negative)
        [False, False, False, False, False, True],  # q1: b again as row 2's negative
        [False, False, False, True, False, False],  # q2: x, row 0's negative, is a positive of q2
    ])
    np.testing.assert_array_equal(collision_mask(anchors, columns, groups), expected)


def test_own_positive_is_masked_elsewhere_even_outside_the_groups():
    mask = collision_mask(["q0", "q1"], [["a", "a"], ["b", "c"]], {})
    np.testing.assert_array_equal(mask, [[False, True, False, False], [True, False, False, False]])


def test_columns_must_match_the_anchors():
    with pytest.raises(ValueError, match="column 1 has 1 doc ids for 2 anchors"):
        collision_mask(["q0", "q1"], [["a", "b"], ["c"]], {})


@st.composite
def batches(draw):
    n_rows = draw(st.integers(1, 6))
    n_columns = draw(st.integers(1, 4))
    docs = st.sampled_from([f"d{i}" for i in range(10)])
    queries = [f"q{i}" for i in range(5)]
    anchors = draw(st.lists(st.sampled_from(queries), min_size=n_rows, max_size=n_rows))
    groups = {q: draw(st.sets(docs, max_size=4)) for q in queries if draw(st.booleans())}
    columns = [draw(st.lists(docs, min_size=n_rows, max_size=n_rows)) for _ in range(n_columns)]
    return anchors, columns, groups


@settings(max_examples=300, deadline=None)
@given(batches())
def test_mask_hides_exactly_the_known_positives(batch):
    anchors, columns, groups = batch
    n_rows = len(anchors)
    mask = collision_mask(anchors, columns, groups)
    assert mask.shape == (n_rows, n_rows * len(columns))
    for i, query in enumerate(anchors):
        own = columns[0][i]
        assert not mask[i, i]  # (c) the own positive cell stays
        for c, column in enumerate(columns):
            for j, doc in enumerate(column):
                if (c, j) == (0, i):
                    continue
                known_positive = doc in groups.get(query, set()) or doc == own
                # (a) every masked cell is a known positive; (b) every unmasked one is a true negative
                assert mask[i, c * n_rows + j] == known_positive


# ---- the masked loss, against sentence-transformers and the formula ----

@pytest.fixture(scope="module")
def model(model_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path, device="cpu")


def _embeddings(n_rows, n_columns, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n_rows, dim)).astype(np.float32) for _ in range(1 + n_columns)]


def _formula(embeddings, mask, scale=20.0):
    """mean over rows of −log( e^{s(q_i,d_i⁺)·scale} / Σ_{j ∉ M_i} e^{s(q_i,d_j)·scale} ), s = cosine."""
    unit = [e / np.linalg.norm(e, axis=1, keepdims=True) for e in embeddings]
    queries, docs = unit[0].astype(np.float64), np.concatenate(unit[1:]).astype(np.float64)
    scores = scale * queries @ docs.T
    losses = []
    for i in range(len(queries)):
        kept = scores[i][~mask[i]]
        losses.append(-(scores[i, i] - np.log(np.sum(np.exp(kept)))))
    return float(np.mean(losses))


ROWS = ["q0", "q1", "q2", "q3"]
IDS = [("p0", "n0"), ("p1", "n1"), ("p2", "n2"), ("p3", "n3")]


@pytest.mark.parametrize("cached", [False, True])
def test_without_collisions_the_masked_loss_is_mnrl(model, cached):
    import torch
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss, MultipleNegativesRankingLoss

    from negmine.train import trainer as train

    embeddings = [torch.from_numpy(e) for e in _embeddings(4, 2)]
    labels = torch.arange(4)
    reference = MultipleNegativesRankingLoss(model).compute_loss_from_embeddings(embeddings, labels)
    if cached:
        loss = train.CachedMaskedMultipleNegativesRankingLoss(model, ROWS, IDS, {}, mini_batch_size=3)
        cached_reference = CachedMultipleNegativesRankingLoss(model, mini_batch_size=3).calculate_loss([[e[:3], e[3:]] for e in embeddings], labels)
        value = loss.calculate_loss([[e[:3], e[3:]] for e in embeddings], labels)
        assert float(cached_reference) == pytest.approx(float(reference), rel=1e-6)
    else:
        loss = train.MaskedMultipleNegativesRankingLoss(model, ROWS, IDS, {})
        value = loss.compute_loss_from_embeddings(embeddings, labels)
    assert float(value) == pytest.approx(float(reference), rel=1e-6)
    assert loss.masked_in_batch == 0


@pytest.mark.parametrize("cached", [False, True])
def test_with_collisions_the_loss_is_the_formula_over_the_unmasked_cells(model, cached):
    import torch

    from negmine.train import trainer as train

    groups = {"q0": {"p0", "p2", "n3"}, "q1": {"p1"}, "q3": {"n1"}}
    raw = _embeddings(4, 2, seed=1)
    # the batch holds rows 2, 0, 3, 1 of the examples: the labels carry the row indices
    order = [2, 0, 3, 1]
    embeddings = [torch.from_numpy(e) for e in raw]
    labels = torch.tensor(order)
    mask = collision_mask([ROWS[r] for r in order], [[IDS[r][c] for r in order] for c in range(2)], groups)
    assert mask.sum() == 3  # q0 ← p2, n3; q3 ← n1
    if cached:
        loss = train.CachedMaskedMultipleNegativesRankingLoss(model, ROWS, IDS, groups, mini_batch_size=3)
        value = loss.calculate_loss([[e[:3], e[3:]] for e in embeddings], labels)
    else:
        loss = train.MaskedMultipleNegativesRankingLoss(model, ROWS, IDS, groups)
        value = loss.compute_loss_from_embeddings(embeddings, labels)
    assert float(value) == pytest.approx(_formula(raw, mask), rel=1e-5)
    assert float(value) < _formula(raw, np.zeros((4, 8), dtype=bool))  # masking removes mass from the denominator
    assert loss.masked_in_batch == 3


def test_the_cached_loss_backpropagates_the_same_gradients(model):
    import torch

    from negmine.train import trainer as train

    groups = {"q0": {"p2", "n3"}, "q3": {"n1"}}
    raw = _embeddings(4, 2, seed=2)
    plain = [torch.from_numpy(e).requires_grad_() for e in raw]
    train.MaskedMultipleNegativesRankingLoss(model, ROWS, IDS, groups).compute_loss_from_embeddings(plain, torch.arange(4)).backward()
    reps = [[torch.from_numpy(e[:3]).requires_grad_(), torch.from_numpy(e[3:]).requires_grad_()] for e in raw]
    train.CachedMaskedMultipleNegativesRankingLoss(model, ROWS, IDS, groups, mini_batch_size=3).calculate_loss(reps, torch.arange(4), with_backward=True)
    for column, pieces in zip(plain, reps):
        np.testing.assert_allclose(torch.cat([r.grad for r in pieces]).numpy(), column.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_the_loss_needs_the_row_indices(model):
    import torch

    from negmine.train import trainer as train

    loss = train.MaskedMultipleNegativesRankingLoss(model, ROWS, IDS, {})
    with pytest.raises(ValueError, match="needs each row's index in the dataset's 'label' column"):
        loss.compute_loss_from_embeddings([torch.zeros(4, 8)] * 3, None)


def test_importing_the_trainer_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, negmine.train.trainer, negmine.train.collisions; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
