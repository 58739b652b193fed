"""Runners for ``negmine train`` and ``negmine evaluate``: read tables, call negmine.train.trainer / negmine.train.evaluate,
write the model or the per-query results, record the manifest."""

from __future__ import annotations

from pathlib import Path

from negmine import progress
from negmine.errors import BadInputError, StageError
from negmine.io import read_table, write_json, write_table
from negmine.names import check_name
from negmine.rundir import Run
from negmine.runners.base import (
    DEFAULT_MODEL,
    StageResult,
    model_id,
    run_stage,
    table_path,
    unless_default,
)
from negmine.schemas import (
    CLUSTERS,
    CORPUS,
    DUPLICATES,
    FN_SCORES,
    NEGATIVES,
    QRELS,
    QUERIES,
)


def train_stage(
    run: Run,
    name: str,
    model: str = DEFAULT_MODEL,
    method: str = "mnrl",
    strategy: str | None = "simans",
    loss: str = "mnrl",
    num_negatives: int = 1,
    random_negatives: int = 1,
    batching: str = "no-duplicates",
    epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float = 2e-5,
    seed: int = 42,
    max_seq_length: int | None = 256,
    adore_k: int = 200,
    force: bool = False,
    mask_collisions: bool = True,
    fn_source: str = "dense",
    mask_fn_above: float = 0.5,
) -> StageResult:
    """Train a bi-encoder on the run's negatives; the model lands in ``RUN/models/NAME/final``.

    ``mask_collisions`` (mnrl and star) leaves out of each anchor's softmax the in-batch documents that
    are positives of its query (negmine.train.collisions): its labelled positives, their text duplicates
    (``duplicates.parquet``, when the run has it) and the candidates of ``fn_scores_<fn_source>.parquet``
    with fn_prob above ``mask_fn_above`` (when the run has it). The tables used are inputs of the stage.
    Stats: ``masked_in_batch``, the cells masked over the whole run.
    """
    import numpy as np

    from negmine.train import trainer as train

    if method not in train.METHODS:
        raise BadInputError("--method", f"unknown value {method!r}; choose from {sorted(train.METHODS)}")
    for value, option in ((name, "--name"), (strategy or "none", "--strategy"), (fn_source, "--fn-source")):
        check_name(value, option)
    if not 0.0 <= mask_fn_above <= 1.0:
        raise BadInputError("--mask-fn-above", f"a probability threshold in [0, 1], got {mask_fn_above}")
    inputs = [table_path(run, n) for n in ("corpus", "queries", "qrels")]
    if method != "adore" and strategy:
        inputs.append(table_path(run, f"negatives_{strategy}"))
    if batching == "tas-balanced":
        inputs.append(table_path(run, "clusters"))
    for path in inputs:
        if not path.exists():
            raise StageError(f"{path}: missing; mine it first (negmine mine --strategy {strategy or 'simans'} …)")
    masking = mask_collisions and method != "adore"  # ADORE's loss already skips the query's positives
    duplicates_path, fn_path = table_path(run, "duplicates"), table_path(run, f"fn_scores_{fn_source}")
    use_duplicates, use_fn = masking and duplicates_path.exists(), masking and fn_path.exists()
    inputs += [path for path, used in ((duplicates_path, use_duplicates), (fn_path, use_fn)) if used]
    out_dir = run.file(f"models/{name}")
    config = {
        "model": model_id(model), "method": method, "strategy": strategy, "loss": loss, "num_negatives": num_negatives,
        "random_negatives": random_negatives, "batching": batching, "epochs": epochs, "batch_size": batch_size,
        "learning_rate": learning_rate, "seed": seed, "max_seq_length": max_seq_length,
    }
    if method == "adore":
        config["adore_k"] = adore_k
    else:  # keys added after runs were recorded: only when not the default, so those runs stay fresh
        config |= unless_default(mask_collisions=(mask_collisions, True))
        if use_fn:
            config |= unless_default(fn_source=(fn_source, "dense"), mask_fn_above=(mask_fn_above, 0.5))

    def compute():
        corpus = read_table(inputs[0], CORPUS, "corpus")
        queries = read_table(inputs[1], QUERIES, "queries")
        qrels = read_table(inputs[2], QRELS, "qrels")
        if method == "adore":
            from negmine.retrieve.embed import embed_corpus
            from negmine.retrieve.models import load_model

            emb_path = out_dir / "doc_embeddings.npy"
            doc_model = load_model(model, max_seq_length)
            embeddings = embed_corpus(corpus, doc_model, emb_path, dtype="float32")
            _, losses = train.train_adore(model, queries, qrels, corpus, out_dir, np.asarray(embeddings), adore_k, epochs, batch_size, learning_rate, seed=seed, max_seq_length=max_seq_length)
            history = [{"step": i + 1, "loss": v} for i, v in enumerate(losses)]
        else:
            negatives = read_table(inputs[3], NEGATIVES, "negatives") if strategy else None
            extra = random_negatives if method == "star" else 0
            examples = train.training_examples(negatives, queries, corpus, qrels, num_negatives, extra, seed)
            clusters = None
            if batching == "tas-balanced":
                table = read_table(table_path(run, "clusters"), CLUSTERS, "clusters")
                clusters = dict(zip(table.column("query_id").to_pylist(), table.column("cluster_id").to_pylist()))
            groups = None
            if masking:
                from negmine.train.collisions import positive_groups

                duplicates = read_table(duplicates_path, DUPLICATES, "duplicates") if use_duplicates else None
                likely = None
                if use_fn:
                    import pyarrow.compute as pc

                    scores = read_table(fn_path, FN_SCORES, "fn_scores")
                    likely = scores.filter(pc.greater(scores.column("fn_prob"), mask_fn_above))
                groups = positive_groups(qrels, duplicates, likely)
            _, history = train.train_bi_encoder(
                model, examples, out_dir, loss, epochs, batch_size, learning_rate, seed=seed,
                max_seq_length=max_seq_length, batching=batching, cluster_of_query=clusters, groups=groups,
            )
        write_json(history, out_dir / "log_history.json")
        steps = [h["loss"] for h in history if "loss" in h]
        stats = {"steps_logged": len(steps), "first_loss": steps[0] if steps else None, "last_loss": steps[-1] if steps else None, "model": str(out_dir / "final")}
        if method != "adore":
            stats["masked_in_batch"] = next((h["masked_in_batch"] for h in history if "masked_in_batch" in h), 0)
        return stats

    return run_stage(run, f"train.{name}", config, inputs, [out_dir / "final"], compute, force)


def evaluate_model(
    model: str,
    data_dir: str | Path,
    split: str = "test",
    metrics=("nDCG@10", "RR@10", "R@100"),
    k: int = 100,
    max_seq_length: int | None = 256,
    batch_size: int = 64,
    doc_model: str | None = None,
    out: str | Path | None = None,
) -> dict:
    """Rank ``split`` of a dataset with ``model`` (documents with ``doc_model`` when given, as for ADORE),
    score it, and write per-query values to ``out`` (Parquet) with the aggregate beside it (JSON)."""
    from negmine.ingest import ingest
    from negmine.retrieve.candidates import doc_texts
    from negmine.retrieve.encode import encode
    from negmine.retrieve.models import load_model
    from negmine.train.evaluate import PER_QUERY, dense_ranking, evaluate_ranking

    dataset = ingest(data_dir, "auto", split)
    query_model = load_model(model, max_seq_length)
    doc_encoder = load_model(doc_model, max_seq_length) if doc_model else query_model
    with progress.stage("evaluate"), progress.track(dataset.corpus.num_rows, "docs", "encode") as bar:
        emb = encode(doc_encoder, doc_texts(dataset.corpus), batch_size, on_batch=bar.advance if bar.active else None)
    ranking = dense_ranking(query_model, dataset.corpus, dataset.queries, k, batch_size, corpus_embeddings=emb)
    aggregate, per_query = evaluate_ranking(ranking, dataset.qrels, metrics)
    result = {"model": str(model), "doc_model": str(doc_model) if doc_model else None, "split": split, "queries": dataset.queries.num_rows, "metrics": aggregate}
    if out:
        out = Path(out)
        write_table(per_query, out, PER_QUERY)
        write_json(result, out.with_suffix(".json"))
    return result


def compare_results(a: str | Path, b: str | Path, metrics) -> list[dict]:
    from negmine.train.evaluate import PER_QUERY, compare

    ta, tb = read_table(a, PER_QUERY, "results"), read_table(b, PER_QUERY, "results")
    present = sorted(set(ta.column("measure").to_pylist()))
    wanted = [m for m in present if not metrics or m in metrics]
    return [compare(ta, tb, m) for m in wanted]
