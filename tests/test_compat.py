"""negmine.compat.mine_hard_negatives against sentence-transformers' own mine_hard_negatives, on sample_data/
turned into a pair dataset (anchor, positive), with the same model in float32."""

import json
import re

import numpy as np
import pytest

from tests.conftest import ROOT, SAMPLE

datasets = pytest.importorskip("datasets")
st_util = pytest.importorskip("sentence_transformers.util")

from negmine.compat import mine_hard_negatives, select_negatives

SETTINGS = {"sampling_strategy": "top", "range_max": 100, "num_negatives": 7, "output_format": "n-tuple", "verbose": False}


def _sample_pairs() -> tuple[list[tuple[str, str]], list[str]]:
    """(query text, positive text) of every judgement of sample_data/ in file order, and the texts of the other documents."""
    queries = {r["_id"]: r["text"] for r in map(json.loads, (SAMPLE / "queries.jsonl").read_text().splitlines())}
    corpus = {r["_id"]: r["text"] for r in map(json.loads, (SAMPLE / "corpus.jsonl").read_text().splitlines())}
    pairs, used = [], set()
    for split in ("train", "test"):
        for line in (SAMPLE / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]:
            qid, did, _ = line.split("\t")
            pairs.append((queries[qid], corpus[did]))
            used.add(did)
    return pairs, [text for did, text in corpus.items() if did not in used]


def _dataset(pairs):
    return datasets.Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]})


@pytest.fixture(scope="module")
def st_model(model_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path, device="cpu")


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    return tmp_path_factory.mktemp("compat-run")


def _one_per_anchor(pairs):
    seen, out = set(), []
    for anchor, positive in pairs:
        if anchor not in seen:
            seen.add(anchor)
            out.append((anchor, positive))
    return out


def _small():
    """30 pairs, some anchors with several positives."""
    pairs, _ = _sample_pairs()
    several = {a for a in {a for a, _ in pairs} if sum(x == a for x, _ in pairs) > 1}
    return [p for p in pairs if p[0] in several] + _one_per_anchor(pairs)[:30 - sum(p[0] in several for p in pairs)]


def negative_sets(dataset, num_negatives=7) -> dict:
    return {(r["anchor"], r["positive"]): {r[f"negative_{i}"] for i in range(1, num_negatives + 1)} for r in dataset}


def overlap(expected: dict, found: dict) -> float:
    """The share of sentence-transformers' negatives (per anchor, positive) that negmine's output has too."""
    return sum(len(negs & found.get(key, set())) for key, negs in expected.items()) / sum(len(negs) for negs in expected.values())


@pytest.mark.parametrize("case", ["no-corpus", "repeated-anchors", "extra-corpus"])
def test_the_same_negatives_as_sentence_transformers(case, model_path, st_model, tmp_path):
    pairs, others = _sample_pairs()
    if case == "repeated-anchors":
        assert len({a for a, _ in pairs}) < len(pairs)  # anchors with several positives
    else:
        pairs = _one_per_anchor(pairs)
    corpus = others[:100] if case == "extra-corpus" else None
    dataset = _dataset(pairs)
    theirs = st_util.mine_hard_negatives(dataset, st_model, corpus=corpus, **SETTINGS)
    ours = mine_hard_negatives(dataset, model_path, corpus=corpus, run_dir=tmp_path / "run", **SETTINGS)
    assert ours.column_names == theirs.column_names
    assert ours.num_rows == theirs.num_rows
    share = overlap(negative_sets(theirs), negative_sets(ours))
    print(f"\n{case}: {ours.num_rows} rows, overlap of negative sets with sentence-transformers {share:.4f}")
    assert share >= 0.98


@pytest.mark.parametrize("output_scores", [False, True])
@pytest.mark.parametrize("output_format", ["triplet", "n-tuple", "labeled-pair", "labeled-list"])
def test_each_output_format_has_sentence_transformers_columns(output_format, output_scores, model_path, st_model, shared_run):
    dataset = _dataset(_small())
    options = {"num_negatives": 3, "output_format": output_format, "output_scores": output_scores, "verbose": False}
    theirs = st_util.mine_hard_negatives(dataset, st_model, **options)
    ours = mine_hard_negatives(dataset, model_path, run_dir=shared_run, **options)
    assert ours.column_names == theirs.column_names
    assert ours.features == theirs.features
    assert ours.num_rows == theirs.num_rows


def test_a_loaded_model_and_a_rerun_are_served_from_the_run_directory(model_path, st_model, shared_run):
    dataset = _dataset(_small())
    first = mine_hard_negatives(dataset, model_path, num_negatives=3, run_dir=shared_run, verbose=False)
    manifest = json.loads((shared_run / "manifest.json").read_text())
    again = mine_hard_negatives(dataset, st_model, num_negatives=3, run_dir=shared_run, verbose=False)
    assert again.to_dict() == first.to_dict()
    assert json.loads((shared_run / "manifest.json").read_text()) == manifest  # every stage skipped
    assert not (shared_run / "models").exists()  # encoded from the folder the model was loaded from


def test_relative_margin_holds_for_negative_positive_scores():
    # s+ = -0.5, relative_margin 0.1: a negative must score at most -0.5 - 0.05 = -0.55. The rule
    # s <= (1 - margin) * s+ = -0.45 would keep -0.52, a candidate within 10% of the positive.
    scores = np.array([-0.40, -0.52, -0.60, -0.70])
    rules = {"relative_margin": 0.1, "range_min": 0, "range_max": 10, "num_negatives": 3, "sampling_strategy": "top"}
    chosen, skipped = select_negatives(scores, -0.5, rules, np.random.default_rng(0))
    assert [scores[i] for i in chosen] == [-0.60, -0.70]
    assert skipped["relative_margin"] == 2
    chosen, _ = select_negatives(-scores, 0.5, rules, np.random.default_rng(0))  # positive scores: the NV-Retriever rule
    assert [-scores[i] for i in chosen] == [0.40]


def test_an_anchor_with_several_positives_gets_its_full_window(model_path, shared_run):
    pairs = _small()
    dataset = _dataset(pairs)
    ours = mine_hard_negatives(dataset, model_path, range_max=7, num_negatives=7, output_format="n-tuple", run_dir=shared_run, verbose=False)
    positives = {}
    for anchor, positive in pairs:
        positives.setdefault(anchor, set()).add(positive)
    assert max(len(p) for p in positives.values()) >= 3
    assert ours.num_rows == len(set(pairs))  # no row dropped for want of candidates
    for key, negs in negative_sets(ours).items():
        assert len(negs) == 7 and not negs & positives[key[0]]


def test_a_range_max_beyond_the_corpus_is_the_corpus(model_path, shared_run):
    pairs = _small()
    documents = {p for _, p in pairs}
    ours = mine_hard_negatives(_dataset(pairs), model_path, range_max=10_000, num_negatives=5, run_dir=shared_run, verbose=False)
    assert ours.num_rows == 5 * len(set(pairs))
    assert set(ours["negative"]) <= documents
    assert all(neg != pos for pos, neg in zip(ours["positive"], ours["negative"]))


def test_more_negatives_than_the_window_fails_before_any_work(model_path, tmp_path):
    with pytest.raises(ValueError, match="Cannot mine 8 negatives"):
        mine_hard_negatives(_dataset(_small()), model_path, range_min=5, range_max=10, num_negatives=8, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_readme_snippet_runs(model_path, monkeypatch, tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Coming from sentence-transformers"):]
    snippet = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    assert "from negmine.compat import mine_hard_negatives" in snippet
    monkeypatch.chdir(tmp_path)
    namespace = {"dataset": _dataset(_small()), "model": model_path}
    exec(snippet, namespace)
    assert namespace["dataset"].column_names == ["anchor", "positive"] + [f"negative_{i}" for i in range(1, 8)]
    assert (tmp_path / "runs" / "st" / "manifest.json").exists()
