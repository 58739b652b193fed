"""negmine: offline hard-negative mining for training dense retrievers.

Importing the package is cheap: heavy libraries (torch, sentence-transformers, faiss,
pyserini) load only inside the stages that need them.
"""

__version__ = "0.1.0"
