"""--engine ray against the local engine on a slice of sample_data, on a local 2-CPU Ray cluster.

The two engines must write the same bytes: corpus embeddings, dense candidates and positive scores,
teacher scores, and the negatives sampled from them. Small chunks, query batches and shards make
the Ray engine really split the work (several encode parts, several faiss shards, several teacher
parts) on a corpus small enough for CI.
"""

import json
import shutil
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from negmine.cli import app
from negmine.errors import BadInputError, StageError
from negmine.rundir import Run
from negmine.runners.dense import dense_stage
from negmine.runners.ingest import ingest_stage
from negmine.runners.rescore import rescore_stage
from negmine.runners.sample import sample_stage

from conftest import SAMPLE

DOCS, QUERIES = 64, 16
# 4 corpus parts, 2 query parts, 3 faiss shards, 1 + 4 teacher parts
DENSE = {"k": 20, "max_seq_length": 64, "chunk_size": 16, "query_batch": 8}
SHARD_SIZE = 24
RESCORE = {"max_length": 64, "chunk_size": 16}
OUTPUTS = [
    "embeddings/corpus.npy",
    "candidates_dense.parquet",
    "positive_scores_dense.parquet",
    "scored_candidates_dense.parquet",
    "scored_positives_dense.parquet",
    "negatives_simans.parquet",
]


@pytest.fixture(scope="module")
def sample_slice(tmp_path_factory):
    """The first QUERIES train queries of sample_data, their positives, and other documents up to DOCS."""
    out = tmp_path_factory.mktemp("slice")
    (out / "qrels").mkdir()
    qrels = [line.split("\t") for line in (SAMPLE / "qrels" / "train.tsv").read_text().splitlines()[1:]]
    qids = list(dict.fromkeys(q for q, _, _ in qrels))[:QUERIES]
    positives = {d for q, d, _ in qrels if q in qids}
    docs = [json.loads(line) for line in (SAMPLE / "corpus.jsonl").read_text().splitlines()]
    chosen = [d for d in docs if d["_id"] in positives]
    chosen += [d for d in docs if d["_id"] not in positives][: DOCS - len(chosen)]
    (out / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in chosen))
    queries = [json.loads(line) for line in (SAMPLE / "queries.jsonl").read_text().splitlines()]
    (out / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries if q["_id"] in qids))
    (out / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join("\t".join(r) + "\n" for r in qrels if r[0] in qids))
    return out


def _mine(root, data, model_path, engine):
    run = Run.open(root / engine)
    ingest_stage(run, data)
    dense_stage(run, model_path, engine=engine, **DENSE, **({"shard_size": SHARD_SIZE} if engine == "ray" else {}))
    rescore_stage(run, f"bi-encoder:{model_path}", engine=engine, **RESCORE)
    sample_stage(run, "simans", num_negatives=3)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory, sample_slice, model_path, ray_cluster):
    root = tmp_path_factory.mktemp("runs")
    return _mine(root, sample_slice, model_path, "local"), _mine(root, sample_slice, model_path, "ray")


@pytest.mark.slow
@pytest.mark.parametrize("name", OUTPUTS)
def test_ray_engine_writes_the_local_engines_bytes(runs, name):
    local, distributed = runs
    assert (local.file(name)).read_bytes() == (distributed.file(name)).read_bytes()
    if name.endswith(".parquet"):
        assert pq.read_table(local.file(name)).equals(pq.read_table(distributed.file(name)))
    else:
        assert np.array_equal(np.load(local.file(name)), np.load(distributed.file(name)))


@pytest.mark.slow
def test_the_slice_exercises_what_identity_is_about(runs):
    local, distributed = runs
    stages = json.loads(distributed.file("manifest.json").read_text())["stages"]
    assert all(stages[s]["stats"]["engine"] == "ray" for s in ("embed", "dense", "rescore.dense"))
    # 4 corpus parts and 1 + 4 teacher parts on a 2-CPU cluster: one actor per CPU
    assert stages["embed"]["stats"]["actors"] == 2 and stages["rescore.dense"]["stats"]["actors"] == 2
    assert stages["embed"]["stats"]["documents"] == DOCS and stages["dense"]["stats"]["queries"] == QUERIES
    assert "engine" not in json.loads(local.file("manifest.json").read_text())["stages"]["dense"]["stats"]
    # every query has its k candidates, and the negatives table is not trivially empty
    assert pq.read_table(distributed.file("candidates_dense.parquet")).num_rows == QUERIES * DENSE["k"]
    assert pq.read_table(distributed.file("negatives_simans.parquet")).num_rows > 0


@pytest.mark.slow
def test_engine_is_not_in_the_config_so_either_engine_reuses_the_others_outputs(runs, model_path):
    local, distributed = runs
    configs = [{s: e["config"] for s, e in json.loads(r.file("manifest.json").read_text())["stages"].items()} for r in runs]
    assert configs[0] == configs[1]
    for run, other in ((local, "ray"), (distributed, "local")):
        before = run.file("manifest.json").read_bytes()
        dense = dense_stage(run, model_path, engine=other, **DENSE)
        rescore = rescore_stage(run, f"bi-encoder:{model_path}", engine=other, **RESCORE)
        assert [r.skipped for r in dense + [rescore]] == [True, True, True]
        assert run.file("manifest.json").read_bytes() == before


@pytest.mark.slow
def test_ray_actors_caps_the_pool_and_leaves_the_bytes_alone(runs, tmp_path, sample_slice, model_path):
    local, _ = runs
    run = Run.open(tmp_path / "run")
    ingest_stage(run, sample_slice)
    dense_stage(run, model_path, engine="ray", ray_actors=1, shard_size=SHARD_SIZE, **DENSE)
    assert json.loads(run.file("manifest.json").read_text())["stages"]["embed"]["stats"]["actors"] == 1
    for name in ("embeddings/corpus.npy", "candidates_dense.parquet", "positive_scores_dense.parquet"):
        assert run.file(name).read_bytes() == local.file(name).read_bytes(), name


@pytest.mark.slow
def test_an_interrupted_encode_resumes_on_ray_from_the_kept_chunks(runs, tmp_path, sample_slice, model_path, monkeypatch):
    """Chunks kept by an interrupted local encode (the same bytes either engine writes) are read, not sent out again."""
    import negmine.retrieve.embed
    from negmine.runners.dense import embed_stage

    local, _ = runs
    run = Run.open(tmp_path / "run")
    ingest_stage(run, sample_slice)
    real_encode, calls = negmine.retrieve.encode.encode, []

    def failing(model, texts, batch_size=64, prompt_name=None, prompt=None):
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the third of four chunks
        calls.append(len(texts))
        return real_encode(model, texts, batch_size, prompt_name, prompt)

    monkeypatch.setattr(negmine.retrieve.embed, "encode", failing)
    settings = {"max_seq_length": DENSE["max_seq_length"], "chunk_size": DENSE["chunk_size"]}
    with pytest.raises(KeyboardInterrupt):
        embed_stage(run, model_path, **settings)
    monkeypatch.setattr(negmine.retrieve.embed, "encode", real_encode)
    (parts,) = run.file("embeddings").glob(".corpus.parts-*")
    assert sorted(p.name for p in parts.iterdir()) == ["000000.npy", "000001.npy"]
    stats = embed_stage(run, model_path, engine="ray", ray_actors=1, **settings).entry["stats"]
    assert stats["documents_resumed"] == 2 * DENSE["chunk_size"] and stats["engine"] == "ray"
    assert run.file("embeddings/corpus.npy").read_bytes() == local.file("embeddings/corpus.npy").read_bytes()
    assert not list(run.file("embeddings").glob(".corpus.parts-*"))



@pytest.mark.slow
def test_the_pool_reads_its_items_as_actors_free_up(ray_cluster, model_path):
    """ModelPool.map takes a generator and keeps IN_FLIGHT items per actor ahead of the results taken
    (the driver holds a window of chunk texts, not the corpus's); results come in the items' order."""
    from negmine.retrieve.encode import encode
    from negmine.retrieve.models import load_model
    from negmine.engines.ray import IN_FLIGHT, encoder_pool

    parts = [[f"document {i} about topic {i % 3}", f"another text {i}"] for i in range(7)]
    taken = []

    def items():
        for i, part in enumerate(parts):
            taken.append(i)
            yield part, None

    pool = encoder_pool(model_path, 32, max_actors=1)
    try:
        results = pool.map("encode", items(), 8, count=len(parts))
        first = next(results)
        assert len(taken) == IN_FLIGHT + 1  # the window, refilled once
        got = [first, *results]
    finally:
        pool.close()
    assert taken == list(range(7))
    model = load_model(model_path, 32)
    for part, block in zip(parts, got, strict=True):
        assert block.tobytes() == encode(model, part, 8).tobytes()

@pytest.mark.slow
def test_cross_encoder_parts_on_ray_actors_score_like_the_local_teacher(runs, tmp_path, model_path):
    """The real CrossEncoder code path (MiniLM weights, fresh 1-label head) in 3 parts of pairs."""
    import torch
    from sentence_transformers import CrossEncoder

    from negmine.engines import ray as engine_ray
    from negmine.io import read_table
    from negmine.rescore import load_teacher, rescore
    from negmine.schemas import CANDIDATES, CORPUS, POSITIVE_SCORES, QUERIES

    torch.manual_seed(0)
    CrossEncoder(model_path, num_labels=1, max_length=64).save(str(tmp_path / "ce"))
    run = runs[0]
    candidates = read_table(run.file("candidates_dense.parquet"), CANDIDATES).slice(0, 40)
    positives = read_table(run.file("positive_scores_dense.parquet"), POSITIVE_SCORES).slice(0, 3)
    tables = candidates, positives, read_table(run.file("corpus.parquet"), CORPUS), read_table(run.file("queries.parquet"), QUERIES)
    spec = f"cross-encoder:{tmp_path / 'ce'}"
    local = rescore(*tables, load_teacher(spec, 64), batch_size=8, chunk_size=16)
    teacher = engine_ray.RayTeacher(spec, 64, max_actors=1)  # one actor start: the fixture's runs already spread parts over two
    try:
        distributed = rescore(*tables, teacher, batch_size=8, chunk_size=16)
    finally:
        teacher.close()
    assert distributed[0].equals(local[0]) and distributed[1].equals(local[1])
    assert len(set(local[0]["ce_score"].to_pylist())) > 1  # a real head, not a constant


def test_sharded_search_breaks_ties_like_one_index(ray_cluster):
    """Duplicate documents tie exactly, also across the top-k cut-off: the Ray engine's shards merged
    must give what the local engine's single index gives (score descending, then corpus row)."""
    from negmine.engines import ray as engine_ray
    from negmine.retrieve.search import dense_candidates

    rng = np.random.default_rng(7)
    base = rng.standard_normal((10, 8)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    doc_vectors = base[rng.integers(0, 10, 60)]  # 60 documents, 10 distinct vectors: every score is a 6-way tie
    query_vectors = np.concatenate([base[:5], rng.standard_normal((25, 8)).astype(np.float32)])
    query_vectors /= np.linalg.norm(query_vectors, axis=1, keepdims=True)

    class Model:  # stands in for the bi-encoder: query text i encodes to query_vectors[i]
        def encode(self, texts, **_):
            return query_vectors[[int(t) for t in texts]]

    class Encoders:  # stands in for the Ray actor pool, same contract as engine_ray.ModelPool
        address = None

        def map(self, method, parts, batch_size):
            return (Model().encode(texts) for texts, _ in parts)  # (texts, prompt) items

        def release(self):
            pass

    corpus = pa.table({"doc_id": [f"d{i:02d}" for i in range(60)], "title": [None] * 60, "text": ["x"] * 60})
    queries = pa.table({"query_id": [f"q{i}" for i in range(30)], "text": [str(i) for i in range(30)]})
    qrels = pa.table({"query_id": ["q0"], "doc_id": ["d00"], "relevance": pa.array([1], pa.int32())})
    emb = doc_vectors.astype(np.float16)
    for k in (3, 7, 20):
        local = dense_candidates(corpus, queries, qrels, emb, Model(), k=k, query_batch=20)
        for shard_size in (7, 16, 60):
            ours = engine_ray.dense_candidates(corpus, queries, qrels, emb, Encoders(), k=k, query_batch=20, shard_size=shard_size)
            assert ours[0].equals(local[0]) and ours[1].equals(local[1]), (k, shard_size)
        # the order is by score, then corpus row, computed independently here
        scores = query_vectors @ emb.astype(np.float32).T
        got = local[0].filter(pc.equal(local[0]["query_id"], "q1"))
        rows = [int(d[1:]) for d in got["doc_id"].to_pylist()]
        assert rows == sorted(range(60), key=lambda r: (-scores[1, r], r))[:k]


def test_bad_input_inside_a_ray_actor_reaches_the_driver_as_itself(tmp_path, ray_cluster):
    from negmine.engines import ray as engine_ray

    missing = str(tmp_path / "missing-model")
    with pytest.raises(BadInputError, match="model path does not exist"):
        engine_ray.encoder_pool(missing, 64)  # checked on the driver, before any actor starts
    pool = engine_ray.ModelPool("encoder", missing, 64)  # skips that check: the actor's load raises it
    try:
        with pytest.raises(BadInputError, match="model path does not exist") as raised:
            list(pool.map("encode", [(["some text"], None)], 8))
    finally:
        pool.close()
    assert type(raised.value) is BadInputError and raised.value.path == missing and raised.value.exit_code == 2


def test_cli_engine_options(tmp_path):
    runner = CliRunner()
    for command in ("dense", "rescore", "mine"):
        result = runner.invoke(app, [command, "--help"])
        assert all(option in result.output for option in ("--engine", "--ray-address", "--ray-actors")), command
    run_dir = tmp_path / "run"
    shutil.copytree(SAMPLE, tmp_path / "data")
    result = runner.invoke(app, ["mine", "--data", str(tmp_path / "data"), "--out", str(run_dir), "--engine", "spark"])
    assert result.exit_code == 2
    assert "--engine: unknown value 'spark'; choose from ['local', 'ray']" in result.stderr
    assert not run_dir.joinpath("candidates_dense.parquet").exists()
    result = runner.invoke(app, ["mine", "--data", str(tmp_path / "data"), "--out", str(run_dir), "--engine", "ray", "--ray-actors", "0"])
    assert result.exit_code == 2 and "--ray-actors" in result.stderr
    assert not run_dir.joinpath("candidates_dense.parquet").exists()


def test_a_pool_of_no_actors_is_refused_before_ray_starts():
    from negmine.engines import ray as engine_ray

    with pytest.raises(StageError, match="at least 1 actor, got 0"):
        engine_ray.RayTeacher("cross-encoder:m", max_actors=0)


def test_without_ray_installed_the_error_names_the_extra(monkeypatch):
    from negmine.engines import ray as engine_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(StageError, match=r"--engine ray needs Ray: pip install 'negmine\[ray\]'"):
        engine_ray.connect()
