"""negmine's BERT forward pass (negmine.retrieve.bert) as an OpenVINO graph: exported once, run on every core.

Export: the forward pass is converted with ``openvino.convert_model`` from negmine's own torch code
(so neither optimum nor an ONNX toolchain is needed, and transformers stays as sentence-transformers
wants it), its float32 weights kept as they are, and saved under the cache folder
(negmine.retrieve.backends.cache_root) in a folder named by the sha256 of the weights and the config,
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
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np

from negmine.errors import StageError
from negmine.retrieve.backends import cache_root

# bump when the exported graph changes (its inputs, outputs or operations): older exports are then not read
EXPORT_FORMAT = 1
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PRECISION_HINTS = {"float32": "f32", "bfloat16": "bf16"}
QUEUED_BATCHES = 3  # batches queued at once by run_batches (the one waited for and those behind it)


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def export_key(weights: Path, config: dict) -> str:
    """The exported graph's folder name: the weights' and config's hashes, the OpenVINO version, the export format."""
    import openvino

    stat = weights.stat()
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    return "-".join([
        _file_sha256(str(weights), stat.st_size, stat.st_mtime_ns)[:16], config_hash[:8], f"ov{openvino.__version__.split('-')[0]}", f"f{EXPORT_FORMAT}",
    ])


def exported_graph(weights: Path, config: dict) -> Path:
    """The saved graph (``model.xml``) of the BERT checkpoint ``weights``: read from the cache, or exported
    and saved there first (written to a temporary folder and renamed into place, so a concurrent or
    interrupted export never leaves a partial one)."""
    folder = cache_root() / "openvino" / export_key(weights, config)
    graph = folder / "model.xml"
    if graph.exists() and (folder / "model.bin").exists():
        return graph
    import openvino
    import torch

    from negmine.retrieve import bert

    model = bert.load(weights, config, None)
    if model is None:
        raise StageError(f"{weights} lacks weights the BERT forward pass needs")

    class Traceable(torch.nn.Module):
        """The forward pass with the padding mask always applied, so the traced graph takes padded and unpadded batches alike."""

        def forward(self, input_ids, attention_mask, token_type_ids):
            return model(input_ids, attention_mask, token_type_ids, always_mask=True)

    example = {
        "input_ids": torch.ones((2, 8), dtype=torch.long),
        "attention_mask": torch.tensor([[1] * 8, [1] * 5 + [0] * 3], dtype=torch.long),
        "token_type_ids": torch.zeros((2, 8), dtype=torch.long),
    }
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    except OSError as exc:
        raise StageError(f"cannot write the exported encoder under {folder.parent}: {exc}") from None
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # the converter traces with TorchScript, which torch now marks deprecated on every call
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
            converted = openvino.convert_model(
                Traceable(), example_input=tuple(example[name] for name in INPUTS),
                input=[(name, [-1, -1], openvino.Type.i64) for name in INPUTS],
            )
        openvino.save_model(converted, tmp / "model.xml", compress_to_fp16=False)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process saved it first: theirs is the same graph
            if not graph.exists():
                raise
    except OSError as exc:
        raise StageError(f"cannot write the exported encoder to {folder}: {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return graph


def streams(threads: int | None = None) -> int:
    """Streams (one thread each) the encoder runs: ``threads``, else one per thread torch would use
    (negmine.retrieve.device.cpu_threads), found without importing torch."""
    from negmine.retrieve.device import cpu_threads

    return max(1, int(threads or cpu_threads()))


class OpenVINOBert:
    """``model(input_ids, attention_mask, token_type_ids)`` → the last hidden states (batch × length ×
    hidden, float32), as :class:`negmine.retrieve.bert.Bert` returns them, computed by OpenVINO in ``precision``."""

    def __init__(self, weights: Path, config: dict, precision: str = "float32", threads: int | None = None):
        import openvino

        self.graph = exported_graph(Path(weights), config)
        self.precision = precision
        self.streams = streams(threads)
        core = openvino.Core()
        self.compiled = core.compile_model(core.read_model(self.graph), "CPU", {
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
            "NUM_STREAMS": str(self.streams),
            "INFERENCE_NUM_THREADS": str(self.streams),
            "PERFORMANCE_HINT": "THROUGHPUT",
        })
        # requests for the slices of QUEUED_BATCHES batches: the streams take the next as soon as one finishes
        self.queue = openvino.AsyncInferQueue(self.compiled, self.streams * QUEUED_BATCHES)
        self.queue.set_callback(self._collect)
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
            inputs = {name: np.asarray(features[name], dtype=np.int64) if name in features else None for name in INPUTS}
            ids = inputs["input_ids"]
            mask = inputs["attention_mask"] if inputs["attention_mask"] is not None else np.ones_like(ids)
            types = inputs["token_type_ids"] if inputs["token_type_ids"] is not None else np.zeros_like(ids)
            slices = self._slices(len(ids))
            for i, (start, end) in enumerate(slices):
                self.queue.start_async({"input_ids": ids[start:end], "attention_mask": mask[start:end], "token_type_ids": types[start:end]}, userdata=(n, i))
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

    def to(self, *args, **kwargs) -> OpenVINOBert:
        return self  # the precision is the compiled graph's

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None):
        """The torch call of negmine.retrieve.bert.Bert (tensors in, a float32 tensor out), for one batch."""
        import torch

        features = {name: t.numpy() for name, t in zip(INPUTS, (input_ids, attention_mask, token_type_ids)) if t is not None}
        _, hidden, _ = next(self.run_batches([(None, features)]))
        return torch.from_numpy(hidden)
