"""The model's tokenizer run by `tokenizers` alone, from the pipeline transformers' AutoTokenizer built: the same tokens."""

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE
from transformers import AutoTokenizer

from negmine.ingest import ingest
from negmine.retrieve.candidates import doc_texts
from negmine.retrieve.device import cpu_threads
from negmine.retrieve.encoder import Tokenized, fetcher
from negmine.retrieve.tokenizer import (
    JsonTokenizer,
    cache_root_tokenizers,
    capturable,
    load_tokenizer,
    tokenizer_key,
)

EDGE = ["", "a", "Ünïcödé ÀÉÎ café naïve", "漢字とかな mixed 中文", "tabs\tand\nnew lines  ", "[CLS] [SEP] [PAD] <s> </s> <mask> literal",
        "protein " * 400, "x" * 3000]
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


@pytest.fixture(scope="module")
def texts():
    return doc_texts(ingest(SAMPLE).corpus) + EDGE


def load(path: str, max_length=256):
    return load_tokenizer(path, fetcher(path), max_length, 512)


def copy_with(model_path: str, where: Path, **config) -> str:
    """The model's tokenizer files, with tokenizer_config.json changed."""
    where.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "config.json"):
        shutil.copy(Path(model_path) / name, where / name)
    data = json.loads((where / "tokenizer_config.json").read_text())
    data.update(config)
    (where / "tokenizer_config.json").write_text(json.dumps(data))
    return str(where)


def trained(kind: str, texts: list[str], where: Path) -> str:
    """A small tokenizer of another family, trained on ``texts`` and saved by its transformers class: RoBERTa's
    byte-level BPE, XLM-RoBERTa's Unigram (SentencePiece), or MPNet's WordPiece (with MiniLM's vocabulary)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import MPNetTokenizer, RobertaTokenizer, XLMRobertaTokenizer

    if kind == "roberta":
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        model = json.loads(bpe.to_str())["model"]
        tokenizer = RobertaTokenizer(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]])
    elif kind == "xlm-roberta":
        unigram = Tokenizer(models.Unigram())
        unigram.pre_tokenizer = pre_tokenizers.Metaspace()
        unigram.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=400, special_tokens=SPECIALS, unk_token="<unk>"))
        tokenizer = XLMRobertaTokenizer(vocab=[tuple(piece) for piece in json.loads(unigram.to_str())["model"]["vocab"]])
    else:
        tokenizer = MPNetTokenizer(vocab=AutoTokenizer.from_pretrained(kind).get_vocab())
    tokenizer.save_pretrained(where)
    return str(where)


@pytest.fixture(scope="module", params=["minilm", "minilm-cased", "minilm-accents", "minilm-left", "roberta", "xlm-roberta", "mpnet"])
def tokenizer_path(request, model_path, texts, tmp_path_factory):
    """A model folder with a tokenizer: all-MiniLM's; all-MiniLM's with a tokenizer_config.json that differs from
    its tokenizer.json (no lower-casing; accents stripped; padding and truncation on the left), which transformers
    follows; or one of another family."""
    where = tmp_path_factory.mktemp("tok") / "m"
    changes = {"minilm": None, "minilm-cased": {"do_lower_case": False}, "minilm-accents": {"strip_accents": True},
               "minilm-left": {"padding_side": "left", "truncation_side": "left"}}
    if request.param in changes:
        return model_path if changes[request.param] is None else copy_with(model_path, where, **changes[request.param])
    return trained(model_path if request.param == "mpnet" else request.param, texts[:200], where)


@pytest.mark.parametrize("max_length,multiple", [(256, 16), (32, 8)])
def test_json_tokenizer_gives_autotokenizers_batches(tokenizer_path, texts, max_length, multiple):
    ours = load(tokenizer_path, max_length)
    assert isinstance(ours, JsonTokenizer)
    theirs = AutoTokenizer.from_pretrained(tokenizer_path, model_max_length=max_length)
    for start in range(0, len(texts), 7):
        batch = texts[start : start + 7]
        a = ours(batch, padding=True, truncation="longest_first", return_tensors="np", pad_to_multiple_of=multiple)
        b = theirs(batch, padding=True, truncation="longest_first", return_tensors="np", pad_to_multiple_of=multiple)
        assert set(a) == set(b)
        for name in a:
            assert a[name].dtype == np.int64 and np.array_equal(a[name], b[name]), name
    plain = {"truncation": True, "max_length": max_length, "return_attention_mask": False, "return_token_type_ids": False}
    assert ours(texts, **plain)["input_ids"] == theirs(texts, **plain)["input_ids"]
    assert ours.model_max_length == theirs.model_max_length
    assert (ours.padding_side, ours.pad_token_id) == (theirs.padding_side, theirs.pad_token_id)


def test_the_saved_tokenizer_loads_without_transformers(model_path, tmp_path, monkeypatch):
    path = copy_with(model_path, tmp_path / "m")
    first = load(path)
    folder = cache_root_tokenizers() / tokenizer_key(fetcher(path))
    assert sorted(p.name for p in folder.iterdir()) == ["settings.json", "tokenizer.json"]
    monkeypatch.setitem(sys.modules, "transformers", None)  # importing it now fails
    again = load(path)
    assert isinstance(again, JsonTokenizer)
    assert again(EDGE, truncation=True)["input_ids"] == first(EDGE, truncation=True)["input_ids"]


@pytest.mark.parametrize("damage", ["truncated", "settings-missing"])
def test_a_damaged_saved_tokenizer_is_saved_anew(model_path, tmp_path, damage):
    path = copy_with(model_path, tmp_path / "m")
    expected = load(path)(EDGE, truncation=True)["input_ids"]
    folder = cache_root_tokenizers() / tokenizer_key(fetcher(path))
    if damage == "truncated":
        (folder / "tokenizer.json").write_text((folder / "tokenizer.json").read_text()[:1000])
    else:
        (folder / "settings.json").unlink()
    again = load(path)
    assert isinstance(again, JsonTokenizer) and again(EDGE, truncation=True)["input_ids"] == expected
    assert sorted(p.name for p in folder.iterdir()) == ["settings.json", "tokenizer.json"]  # repaired
    assert load(path)(EDGE, truncation=True)["input_ids"] == expected


def test_changed_tokenizer_files_are_saved_anew(model_path, tmp_path):
    before = tokenizer_key(fetcher(copy_with(model_path, tmp_path / "a")))
    assert tokenizer_key(fetcher(copy_with(model_path, tmp_path / "b"))) == before  # the bytes name it, not the folder
    assert tokenizer_key(fetcher(copy_with(model_path, tmp_path / "c", do_lower_case=False))) != before


def test_a_class_that_tokenises_its_own_way_is_autotokenizer_itself(model_path, tmp_path, monkeypatch):
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    assert capturable(tokenizer)

    class OwnWay(type(tokenizer)):
        def _encode_plus(self, *args, **kwargs):
            return super()._encode_plus(*args, **kwargs)

    tokenizer.__class__ = OwnWay
    assert not capturable(tokenizer)
    path = copy_with(model_path, tmp_path / "m", model_max_length=300)
    monkeypatch.setattr("negmine.retrieve.tokenizer.capturable", lambda tokenizer: False)
    theirs = load(path, None)
    assert not isinstance(theirs, JsonTokenizer) and theirs.model_max_length == 300
    assert not (cache_root_tokenizers() / tokenizer_key(fetcher(path))).exists()


def test_no_limit_is_the_tokenizers_capped_at_the_positions(model_path):
    fetch = fetcher(model_path)
    config = json.loads(Path(fetch("tokenizer_config.json")).read_text())
    assert load_tokenizer(model_path, fetch, None, 512).model_max_length == min(config["model_max_length"], 512)
    assert load_tokenizer(model_path, fetch, None, 100).model_max_length == 100


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
