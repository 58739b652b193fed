"""The bundled trainer: fine-tune a bi-encoder on mined negatives with sentence-transformers.

Methods
    mnrl   MultipleNegativesRankingLoss (InfoNCE over in-batch and hard negatives; van den Oord et al.
           2018, Henderson et al. 2017) on (anchor, positive, negative_1..n) built from a negatives table;
           ``--loss cached-mnrl`` is its GradCache variant (Gao et al., RepL4NLP 2021) for large batches
           in small memory. With no negatives table it is in-batch-only training.
    star   STAR (Zhan et al., SIGIR 2021): static hard negatives mixed with random negatives — each example
           carries ``num_negatives`` mined negatives plus ``random_negatives`` uniform corpus documents, and
           the in-batch negatives of MNRL act as further random negatives.
    adore  ADORE (Zhan et al., SIGIR 2021): the document index is fixed (embeddings of the starting model);
           only the query encoder trains. Each step retrieves the current queries' top-k with faiss and
           minimises the pairwise loss  Σ_{(p,n)} |1/r_p − 1/r_n| · log(1 + exp(scale·(s_n − s_p)))
           over each query's positives p and retrieved non-positive documents n, the ΔMRR weight of
           LambdaRank (Burges, 2010) as in DRhard. There is no library implementation, so this is a
           small loop of its own.

Batching: ``no-duplicates`` (sentence-transformers' NoDuplicatesBatchSampler) or ``tas-balanced``
(Hofstätter et al., SIGIR 2021): every batch is drawn from one query cluster of the clusters table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from negmine.errors import StageError

LOSSES = ("mnrl", "cached-mnrl")
METHODS = ("mnrl", "star", "adore")
BATCHINGS = ("no-duplicates", "tas-balanced")


def training_examples(
    negatives: pa.Table | None,
    queries: pa.Table,
    corpus: pa.Table,
    qrels: pa.Table,
    num_negatives: int = 1,
    random_negatives: int = 0,
    seed: int = 42,
) -> dict[str, list]:
    """Columns anchor, positive, negative_1..n (n = num_negatives + random_negatives) and query_id.

    One row per (query, positive). Mined negatives come in ``neg_rank`` order; a pair with fewer mined
    negatives than ``num_negatives`` is topped up with uniform corpus documents (never a positive), as are
    the ``random_negatives`` columns. Without a negatives table, only anchor and positive are returned.
    """
    from negmine.candidates import doc_texts
    from negmine.sample.pool import rng_for

    query_text = dict(zip(queries.column("query_id").to_pylist(), queries.column("text").to_pylist()))
    doc_ids = corpus.column("doc_id").to_pylist()
    text_of = dict(zip(doc_ids, doc_texts(corpus)))
    positives: dict[str, list[str]] = {}
    for q, d, r in zip(*(qrels.column(c).to_pylist() for c in ("query_id", "doc_id", "relevance"))):
        if r > 0 and q in query_text:
            positives.setdefault(q, []).append(d)
    mined: dict[tuple[str, str], list[str]] = {}
    if negatives is not None:
        ordered = negatives.sort_by([("query_id", "ascending"), ("pos_id", "ascending"), ("neg_rank", "ascending")])
        for q, p, n in zip(*(ordered.column(c).to_pylist() for c in ("query_id", "pos_id", "neg_id"))):
            mined.setdefault((q, p), []).append(n)
    width = (num_negatives if negatives is not None else 0) + random_negatives
    columns: dict[str, list] = {"query_id": [], "anchor": [], "positive": []} | {f"negative_{i + 1}": [] for i in range(width)}
    for qid in queries.column("query_id").to_pylist():
        for pos in positives.get(qid, []):
            negs = mined.get((qid, pos), [])[:num_negatives] if negatives is not None else []
            rng = rng_for(seed, "train", qid, pos)
            excluded = set(positives[qid]) | set(negs)
            while len(negs) < width:
                cand = doc_ids[int(rng.integers(len(doc_ids)))]
                if cand not in excluded:
                    negs.append(cand)
                    excluded.add(cand)
            columns["query_id"].append(qid)
            columns["anchor"].append(query_text[qid])
            columns["positive"].append(text_of[pos])
            for i, n in enumerate(negs):
                columns[f"negative_{i + 1}"].append(text_of[n])
    if not columns["anchor"]:
        raise StageError("no training examples: no query has a positive")
    return columns


def _tas_balanced_sampler(cluster_of_row: list[int], anchor_of_row: list[str]):
    """A sentence-transformers batch sampler factory drawing each batch from one query cluster.

    Returned as a ``functools.partial`` of a module-level class so the Trainer can pickle its arguments.
    """
    import functools

    from negmine._tas_sampler import TASBalancedBatchSampler

    return functools.partial(TASBalancedBatchSampler, cluster_of_row=list(cluster_of_row), anchor_of_row=list(anchor_of_row))


def train_bi_encoder(
    model_name_or_path: str,
    examples: dict[str, list],
    output_dir: str | Path,
    loss: str = "mnrl",
    epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float = 2e-5,
    warmup_ratio: float = 0.1,
    seed: int = 42,
    max_seq_length: int | None = 256,
    mini_batch_size: int = 16,
    batching: str = "no-duplicates",
    cluster_of_query: dict[str, int] | None = None,
    logging_steps: int | None = None,
):
    """Fine-tune with the sentence-transformers Trainer; saves the model to ``output_dir`` and returns
    (model, log_history)."""
    if loss not in LOSSES:
        raise StageError(f"unknown loss {loss!r}; choose from {sorted(LOSSES)}")
    if batching not in BATCHINGS:
        raise StageError(f"unknown batching {batching!r}; choose from {sorted(BATCHINGS)}")
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.base.sampler import BatchSamplers
    from transformers import set_seed

    from negmine.dense import load_model

    set_seed(seed)
    model = load_model(model_name_or_path, max_seq_length, loader="sentence-transformers")  # trained: the full model
    columns = {k: v for k, v in examples.items() if k != "query_id"}
    dataset = Dataset.from_dict(columns)
    if loss == "mnrl":
        objective = losses.MultipleNegativesRankingLoss(model)
    else:
        objective = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini_batch_size)
    if batching == "tas-balanced":
        if not cluster_of_query:
            raise StageError("tas-balanced batching needs the clusters table; run `negmine cluster` first")
        missing = sorted(set(examples["query_id"]) - set(cluster_of_query))[:3]
        if missing:
            raise StageError(f"queries {missing} have no cluster; rerun `negmine cluster`")
        sampler = _tas_balanced_sampler([cluster_of_query[q] for q in examples["query_id"]], examples["anchor"])
    else:
        sampler = BatchSamplers.NO_DUPLICATES
    output_dir = Path(output_dir)
    if logging_steps is None:  # about 50 loss points per run, at least one per step for tiny runs
        logging_steps = max(1, (epochs * -(-len(dataset) // batch_size)) // 50)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir / "checkpoints"),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=warmup_ratio,  # a float is a ratio of the total steps (Transformers v5)
        seed=seed,
        data_seed=seed,
        batch_sampler=sampler,
        logging_steps=logging_steps,
        save_strategy="epoch",
        save_total_limit=1,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=objective)
    trainer.train()
    model.save(str(output_dir / "final"))
    return model, trainer.state.log_history


def train_adore(
    model_name_or_path: str,
    queries: pa.Table,
    qrels: pa.Table,
    corpus: pa.Table,
    output_dir: str | Path,
    doc_embeddings: np.ndarray,
    k: int = 200,
    epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float = 2e-5,
    scale: float = 20.0,
    seed: int = 42,
    max_seq_length: int | None = 256,
    progress: bool = True,
):
    """ADORE: train only the query encoder against fixed ``doc_embeddings`` (row i = corpus row i).

    Returns (model, losses per step). The model saved in ``output_dir/final`` is the query encoder; pair it
    with the document embeddings it was trained against (the starting model's).
    """
    import faiss
    import torch
    from tqdm.auto import tqdm
    from transformers import set_seed

    from negmine.dense import load_model

    set_seed(seed)
    model = load_model(model_name_or_path, max_seq_length, loader="sentence-transformers")  # trained: the full model
    model.train()
    docs = torch.from_numpy(np.array(doc_embeddings, dtype=np.float32))  # a writable copy
    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(docs.numpy())
    row_of_doc = {d: i for i, d in enumerate(corpus.column("doc_id").to_pylist())}
    positives: dict[str, set[int]] = {}
    for q, d, r in zip(*(qrels.column(c).to_pylist() for c in ("query_id", "doc_id", "relevance"))):
        if r > 0 and d in row_of_doc:
            positives.setdefault(q, set()).add(row_of_doc[d])
    qids = [q for q in queries.column("query_id").to_pylist() if q in positives]
    text = dict(zip(queries.column("query_id").to_pylist(), queries.column("text").to_pylist()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    rng = np.random.default_rng(seed)
    step_losses = []
    k = min(k, docs.shape[0])
    steps = epochs * int(np.ceil(len(qids) / batch_size))
    bar = tqdm(total=steps, desc="adore", disable=None if progress else True)
    for _ in range(epochs):
        order = rng.permutation(len(qids))
        for start in range(0, len(qids), batch_size):
            batch = [qids[i] for i in order[start : start + batch_size]]
            features = model.tokenize([text[q] for q in batch])
            features = {key: value.to(model.device) if hasattr(value, "to") else value for key, value in features.items()}
            q_emb = torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1)
            _, top = index.search(q_emb.detach().cpu().numpy().astype(np.float32), k)
            all_scores = q_emb @ docs.T  # (B, N); fine for corpora that fit; the index picks the pairs
            total, weight_sum = q_emb.new_zeros(()), 0.0
            ranks = torch.arange(1, k + 1, dtype=torch.float32)
            for b, q in enumerate(batch):
                retrieved = torch.from_numpy(top[b].astype(np.int64))
                is_negative = torch.tensor([int(d) not in positives[q] for d in top[b]])
                detached = all_scores[b].detach()
                for p in sorted(positives[q]):
                    hits = (retrieved == p).nonzero()
                    r_p = float(hits[0, 0] + 1) if len(hits) else float((detached > detached[p]).sum() + 1)
                    w = (1.0 / r_p - 1.0 / ranks).abs() * is_negative
                    gap = all_scores[b, retrieved] - all_scores[b, p]
                    total = total + (w * torch.nn.functional.softplus(scale * gap)).sum()
                    weight_sum += float(w.sum())
            if weight_sum > 0:
                loss = total / weight_sum
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                step_losses.append(float(loss.detach()))
            bar.update(1)
    bar.close()
    model.eval()
    model.save(str(Path(output_dir) / "final"))
    return model, step_losses
