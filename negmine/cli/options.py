"""Options shared by several commands, defined once.

An option that sets a runner parameter defaults to None, "not given": the runner's own default
applies (negmine.runners; tests/cli/test_defaults.py checks that each ``[default: …]`` shown in the
help is the runner's). Groups of options used by several commands are added with :func:`options`.
"""

import functools
import inspect
from typing import List, Optional

import typer


def opt(*names: str, help: str, default: str | None = None, **kwargs):
    """An option that defaults to "not given"; ``default`` is the runner's default as the help shows it."""
    return typer.Option(None, *names, help=help, show_default=default if default is not None else False, **kwargs)


RunOpt = typer.Option(..., "--run", "--out", "-o", help="Run directory (created if missing).")
ForceOpt = typer.Option(False, "--force", help="Rerun even when the manifest says the outputs are up to date.")
JsonOpt = typer.Option(False, "--json", help="Print the summary as JSON on stdout.")
DataOpt = typer.Option(..., "--data", "-d", help="Dataset: a BEIR, MS MARCO or Parquet directory, or a pair dataset (.parquet/.jsonl/.csv/.tsv file, save_to_disk directory).")

STRATEGY_HELP = "topk | range | simans | random | positive-aware | star | tas-balanced | curriculum | denoise"
SOURCE_HELP = "Candidate pool: dense | bm25 | hybrid (bm25 and dense fused; see `negmine hybrid`)"
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

# name → (annotation, option); added to a command's signature by `options(...)`
ENCODER = {
    "model": (Optional[str], opt("--model", "-m", help="sentence-transformers model: hub name or local path.", default=DEFAULT_MODEL)),
    "max_seq_length": (Optional[int], opt("--max-seq-length", help="Tokens per text for the bi-encoder.", default="256")),
    "batch_size": (Optional[int], opt("--batch-size", help="Encoding batch size.", default="64")),
}
PROMPTS = {
    "query_prompt": (Optional[str], opt("--query-prompt", help="Text put before every query (default: the model's own query prompt, where it declares one).")),
    "corpus_prompt": (Optional[str], opt("--corpus-prompt", help="Text put before every document (default: the model's document/passage/corpus prompt, where it declares one).")),
    "query_prompt_name": (Optional[str], opt("--query-prompt-name", help="The model's configured prompt to put before every query.")),
    "corpus_prompt_name": (Optional[str], opt("--corpus-prompt-name", help="The model's configured prompt to put before every document.")),
}
EMBEDDINGS = {
    "dtype": (Optional[str], opt("--dtype", help="Stored corpus embeddings: float16 | float32", default="float16")),
    "precision": (Optional[str], opt(
        "--precision", default="auto",
        help="Encoder weights while encoding: auto (bfloat16 where the hardware has it natively: CPUs with AVX512-BF16 or AMX, GPUs; "
        "else float32) | float32 | bfloat16 (embeddings within cosine 1e-4 of float32's) | float16 (GPU).",
    )),
    "backend": (Optional[str], opt(
        "--backend", default="auto",
        help="Runtime of the encoder's transformer: auto (openvino on a CPU where it runs the model: plain BERT, DistilBERT, MPNet, RoBERTa or XLM-RoBERTa encoders, float32 or native "
        "bfloat16; else torch) | torch | openvino (faster on CPUs; embeddings within cosine 1e-4 of torch's).",
    )),
    "index": (Optional[str], opt(
        "--index", default="flat", help="faiss index: flat (exact) | ivf | hnsw (approximate, for large corpora; the stage reports recall against flat).",
    )),
}
ENGINE = {
    "engine": (Optional[str], opt("--engine", help="local | ray: encode, search and rescore in this process or on a Ray cluster (identical outputs).", default="local")),
    "ray_address": (Optional[str], opt(
        "--ray-address", envvar="RAY_ADDRESS", help="--engine ray: the cluster (ray://HEAD:10001, HEAD:6379 or auto); default: a local Ray cluster.",
    )),
    "ray_actors": (Optional[int], opt(
        "--ray-actors", envvar="NEGMINE_RAY_ACTORS", min=1,
        help="--engine ray: at most this many model actors (default: one per GPU, else one per CPU of the cluster). Outputs do not depend on it.",
    )),
}
FALSE_NEGATIVES = {
    "dedup": (Optional[bool], opt("--dedup/--no-dedup", help="Keep documents whose text duplicates a labelled positive (exactly or nearly) out of the negatives.", default="dedup")),
    "max_fn_prob": (Optional[float], opt(
        "--max-fn-prob", help="Keep candidates whose P(false negative) is above this out of the negatives (fits the model of `negmine fn-scores` if the run has none).",
    )),
}
# Dedicated options of the main strategy parameters (their defaults live in the strategy functions' signatures).
STRATEGY_PARAMS = {
    "a": (Optional[float], opt("--a", help="SimANS: kernel sharpness a, on scores standardised per query, z = (s - pool mean) / pool std (--param scale=raw: on raw scores).", default="1.0")),
    "b": (Optional[float], opt("--b", help="SimANS: offset b; the kernel peaks at z = z+ + b, b pool standard deviations from the positive, below it when b < 0.", default="-0.5")),
    "kernel": (Optional[str], opt("--kernel", help="SimANS: gaussian | laplace", default="gaussian")),
    "positive_score": (Optional[str], opt("--positive-score", help="SimANS: pair | random | mean | max", default="pair")),
    "score": (Optional[str], opt("--score", help="SimANS: retriever | ce (teacher scores from rescore).", default="retriever")),
    "range_min": (Optional[int], opt("--range-min", help="range: first rank.", default="10")),
    "range_max": (Optional[int], opt("--range-max", help="range: last rank.", default="50")),
    "max_relative": (Optional[float], opt("--max-relative", help="positive-aware: keep negatives scoring below MAX_RELATIVE x s(q, d+).", default="0.95")),
    "margin": (Optional[float], opt("--margin", help="positive-aware: keep negatives scoring below s(q, d+) - MARGIN.")),
    "max_score": (Optional[float], opt("--max-score", help="positive-aware: keep negatives scoring below MAX_SCORE.")),
    "hard_ratio": (Optional[float], opt("--hard-ratio", help="star: share of hard (retrieved) negatives, the rest random from the corpus.", default="0.5")),
    "n_stages": (Optional[int], opt("--n-stages", help="curriculum: rank bands, easiest first.", default="3")),
    "n_bins": (Optional[int], opt("--n-bins", help="tas-balanced: margin bins.", default="10")),
    "negative_below": (Optional[float], opt("--negative-below", help="denoise: keep top candidates whose teacher ce_prob is below this.", default="0.1")),
    "positive_above": (Optional[float], opt("--positive-above", help="denoise: a ce_prob above this marks a likely false negative.", default="0.9")),
    "pseudo_positives": (Optional[bool], opt("--pseudo-positives/--no-pseudo-positives", help="denoise: also write the likely false negatives out (as positives).", default="no-pseudo-positives")),
    "param": (List[str], typer.Option([], "--param", help="Any other strategy parameter, NAME=VALUE.")),
}
TEACHER_HELP = (
    "Teacher: cross-encoder:NAME_OR_PATH (or a plain NAME_OR_PATH; ce_prob = sigmoid(logit)) or "
    "bi-encoder:NAME_OR_PATH (ce_score = cosine, ce_prob = (cos+1)/2, not calibrated). Thresholds apply to ce_prob. "
    "Repeat for several teachers, stored side by side: the first in ce_score/ce_prob, the others in ce_score_LABEL/ce_prob_LABEL "
    "(LABEL=SPEC names one; by default t1, t2 ...)."
)
TEACHER_NAME_HELP = "The teacher (its label: t1, t2 ... or the LABEL of --teacher LABEL=SPEC) whose scores {what} use (default: the first)."


def panel(name: str, group: dict) -> dict:
    """Show the options of ``group`` under their own heading in ``--help`` (each heading is its own table, so a
    long option name widens only its own; option names stay whole at 80 columns)."""
    for _, option in group.values():
        option.rich_help_panel = name
    return group


panel("Encoder", ENCODER)
panel("Embeddings and index", EMBEDDINGS)
panel("Engine", ENGINE)
panel("False negatives", FALSE_NEGATIVES)
panel("Strategy parameters", STRATEGY_PARAMS)
STRATEGY_PARAMS["pseudo_positives"][1].rich_help_panel = "Strategy parameters: denoise output"


def options(*groups: dict):
    """Add the options of ``groups`` to a command: its function receives them among its keyword arguments."""

    def decorate(fn):
        signature = inspect.signature(fn)
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
                 for group in groups for name, (annotation, option) in group.items()]

        @functools.wraps(fn)
        def command(**kwargs):
            return fn(**kwargs)

        command.__signature__ = signature.replace(parameters=own + added)
        command.__annotations__ = {p.name: p.annotation for p in own + added}
        return command

    return decorate


def strategy_params(values: dict) -> dict:
    """Strategy parameters from a command's keyword arguments (taken out of ``values``): the dedicated
    options that were given, then --param NAME=VALUE."""
    from negmine.recipes import parse_overrides

    extra = parse_overrides(values.pop("param", []), "--param")
    return {name: value for name in list(STRATEGY_PARAMS) if name != "param" and (value := values.pop(name)) is not None} | extra
