"""negmine: offline hard-negative mining for training dense retrievers.

    import negmine

    result = negmine.mine("sample_data", "runs/x", model="sentence-transformers/all-MiniLM-L6-v2")
    result.polars("negatives_simans").head().collect()

Importing the package is cheap: the API (negmine.api) loads when first used, and heavy libraries
(torch, sentence-transformers, faiss, pyserini) only inside the stages that need them.
"""

__version__ = "0.1.0"

_LAZY = {
    "mine": "negmine.api",
    "open_run": "negmine.api",
    "MineResult": "negmine.api",
    "RunTables": "negmine.api",
    "STRATEGIES": "negmine.sample",
    "sample_negatives": "negmine.sample",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'negmine' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
