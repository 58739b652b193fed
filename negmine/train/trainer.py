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

Collision masking (``groups``): MNRL takes every other document of the batch as a negative of each
anchor, including documents that are positives of the anchor's query (another row's positive or hard
negative, a text duplicate, a likely false negative) and the anchor's own positive seen again in another
cell. ``MaskedMultipleNegativesRankingLoss`` (and its GradCache variant
``CachedMaskedMultipleNegativesRankingLoss``) leave those cells out of the softmax denominator,

    L_i = −log( e^{s(q_i, d_i⁺)/τ} / Σ_{j ∉ M_i} e^{s(q_i, d_j)/τ} ),

M_i from :func:`negmine.train.collisions.collision_mask`. The rows' ids reach the loss through the dataset's
``label`` column (the row index; sentence-transformers hands label columns to the loss as ``labels`` and
its NoDuplicates sampler ignores them); the id columns themselves never reach the model as texts. Both
classes are built on first use, so importing this module does not import torch.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import numpy as np
import pyarrow as pa

from negmine.errors import BadInputError, StageError
from negmine.progress import SILENT, track

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
    """Text columns anchor, positive, negative_1..n (n = num_negatives + random_negatives), and the ids
    of their cells: query_id, pos_id, neg_id_1..n (what collision masking needs; never given to the model).

    One row per (query, positive). Mined negatives come in ``neg_rank`` order; a pair with fewer mined
    negatives than ``num_negatives`` is topped up with uniform corpus documents (never a positive), as are
    the ``random_negatives`` columns. Without a negatives table, only anchor and positive are returned
    (with query_id and pos_id).
    """
    from negmine.retrieve.candidates import doc_texts
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
    columns |= {"pos_id": []} | {f"neg_id_{i + 1}": [] for i in range(width)}
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
            columns["pos_id"].append(pos)
            for i, n in enumerate(negs):
                columns[f"negative_{i + 1}"].append(text_of[n])
                columns[f"neg_id_{i + 1}"].append(n)
    if not columns["anchor"]:
        raise StageError("no training examples: no query has a positive")
    return columns


def _tas_balanced_sampler(cluster_of_row: list[int], anchor_of_row: list[str]):
    """A sentence-transformers batch sampler factory drawing each batch from one query cluster.

    Returned as a ``functools.partial`` of a module-level class so the Trainer can pickle its arguments.
    """
    import functools

    from negmine.train.tas_sampler import TASBalancedBatchSampler

    return functools.partial(TASBalancedBatchSampler, cluster_of_row=list(cluster_of_row), anchor_of_row=list(anchor_of_row))


MASKED_LOSSES = {"mnrl": "MaskedMultipleNegativesRankingLoss", "cached-mnrl": "CachedMaskedMultipleNegativesRankingLoss"}


def __getattr__(name: str):
    """The masked loss classes, built on first access (they subclass torch modules)."""
    if name in MASKED_LOSSES.values():
        return _masked_losses()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _masked_losses() -> dict[str, type]:
    import torch
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss, MultipleNegativesRankingLoss
    from sentence_transformers.util import cos_sim

    from negmine.train.collisions import collision_mask

    class _Collisions:
        """Per-row ids of the training examples and the groups; turns a batch's ``labels`` (row indices)
        into the mask M, and counts the cells it masked in ``masked_in_batch``."""

        def _set_rows(self, row_query, row_doc_ids, groups) -> None:
            self.row_query = list(row_query)
            self.row_doc_ids = [tuple(ids) for ids in row_doc_ids]
            self.groups = groups
            self.masked_in_batch = 0

        def batch_mask(self, labels, n_columns: int, device) -> torch.Tensor:
            if labels is None:
                raise ValueError(f"{type(self).__name__} needs each row's index in the dataset's 'label' column")
            rows = [int(r) for r in labels.tolist()]
            if any(len(self.row_doc_ids[r]) != n_columns for r in rows):
                raise ValueError(f"the batch has {n_columns} document columns; the rows' ids have {len(self.row_doc_ids[rows[0]])}")
            mask = collision_mask([self.row_query[r] for r in rows], [[self.row_doc_ids[r][c] for r in rows] for c in range(n_columns)], self.groups)
            self.masked_in_batch += int(mask.sum())
            return torch.from_numpy(mask).to(device)

    def row_losses(queries, docs_all, own_columns, mask, scale, similarity_fct):
        """−log softmax of each row's own positive over its unmasked documents (the formula above)."""
        scores = (similarity_fct(queries, docs_all) * scale).masked_fill(mask, float("-inf"))
        positive = scores[torch.arange(len(own_columns), device=scores.device), own_columns]
        return torch.logsumexp(scores, dim=1) - positive

    class MaskedMultipleNegativesRankingLoss(_Collisions, MultipleNegativesRankingLoss):
        """MultipleNegativesRankingLoss (query_to_doc, one joint softmax) with colliding in-batch cells masked."""

        def __init__(self, model, row_query, row_doc_ids, groups, scale: float = 20.0, similarity_fct=cos_sim):
            super().__init__(model, scale=scale, similarity_fct=similarity_fct)
            self._set_rows(row_query, row_doc_ids, groups)

        def compute_loss_from_embeddings(self, embeddings, labels):
            queries, docs = embeddings[0], embeddings[1:]
            mask = self.batch_mask(labels, len(docs), queries.device)
            own = torch.arange(len(queries), device=queries.device)
            return row_losses(queries, torch.cat(docs), own, mask, self.scale, self.similarity_fct).mean()

    class CachedMaskedMultipleNegativesRankingLoss(_Collisions, CachedMultipleNegativesRankingLoss):
        """The GradCache variant (Gao et al., RepL4NLP 2021): the same loss, computed in mini-batches of rows."""

        def __init__(self, model, row_query, row_doc_ids, groups, scale: float = 20.0, similarity_fct=cos_sim, mini_batch_size: int = 32):
            super().__init__(model, scale=scale, similarity_fct=similarity_fct, mini_batch_size=mini_batch_size)
            self._set_rows(row_query, row_doc_ids, groups)

        def calculate_loss(self, reps, labels=None, *, with_backward: bool = False):
            queries = torch.cat(reps[0])
            docs_all = torch.cat([torch.cat(r) for r in reps[1:]])
            mask = self.batch_mask(labels, len(reps) - 1, queries.device)
            batch_size, losses = len(queries), []
            for begin in range(0, batch_size, self.mini_batch_size):
                end = min(begin + self.mini_batch_size, batch_size)
                own = torch.arange(begin, end, device=queries.device)
                chunk = row_losses(queries[begin:end], docs_all, own, mask[begin:end], self.scale, self.similarity_fct).sum() / batch_size
                if with_backward:
                    chunk.backward()
                    chunk = chunk.detach()
                losses.append(chunk)
            return sum(losses)

    classes = {cls.__name__: cls for cls in (MaskedMultipleNegativesRankingLoss, CachedMaskedMultipleNegativesRankingLoss)}
    for name, cls in classes.items():
        cls.__qualname__ = name  # picklable as negmine.train.trainer.<name> (module __getattr__)
    return classes


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
    groups: dict[str, set[str]] | None = None,
):
    """Fine-tune with the sentence-transformers Trainer; saves the model to ``output_dir`` and returns
    (model, log_history).

    With ``groups`` (query id → doc ids never to be its negative, :func:`negmine.train.collisions.positive_groups`)
    the loss is the masked one, reading the rows' ids from ``examples`` (query_id, pos_id, neg_id_k); the
    log history then ends with ``{"masked_in_batch": cells masked over the run, "step": ...}``.
    """
    if loss not in LOSSES:
        raise BadInputError("--loss", f"unknown value {loss!r}; choose from {sorted(LOSSES)}")
    if batching not in BATCHINGS:
        raise BadInputError("--batching", f"unknown value {batching!r}; choose from {sorted(BATCHINGS)}")
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.base.sampler import BatchSamplers
    from transformers import set_seed

    from negmine.retrieve.models import load_model

    set_seed(seed)
    model = load_model(model_name_or_path, max_seq_length, loader="sentence-transformers")  # trained: the full model
    texts = [k for k in examples if k in ("anchor", "positive") or k.startswith("negative_")]
    columns = {k: examples[k] for k in texts}
    if groups is not None:
        id_columns = ["query_id", "pos_id"] + [f"neg_id_{k.removeprefix('negative_')}" for k in texts[2:]]
        missing = [k for k in id_columns if k not in examples]
        if missing:
            raise StageError(f"collision masking needs the id columns {missing} in the examples; build them with training_examples")
        columns["label"] = list(range(len(examples["anchor"])))  # the row index: the loss looks the ids up
        masked = _masked_losses()[MASKED_LOSSES[loss]]
        row_doc_ids = list(zip(*(examples[k] for k in id_columns[1:])))
        extra = {"mini_batch_size": mini_batch_size} if loss == "cached-mnrl" else {}
        objective = masked(model, examples["query_id"], row_doc_ids, groups, **extra)
    elif loss == "mnrl":
        objective = losses.MultipleNegativesRankingLoss(model)
    else:
        objective = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini_batch_size)
    dataset = Dataset.from_dict(columns)
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
        disable_tqdm=True,  # steps are shown through negmine.progress, when something listens
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=objective)
    _show_steps(trainer)
    trainer.train()
    model.save(str(output_dir / "final"))
    history = list(trainer.state.log_history)
    if groups is not None:
        history.append({"masked_in_batch": objective.masked_in_batch, "step": trainer.state.global_step})
    return model, history


def _show_steps(trainer) -> None:
    """The trainer's steps as negmine progress, in place of its own bar and of the log lines it prints on stdout."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)

    class Steps(TrainerCallback):
        def __init__(self):
            self.step = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.step = track(state.max_steps, "steps")
            self.bar = self.step.__enter__()

        def on_step_end(self, args, state, control, **kwargs):
            self.bar.update_to(state.global_step)

        def on_train_end(self, args, state, control, **kwargs):
            if self.step is not None:
                self.step.__exit__(None, None, None)
                self.step = None

    trainer.add_callback(Steps())


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
    """ADORE: train only the query encoder against fixed ``doc_embeddings`` (row i = corpus row i);
    its steps are shown through negmine.progress unless ``progress`` is False.

    Returns (model, losses per step). The model saved in ``output_dir/final`` is the query encoder; pair it
    with the document embeddings it was trained against (the starting model's).
    """
    import faiss
    import torch
    from transformers import set_seed

    from negmine.retrieve.models import load_model

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
    with track(steps, "steps") if progress else contextlib.nullcontext(SILENT) as bar:
        _adore_steps(model, index, docs, positives, qids, text, optimizer, rng, step_losses, k, epochs, batch_size, scale, bar)
    model.eval()
    model.save(str(Path(output_dir) / "final"))
    return model, step_losses


def _adore_steps(model, index, docs, positives, qids, text, optimizer, rng, step_losses, k, epochs, batch_size, scale, bar) -> None:
    import torch

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
            bar.advance(1)
