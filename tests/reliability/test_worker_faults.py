"""Worker faults on the Ray engine: an actor killed (``ray.kill``, which ends its process) while the
pool is encoding the corpus or rescoring with a teacher is replaced, the parts it held are redone on
the replacement, and the outputs are byte-identical to an undisturbed run (the embeddings to the local
engine's, which the Ray engine's equal byte for byte, tests/engines/test_ray.py; the teacher's scores
to an undisturbed Ray run's). An actor that keeps dying stops the
stage with an error naming the part, after a bounded number of retries.

The kill is deterministic: it happens right after the pool's first result is taken; 8 parts on 2
actors means parts are sent to the killed actor's slot after the kill, so at least one part fails
and is redone whatever the timing (the part the actor was running when killed usually fails too).
"""

import json

import pytest
import ray

from negmine.engines import ray as engine_ray
from negmine.errors import StageError
from negmine.rundir import Run
from negmine.runners.dense import dense_stage, embed_stage
from negmine.runners.ingest import ingest_stage
from negmine.runners.rescore import rescore_stage

from helpers import small_beir, tree_hashes

DENSE = {"k": 4, "max_seq_length": 64, "chunk_size": 8, "query_batch": 8}  # 64 documents: 8 corpus parts
RESCORE = {"max_length": 64, "chunk_size": 6}  # 16 queries + their candidates' documents: 8+ teacher parts


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return small_beir(tmp_path_factory.mktemp("data"), docs=64, queries=16)


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory, data, model_path):
    run = Run.open(tmp_path_factory.mktemp("undisturbed") / "run")
    ingest_stage(run, data)
    dense_stage(run, model_path, **DENSE)
    rescore_stage(run, f"bi-encoder:{model_path}", **RESCORE)
    return run


@pytest.fixture(scope="module")
def undisturbed_ray_scores(tmp_path_factory, ray_cluster, undisturbed, model_path):
    """The teacher's scores from an undisturbed Ray run (a float32 teacher on one-CPU actors need not give
    the local engine's last bits, whose matrix products run on all the machine's threads)."""
    run = copied_inputs(undisturbed, tmp_path_factory.mktemp("undisturbed-ray") / "run")
    rescore_stage(run, f"bi-encoder:{model_path}", engine="ray", ray_actors=2, **RESCORE)
    return run


def copied_inputs(source, path):
    run = Run.open(path)
    for name in ("corpus.parquet", "queries.parquet", "qrels.parquet", "candidates_dense.parquet", "positive_scores_dense.parquet"):
        run.file(name).write_bytes(source.file(name).read_bytes())
    return run


def kill_after_first_result(monkeypatch, killed: list):
    """Every pool's first result taken, the actor in its first slot is killed (once per test)."""
    real_map = engine_ray.ModelPool.map

    def map_with_a_kill(self, method, items, batch_size, count=None):
        results = real_map(self, method, items, batch_size, count)  # starts the actors now, as map does

        def killing():
            for n, result in enumerate(results):
                if n == 0 and not killed:
                    victim = self.actors[0]
                    ray.kill(victim)  # ends the actor's process, its running part and those queued on it
                    killed.append(victim)
                yield result

        return killing()

    monkeypatch.setattr(engine_ray.ModelPool, "map", map_with_a_kill)


def stats(run, stage):
    return json.loads(run.file("manifest.json").read_text())["stages"][stage]["stats"]


@pytest.mark.slow
def test_an_actor_killed_while_encoding_is_replaced_and_the_embeddings_are_identical(ray_cluster, data, undisturbed, model_path, tmp_path, monkeypatch):
    run = Run.open(tmp_path / "run")
    ingest_stage(run, data)
    killed = []
    kill_after_first_result(monkeypatch, killed)
    settings = {"max_seq_length": DENSE["max_seq_length"], "chunk_size": DENSE["chunk_size"]}
    embed_stage(run, model_path, engine="ray", ray_actors=2, **settings)
    assert len(killed) == 1
    assert (stats(run, "embed")["actors"], stats(run, "embed").get("actors_replaced")) == (2, 1)
    assert run.file("embeddings/corpus.npy").read_bytes() == undisturbed.file("embeddings/corpus.npy").read_bytes()
    assert not list(run.file("embeddings").glob(".corpus.parts-*"))


@pytest.mark.slow
def test_an_actor_killed_while_rescoring_is_replaced_and_the_scores_are_identical(ray_cluster, undisturbed, undisturbed_ray_scores, model_path, tmp_path, monkeypatch):
    run = copied_inputs(undisturbed, tmp_path / "run")
    killed = []
    kill_after_first_result(monkeypatch, killed)
    rescore_stage(run, f"bi-encoder:{model_path}", engine="ray", ray_actors=2, **RESCORE)
    assert len(killed) == 1
    assert (stats(run, "rescore.dense")["actors"], stats(run, "rescore.dense").get("actors_replaced")) == (2, 1)
    for name in ("scored_candidates_dense.parquet", "scored_positives_dense.parquet"):
        assert run.file(name).read_bytes() == undisturbed_ray_scores.file(name).read_bytes(), name


@pytest.mark.slow
def test_an_actor_that_keeps_dying_stops_the_stage_naming_the_part(ray_cluster, data, model_path, tmp_path, monkeypatch):
    """Every replacement is killed as soon as it has loaded the model: the part fails PART_RETRIES + 1
    times, then the stage fails (exit 1) naming it; nothing is written but the chunks kept to resume."""
    run = Run.open(tmp_path / "run")
    ingest_stage(run, data)
    before = tree_hashes(run.path)
    killed = []
    kill_after_first_result(monkeypatch, killed)
    real_replace = engine_ray.ModelPool._replace

    def replace_then_kill(self, slot, dead):
        real_replace(self, slot, dead)
        ray.kill(self.actors[slot])

    monkeypatch.setattr(engine_ray.ModelPool, "_replace", replace_then_kill)
    with pytest.raises(StageError, match=rf"encoder part \d+ of 8: the Ray actor running it died {engine_ray.PART_RETRIES + 1} times") as raised:
        embed_stage(run, model_path, engine="ray", ray_actors=2, max_seq_length=DENSE["max_seq_length"], chunk_size=DENSE["chunk_size"])
    assert raised.value.exit_code == 1
    assert not run.file("embeddings/corpus.npy").exists()
    after = {k: v for k, v in tree_hashes(run.path).items() if ".corpus.parts-" not in k}
    assert after == before
