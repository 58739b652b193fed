"""An encoder's transformer as an OpenVINO graph: exported once, run on every core.

Export: the forward pass is converted with ``openvino.convert_model`` — negmine's own BERT forward pass
(negmine.retrieve.bert) for the BERT checkpoints it runs, transformers' AutoModel (eager attention) for
the other architectures in :data:`negmine.retrieve.bert_config.OPENVINO_ARCHITECTURES` — so neither
optimum nor an ONNX toolchain is needed and transformers stays as sentence-transformers wants it. The
float32 weights are kept as they are; before it is saved, the graph is run in float32 on a padded batch
of another shape than the one it was traced with and compared with torch's hidden states (an export
that differs is refused, never cached). It is saved under the cache folder
(negmine.retrieve.cache.cache_root) in a folder named by the sha256 of the weights and the config,
the OpenVINO version and :data:`EXPORT_FORMAT`. Every later run with that model reads the saved
graph; a run never re-exports. The precision is chosen when the graph is compiled (float32 or, on a
CPU with native bfloat16, bfloat16), so one export serves both.

Run: a batch is split into one slice per stream, the streams run at once, one thread each
(:func:`streams`): the graph's matrix products keep a core busy on their own, which a single stream
spread over several threads does less well on small batches. The split depends only on the batch
and the number of streams, so the same inputs give the same bytes.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import threading
import warnings
from pathlib import Path

import numpy as np

from negmine.errors import StageError
from negmine.progress import track
from negmine.retrieve.cache import cache_root, publish

# bump when the exported graph changes (its inputs, outputs or operations): older exports are then not read
EXPORT_FORMAT = 1
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PRECISION_HINTS = {"float32": "f32", "bfloat16": "bf16"}
EXPORT_STEPS = 4  # shown as progress while a graph is exported: model loaded, converted, checked, saved
QUEUED_BATCHES = 3  # batches queued at once by run_batches (the one waited for and those behind it)


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def export_key(weights: Path, config: dict) -> str:
    """The exported graph's folder name: the weights' and config's hashes, the OpenVINO version, the export
    format, and for a graph exported from transformers' AutoModel the transformers version (its modelling code)."""
    from importlib.metadata import version

    import openvino

    from negmine.retrieve.bert_config import supported

    stat = weights.stat()
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    return "-".join([
        _file_sha256(str(weights), stat.st_size, stat.st_mtime_ns)[:16], config_hash[:8], f"ov{openvino.__version__.split('-')[0]}", f"f{EXPORT_FORMAT}",
        *([] if supported(config) else [f"tf{version('transformers')}"]),
    ])


def exported_graph(weights: Path, config: dict, source: str | None = None) -> Path:
    """The saved graph (``model.xml``) of the checkpoint ``weights`` (its model folder or hub name ``source``,
    for architectures negmine's BERT does not run): read from the cache, or exported, checked and saved there
    first (written to a temporary folder and renamed into place, so a concurrent or interrupted export never
    leaves a partial one)."""
    folder = cache_root() / "openvino" / export_key(weights, config)
    graph = folder / "model.xml"
    if graph.exists() and (folder / "model.bin").exists():
        return graph
    with track(EXPORT_STEPS, "steps", "openvino export") as bar:
        _export(weights, config, source, folder, bar)
    return graph


def _export(weights: Path, config: dict, source: str | None, folder: Path, bar) -> None:
    """Load, convert, check and save (``bar`` advanced after each: :data:`EXPORT_STEPS`)."""
    import openvino
    import torch

    module, inputs = _traceable(weights, config, source)
    bar.advance()

    def fill(tmp: Path) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            # the converter traces with TorchScript, which torch now marks deprecated on every call
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            converted = openvino.convert_model(
                module, example_input=_example(inputs, (2, 8), padded=1, vocab=config["vocab_size"]),
                input=[(name, [-1, -1], openvino.Type.i64) for name in inputs],
            )
            bar.advance()
            _check(converted, module, inputs, config, weights)
            bar.advance()
        openvino.save_model(converted, tmp / "model.xml", compress_to_fp16=False)

    try:
        publish(folder, fill)
    except OSError as exc:
        raise StageError(f"cannot write the exported encoder to {folder}: {exc}") from None
    if not (folder / "model.xml").exists():  # a folder of that name was there already, without the graph
        raise StageError(f"cannot write the exported encoder to {folder}: a folder without model.xml is in the way")
    bar.advance()


def _traceable(weights: Path, config: dict, source: str | None):
    """(a torch module whose forward takes the input tensors in order and returns the last hidden states, their names)."""
    import torch

    from negmine.retrieve.bert_config import supported

    if supported(config):
        from negmine.retrieve import bert

        model = bert.load(weights, config, None)
        if model is None:
            raise StageError(f"{weights} lacks weights the BERT forward pass needs")

        class Bert(torch.nn.Module):
            """The forward pass with the padding mask always applied, so the traced graph takes padded and unpadded batches alike."""

            def forward(self, input_ids, attention_mask, token_type_ids):
                return model(input_ids, attention_mask, token_type_ids, always_mask=True)

        return Bert(), INPUTS
    import inspect

    from transformers import AutoModel

    # eager attention: its padding mask is arithmetic on the mask tensor, so the traced graph keeps it for any batch
    auto = AutoModel.from_pretrained(source or str(weights.parent), attn_implementation="eager").eval().requires_grad_(False)
    taken = inspect.signature(auto.forward).parameters
    inputs = tuple(name for name in INPUTS if name in taken)

    class Auto(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.auto = auto

        def forward(self, input_ids, attention_mask, token_type_ids=None):  # named as the graph's inputs
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            return self.auto(**{name: given[name] for name in inputs}, return_dict=True).last_hidden_state

    return Auto(), inputs


def _example(inputs: tuple[str, ...], shape: tuple[int, int], padded: int, vocab: int) -> tuple:
    """Input tensors of ``shape`` (token ids from 1000 up, below ``vocab``), the last ``padded`` rows padded from half their length."""
    import torch

    rows, length = shape
    generator = torch.Generator().manual_seed(0)
    tensors = {
        "input_ids": torch.randint(min(1000, vocab - 1), vocab, shape, generator=generator),
        "attention_mask": torch.ones(shape, dtype=torch.long),
        "token_type_ids": torch.zeros(shape, dtype=torch.long),
    }
    tensors["attention_mask"][rows - padded:, length // 2:] = 0
    return tuple(tensors[name] for name in inputs)


def _check(converted, module, inputs: tuple[str, ...], config: dict, weights: Path) -> None:
    """Refuse a graph whose float32 hidden states differ from torch's on a batch of another shape (the tokens that are not padding)."""
    import openvino

    example = _example(inputs, (3, 13), padded=2, vocab=config["vocab_size"])
    expected = module(*example).numpy()
    compiled = openvino.Core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled(dict(zip(inputs, (t.numpy() for t in example))))[0]
    keep = example[inputs.index("attention_mask")].numpy().astype(bool)
    scale = float(np.abs(expected[keep]).max()) or 1.0
    if got.shape != expected.shape or not np.allclose(got[keep], expected[keep], rtol=0, atol=1e-4 * scale):
        raise StageError(f"OpenVINO's graph of {weights.parent} does not compute what torch computes; use --backend torch")


def streams(threads: int | None = None) -> int:
    """Streams (one thread each) the encoder runs: ``threads``, else one per thread torch would use
    (negmine.retrieve.device.cpu_threads), found without importing torch."""
    from negmine.retrieve.device import cpu_threads

    return max(1, int(threads or cpu_threads()))


def compile_properties(precision: str, streams: int) -> dict[str, str]:
    """The CPU plugin's properties the encoder compiles its graph with: ``precision``, ``streams`` streams of one thread each."""
    return {
        "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
        "NUM_STREAMS": str(streams),
        "INFERENCE_NUM_THREADS": str(streams),
        "PERFORMANCE_HINT": "THROUGHPUT",
    }


class OpenVINOEncoder:
    """``model(input_ids, attention_mask, token_type_ids)`` → the last hidden states (batch × length ×
    hidden, float32), as :class:`negmine.retrieve.bert.Bert` returns them, computed by OpenVINO in ``precision``."""

    def __init__(self, weights: Path, config: dict, precision: str = "float32", threads: int | None = None, source: str | None = None):
        """``source``: the model's folder or hub name (the architectures negmine's BERT does not run are exported from it)."""
        import openvino

        self.graph = exported_graph(Path(weights), config, source)
        self.precision = precision
        self.streams = streams(threads)
        core = openvino.Core()
        self.compiled = core.compile_model(core.read_model(self.graph), "CPU", compile_properties(precision, self.streams))
        # requests for the slices of QUEUED_BATCHES batches: the streams take the next as soon as one finishes
        self.queue = openvino.AsyncInferQueue(self.compiled, self.streams * QUEUED_BATCHES)
        self.queue.set_callback(self._collect)
        self.inputs = [name for name in INPUTS if any(name in port.get_names() for port in self.compiled.inputs)]
        self._done = threading.Condition()
        self._parts: dict[int, np.ndarray] = {}

    def _collect(self, request, key) -> None:
        part = request.get_output_tensor(0).data.copy()
        with self._done:
            self._parts[key] = part
            self._done.notify_all()

    def _slices(self, rows: int) -> list[tuple[int, int]]:
        """The rows of a batch each stream runs: the batch cut into (at most) one slice per stream."""
        bounds = np.linspace(0, rows, min(self.streams, rows) + 1).astype(int)
        return list(itertools.pairwise(bounds))

    def run_batches(self, tokenized, ahead: int = QUEUED_BATCHES - 1):
        """``(batch, hidden states, attention mask)`` for each ``(batch, tokenizer features)`` of ``tokenized``,
        in order: each batch's slices are queued on the streams as soon as it is tokenised, with up to ``ahead``
        batches queued behind the one being waited for, so the streams do not wait for Python in between."""
        pending: list = []  # (batch, mask, number of slices, key) in submission order
        self._parts = {}
        for n, (batch, features) in enumerate(tokenized):
            ids = np.asarray(features["input_ids"], dtype=np.int64)
            given = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}  # absent: all ones, all zeros
            given.update({name: np.asarray(features[name], dtype=np.int64) for name in INPUTS[1:] if name in features})
            mask = given["attention_mask"]
            slices = self._slices(len(ids))
            for i, (start, end) in enumerate(slices):
                self.queue.start_async({name: given[name][start:end] for name in self.inputs}, userdata=(n, i))
            pending.append((batch, mask, len(slices), n))
            while len(pending) > ahead:
                yield self._finished(pending.pop(0))
        self.queue.wait_all()
        for item in pending:
            yield self._finished(item)

    def _finished(self, item):
        batch, mask, count, n = item
        with self._done:
            self._done.wait_for(lambda: all((n, i) in self._parts for i in range(count)))
            hidden = np.concatenate([self._parts.pop((n, i)) for i in range(count)])
        return batch, hidden, mask

    def parameters(self):
        import torch

        # the outputs are float32 whatever the precision the graph computes in
        return iter([torch.zeros(1)])

    def to(self, *args, **kwargs) -> OpenVINOEncoder:
        return self  # the precision is the compiled graph's

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None):
        """The torch call of negmine.retrieve.bert.Bert (tensors in, a float32 tensor out), for one batch."""
        import torch

        features = {name: t.numpy() for name, t in zip(INPUTS, (input_ids, attention_mask, token_type_ids)) if t is not None}
        _, hidden, _ = next(self.run_batches([(None, features)]))
        return torch.from_numpy(hidden)
