"""Corpora for residual-stream dynamics, and the token-shuffle control.

The paper (Fernando & Guitchounts 2025, section 2.1) feeds a transformer short
paragraphs of WikiText-2 (``wikitext-2-raw-v1``), keeping texts with more than 100 and
fewer than 500 characters, and reads the residual stream at the last token of each.
Its control condition runs the same texts with their tokens shuffled: every token after
the beginning-of-sequence token is permuted at random, so the model sees the same
multiset of tokens without any word order.

Three sources, one filter:

* :func:`wikitext` loads WikiText-2 through Hugging Face ``datasets`` (needs the hub).
* :func:`python_docs` is the offline default: Python ships the text of its own
  documentation topics (``pydoc_data.topics``), several hundred English prose
  paragraphs (823 distinct ones) of 100-500 characters, an honest stand-in when the hub is out of reach.
* :func:`read_texts` reads a user's ``.txt`` (one text per blank-line separated
  paragraph), ``.jsonl`` (one JSON object per line with a string ``"text"`` field) or
  ``.json`` (an array of strings, or of such objects).

Example::

    import tl_dynamics as tld
    texts = tld.data.python_docs()      # 823 paragraphs, no network
    len(texts), texts[0][:40]
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from jaxtyping import Int
from torch import Tensor

from tl_dynamics._checks import check_int
from tl_dynamics.errors import (
    DynamicsInputError,
    HubUnreachableError,
    InputNotFoundError,
    InputTypeError,
    MissingDependencyError,
)

__all__ = [
    "MIN_CHARS",
    "MAX_CHARS",
    "WIKITEXT_NAME",
    "WIKITEXT_CONFIG",
    "OFFLINE_ALTERNATIVES",
    "HUB_ENDPOINT",
    "HUB_CONNECT_TIMEOUT_S",
    "OFFLINE_VARIABLES",
    "hub_reachable",
    "keep_text",
    "PROSE_LETTER_FRACTION",
    "python_docs",
    "wikitext",
    "read_texts",
    "shuffle_tokens",
    "CORPORA",
    "load_corpus",
    "sample_texts",
]

MIN_CHARS = 100  # the paper keeps WikiText texts with 100 < len(text) < 500 (section 2.1)
MAX_CHARS = 500

WIKITEXT_NAME = "wikitext"
WIKITEXT_CONFIG = "wikitext-2-raw-v1"  # the paper's corpus (section 2.1)

OFFLINE_ALTERNATIVES = (
    "--texts python-docs on the command line, tl_dynamics.data.python_docs() in Python "
    "(offline, bundled with Python), or a .txt/.jsonl/.json file of your own "
    "(tl_dynamics.data.read_texts(path))"
)

HUB_ENDPOINT = "https://huggingface.co"  # huggingface_hub's default; HF_ENDPOINT overrides it
HUB_CONNECT_TIMEOUT_S = 3.0  # one TCP connection; datasets alone retries for ~30 s offline
OFFLINE_VARIABLES = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
JSONL_SUFFIX, JSON_SUFFIX = ".jsonl", ".json"


def hub_reachable(timeout: float = HUB_CONNECT_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hugging Face hub (``HF_ENDPOINT``) opens in time."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", HUB_ENDPOINT))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def keep_text(text: str, min_chars: int = MIN_CHARS, max_chars: int = MAX_CHARS) -> bool:
    """Whether ``text`` passes the paper's length filter ``min_chars < len < max_chars``."""
    return min_chars < len(text) < max_chars


def _normalise_whitespace(paragraph: str) -> str:
    return re.sub(r"\s+", " ", paragraph).strip()


PROSE_LETTER_FRACTION = 0.85
"""A paragraph counts as prose when at least this fraction of its characters are letters or
spaces; code samples and grammar rules fall below it (chosen by reading the rejects)."""

_CODE_MARKERS = re.compile(r">>>|::=|^\s*(def|class|import|for|if|while|return|try|with)\b.*[:(]", re.M)


def _looks_like_prose(paragraph: str, folded: str) -> bool:
    letters = sum(c.isalpha() or c == " " for c in folded)
    return letters >= PROSE_LETTER_FRACTION * len(folded) and not _CODE_MARKERS.search(paragraph)


def python_docs(*, min_chars: int = MIN_CHARS, max_chars: int = MAX_CHARS) -> list[str]:
    """English prose paragraphs from Python's bundled documentation topics.

    Splits every topic of ``pydoc_data.topics`` at blank lines, folds each paragraph's
    whitespace to single spaces, drops code samples and grammar rules (see
    :data:`PROSE_LETTER_FRACTION`) and duplicates, and keeps paragraphs with
    ``min_chars < len < max_chars``. Deterministic: the same Python version gives the
    same list in the same order.

    Returns:
        A list of distinct paragraphs (823 on Python 3.11 with the default filter;
        196 more repeat across topics and are kept once).
    """
    from pydoc_data.topics import topics

    texts: dict[str, None] = {}
    for topic in sorted(topics):
        for paragraph in topics[topic].split("\n\n"):
            text = _normalise_whitespace(paragraph)
            if keep_text(text, min_chars, max_chars) and _looks_like_prose(paragraph, text):
                texts[text] = None
    return list(texts)


def wikitext(
    split: str = "train",
    *,
    min_chars: int = MIN_CHARS,
    max_chars: int = MAX_CHARS,
    cache_dir: str | None = None,
) -> list[str]:
    """The paper's corpus: WikiText-2 raw lines within the length filter.

    Loads ``wikitext-2-raw-v1`` through Hugging Face ``datasets`` (``pip install
    "tl-dynamics[hub]"``), strips each line and keeps those with
    ``min_chars < len < max_chars``; section headings (`` = Title = ``) are dropped.

    Returns:
        A list of texts in corpus order.

    Without a connection to the hub, it fails at once (one TCP connection of at most
    :data:`HUB_CONNECT_TIMEOUT_S`) instead of after ``datasets``' retries; with
    ``HF_DATASETS_OFFLINE=1`` it reads the local cache only.

    Raises:
        MissingDependencyError: ``datasets`` is not installed (an ``ImportError``).
        HubUnreachableError: the Hugging Face hub cannot be reached and the corpus is not
            in the local cache; the message names the offline alternatives.
    """
    try:
        import datasets
    except ImportError as error:
        raise MissingDependencyError(
            'wikitext() needs the "datasets" package: pip install "tl-dynamics[hub]". '
            f"Offline, use {OFFLINE_ALTERNATIVES}."
        ) from error
    offline = any(os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE")
                  for name in OFFLINE_VARIABLES)
    if not offline and not hub_reachable():
        raise HubUnreachableError(
            f"cannot reach the Hugging Face hub to load {WIKITEXT_NAME}/{WIKITEXT_CONFIG} "
            "(set HF_DATASETS_OFFLINE=1 if it is in your local cache). "
            f"Use {OFFLINE_ALTERNATIVES}."
        )
    try:
        rows = datasets.load_dataset(WIKITEXT_NAME, WIKITEXT_CONFIG, split=split, cache_dir=cache_dir)
    except Exception as error:  # datasets raises many types when offline; all mean "no corpus"
        raise HubUnreachableError(
            f"could not load {WIKITEXT_NAME}/{WIKITEXT_CONFIG} from the Hugging Face hub "
            f"(offline, or not in the local cache: {type(error).__name__}: {error}). "
            f"Use {OFFLINE_ALTERNATIVES}."
        ) from error
    texts = (line.strip() for line in rows["text"])
    return [t for t in texts if keep_text(t, min_chars, max_chars) and not t.startswith("=")]


def read_texts(path: str | Path) -> list[str]:
    """Texts from a user's file.

    ``.jsonl`` (any case): one JSON object per line, its ``"text"`` field (a string) a
    text. ``.json``: one array whose items are strings or such objects. Anything else is
    read as plain UTF-8 text with one text per blank-line separated paragraph (whitespace
    inside a paragraph folded to single spaces). No length filter is applied: pass the
    result through :func:`keep_text` to apply the paper's.

    Returns:
        A non-empty list of texts in file order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is empty or not UTF-8, or an item of a JSON file is neither
            a string nor an object with a string ``"text"``, or holds a text that cannot
            be encoded as UTF-8 (a lone surrogate escaped as ``\\ud800``); the message
            says where (the line of a ``.jsonl`` file).
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"texts file {str(path)!r} does not exist or is not a file")
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DynamicsInputError(f"texts file {str(path)!r} is not UTF-8 text: {error}") from error
    suffix = path.suffix.lower()
    if suffix == JSONL_SUFFIX:
        texts = _jsonl_texts(content, path)
    elif suffix == JSON_SUFFIX:
        texts = _json_array_texts(content, path)
    else:
        texts = [_normalise_whitespace(p) for p in re.split(r"\n\s*\n", content)]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise DynamicsInputError(f"texts file {str(path)!r} holds no text")
    return texts


def _encodable(text: str, where: str) -> str:
    """``text``, unless it cannot be written as UTF-8 (a lone surrogate such as JSON's
    ``"\\ud800"``): then a ``ValueError`` saying where."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise DynamicsInputError(
            f"{where} has a text that cannot be encoded as UTF-8 ({error.reason} at "
            f"character {error.start}: {text[error.start]!r}); fix or remove that text"
        ) from error
    return text


def _object_text(item: Any, where: str) -> str:
    """The string ``"text"`` field of a decoded JSON object, or a ``ValueError`` saying where."""
    if not isinstance(item, dict) or "text" not in item:
        raise DynamicsInputError(
            f"{where} is not a JSON object with a 'text' field; got {_json_type(item)}"
        )
    if not isinstance(item["text"], str):
        raise DynamicsInputError(
            f"{where} has a 'text' that is {_json_type(item['text'])}, not a string"
        )
    return _encodable(item["text"], where)


def _jsonl_texts(content: str, path: Path) -> list[str]:
    texts = []
    for number, line in enumerate(content.splitlines(), start=1):
        if line.strip():
            where = f"line {number} of {str(path)!r}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DynamicsInputError(f"{where} is not JSON ({error})") from error
            texts.append(_object_text(record, where))
    return texts


def _json_array_texts(content: str, path: Path) -> list[str]:
    try:
        items = json.loads(content) if content.strip() else []
    except json.JSONDecodeError as error:
        raise DynamicsInputError(f"texts file {str(path)!r} is not JSON ({error})") from error
    if not isinstance(items, list):
        raise DynamicsInputError(
            f"texts file {str(path)!r} must hold a JSON array of strings or of objects with "
            f"a 'text' field; got {_json_type(items)}"
        )
    texts = []
    for number, item in enumerate(items):
        where = f"item {number} of {str(path)!r}"
        texts.append(_encodable(item, where) if isinstance(item, str) else _object_text(item, where))
    return texts


def _json_type(value: Any) -> str:
    """How JSON names the type of a decoded value (``null``, a number, an array, ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    return {list: "an array", dict: "an object", str: "a string"}.get(type(value), type(value).__name__)


def shuffle_tokens(
    tokens: Int[Tensor, " pos"], special_ids: Sequence[int], generator: torch.Generator
) -> Int[Tensor, " pos"]:
    """The paper's control: permute the tokens between the leading and trailing specials.

    Leading special tokens (BOS, or BERT's ``[CLS]``) stay first and trailing ones
    (``[SEP]``, EOS) stay last; the tokens in between are permuted with ``generator``.

    Returns:
        A new 1-D tensor with the same tokens, the inner ones in random order.
    """
    special = torch.isin(tokens, torch.as_tensor(list(special_ids), dtype=tokens.dtype))
    start = 0
    while start < len(tokens) and special[start]:
        start += 1
    stop = len(tokens)
    while stop > start and special[stop - 1]:
        stop -= 1
    shuffled = tokens.clone()
    order = torch.randperm(stop - start, generator=generator) + start
    shuffled[start:stop] = tokens[order]
    return shuffled


CORPORA = ("python-docs", "wikitext")
"""Corpus names :func:`load_corpus` accepts besides a file path."""


def load_corpus(source: str | Path) -> list[str]:
    """Texts from a corpus name (``"python-docs"``, ``"wikitext"``) or a file path.

    Corpora get the paper's length filter; a user's file is taken as it is
    (:func:`read_texts`).

    Raises:
        FileNotFoundError: ``source`` is neither a corpus name nor an existing file.
    """
    if source == "python-docs":
        return python_docs()
    if source == "wikitext":
        return wikitext()
    if not Path(source).is_file():
        raise InputNotFoundError(
            f"texts {str(source)!r} is neither a corpus ({', '.join(CORPORA)}) nor a file"
        )
    return read_texts(source)


def sample_texts(texts: Sequence[str], n: int, seed: int = 0) -> list[str]:
    """``n`` texts drawn without replacement with ``seed``, kept in corpus order.

    Raises:
        TypeError: ``texts`` is not a sequence (a dict would give its keys).
        ValueError: ``n`` is not positive or exceeds ``len(texts)`` (the message says how
            many texts there are).
    """
    if isinstance(texts, (str, Mapping)) or not isinstance(texts, Sequence):
        raise InputTypeError(f"texts must be a list of strings; got {type(texts).__name__}")
    n = check_int(n, "n")
    if n > len(texts):
        raise DynamicsInputError(
            f"n = {n} is larger than the corpus: only {len(texts)} texts were found"
        )
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(texts), generator=generator)[:n].sort().values
    return [texts[i] for i in chosen.tolist()]
