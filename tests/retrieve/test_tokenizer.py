"""The model's tokenizer.json run by `tokenizers` alone: the same tokens as transformers' AutoTokenizer, or AutoTokenizer itself."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE
from transformers import AutoTokenizer

from negmine.ingest import ingest
from negmine.retrieve.candidates import doc_texts
from negmine.retrieve.device import cpu_threads
from negmine.retrieve.encoder import Tokenized, fetcher, read_json
from negmine.retrieve.tokenizer import JsonTokenizer, load_tokenizer

EDGE = ["", "a", "Ünïcödé ÀÉÎ café naïve", "漢字とかな mixed 中文", "tabs\tand\nnew lines  ", "[CLS] [SEP] [PAD] literal", "protein " * 400, "x" * 3000]


@pytest.fixture(scope="module")
def texts():
    return doc_texts(ingest(SAMPLE).corpus) + EDGE


def load(path: str, max_length=256):
    fetch = fetcher(path)
    return load_tokenizer(path, fetch, read_json(fetch, "tokenizer_config.json"), max_length, 512)


def copy_with(model_path: str, where: Path, **config) -> str:
    """The model's tokenizer files, with tokenizer_config.json changed."""
    where.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "config.json"):
        shutil.copy(Path(model_path) / name, where / name)
    data = json.loads((where / "tokenizer_config.json").read_text())
    data.update(config)
    (where / "tokenizer_config.json").write_text(json.dumps(data))
    return str(where)


@pytest.mark.parametrize("max_length,multiple", [(256, 16), (64, None), (32, 8)])
def test_json_tokenizer_gives_autotokenizers_batches(model_path, texts, max_length, multiple):
    ours = load(model_path, max_length)
    assert isinstance(ours, JsonTokenizer)
    theirs = AutoTokenizer.from_pretrained(model_path, model_max_length=max_length)
    extra = {"pad_to_multiple_of": multiple} if multiple else {}
    for start in range(0, len(texts), 7):
        batch = texts[start : start + 7]
        a = ours(batch, padding=True, truncation="longest_first", return_tensors="np", **extra)
        b = theirs(batch, padding=True, truncation="longest_first", return_tensors="np", **extra)
        assert set(a) == set(b)
        for name in a:
            assert a[name].dtype == np.int64 and np.array_equal(a[name], b[name]), name
    plain = {"truncation": True, "max_length": max_length, "return_attention_mask": False, "return_token_type_ids": False}
    assert ours(texts, **plain)["input_ids"] == theirs(texts, **plain)["input_ids"]
    assert ours.model_max_length == theirs.model_max_length


@pytest.mark.parametrize("config", [{"do_lower_case": False}, {"strip_accents": True}, {"tokenizer_class": "RobertaTokenizer"},
                                    {"padding_side": "left"}, {"some_new_setting": 1}],
                         ids=["case-differs", "accents-differ", "other-class", "left-padding", "unknown-key"])
def test_a_config_the_file_does_not_match_goes_to_autotokenizer(model_path, tmp_path, config):
    tokenizer = load(copy_with(model_path, tmp_path / "m", **config))
    assert not isinstance(tokenizer, JsonTokenizer)


def test_no_limit_is_the_tokenizers_capped_at_the_positions(model_path, tmp_path):
    fetch = fetcher(model_path)
    config = read_json(fetch, "tokenizer_config.json")
    assert load_tokenizer(model_path, fetch, config, None, 512).model_max_length == min(config["model_max_length"], 512)
    assert load_tokenizer(model_path, fetch, config, None, 100).model_max_length == 100


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("multiple", [None, 16])
def test_tokenized_once_pads_each_batch_as_the_tokenizer_does(model_path, texts, side, multiple):
    tokenizer = AutoTokenizer.from_pretrained(model_path, model_max_length=128)
    tokenizer.padding_side = side
    tokens = Tokenized(tokenizer, texts, 128, multiple)
    rng = np.random.default_rng(0)
    for _ in range(20):
        positions = sorted(rng.choice(len(texts), size=int(rng.integers(1, 9)), replace=False).tolist())
        expected = tokenizer([texts[i] for i in positions], padding=True, truncation="longest_first", return_tensors="np",
                             **({"pad_to_multiple_of": multiple} if multiple else {}))
        got = tokens.batch(positions)
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            assert np.array_equal(got[name], expected[name]), name


def test_cpu_threads_as_torch_counts_them(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert 1 <= cpu_threads() <= len(os.sched_getaffinity(0))
