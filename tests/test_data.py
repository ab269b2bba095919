"""Corpora: the offline default, WikiText's offline error, users' files, sampling, shuffling."""

from __future__ import annotations

import json
import socket
import sys
import types

import pytest
import torch

from tl_dynamics import data
from tl_dynamics.data import validate_texts


def test_python_docs_is_distinct_prose_within_the_papers_filter():
    texts = data.python_docs()
    assert len(texts) > 800
    assert len(set(texts)) == len(texts)
    assert all(data.MIN_CHARS < len(t) < data.MAX_CHARS for t in texts)
    assert not any(">>>" in t or "::=" in t for t in texts)
    assert data.python_docs() == texts  # deterministic


def test_filter_bounds_are_strict():
    assert not data.keep_text("x" * data.MIN_CHARS)
    assert data.keep_text("x" * (data.MIN_CHARS + 1))
    assert not data.keep_text("x" * data.MAX_CHARS)


def test_wikitext_offline_names_the_alternatives(monkeypatch):
    fake = types.ModuleType("datasets")

    def load_dataset(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'wikitext' on the Hub (LocalEntryNotFoundError)")

    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(ConnectionError, match=r"python_docs\(\).*read_texts"):
        data.wikitext()


def test_wikitext_filters_and_drops_headings(monkeypatch):
    fake = types.ModuleType("datasets")
    lines = [" = Heading = " + "x" * 150, " " + "a" * 150 + " ", "short", "b" * 600]
    fake.load_dataset = lambda name, config, split, cache_dir: {"text": lines}
    monkeypatch.setitem(sys.modules, "datasets", fake)
    assert data.wikitext() == ["a" * 150]


def test_read_texts_splits_paragraphs_and_reads_jsonl(tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("First paragraph\nwraps here.\n\n\nSecond one.\n")
    assert data.read_texts(txt) == ["First paragraph wraps here.", "Second one."]
    jsonl = tmp_path / "notes.jsonl"
    jsonl.write_text(json.dumps({"text": "one"}) + "\n\n" + json.dumps({"text": "two"}) + "\n")
    assert data.read_texts(jsonl) == ["one", "two"]


@pytest.mark.parametrize(
    "content, suffix, message",
    [
        ("", ".txt", "holds no text"),
        ("\n \n", ".txt", "holds no text"),
        ('{"body": "x"}\n', ".jsonl", "line 1 .* 'text' field"),
        ("not json\n", ".jsonl", "line 1"),
    ],
)
def test_read_texts_errors(tmp_path, content, suffix, message):
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        data.read_texts(path)


def test_read_texts_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.read_texts(tmp_path / "absent.txt")


def test_load_corpus_names_and_files(tmp_path):
    assert data.load_corpus("python-docs") == data.python_docs()
    path = tmp_path / "t.txt"
    path.write_text("hello there")
    assert data.load_corpus(path) == ["hello there"]
    with pytest.raises(FileNotFoundError, match="neither a corpus"):
        data.load_corpus("nonsense")


def test_sample_texts_is_seeded_ordered_and_bounded():
    texts = [f"text {i}" for i in range(50)]
    a, b = data.sample_texts(texts, 10, seed=1), data.sample_texts(texts, 10, seed=1)
    assert a == b and a != data.sample_texts(texts, 10, seed=2)
    assert a == sorted(a, key=texts.index)
    with pytest.raises(ValueError, match="only 50 texts were found"):
        data.sample_texts(texts, 51)


def test_shuffle_tokens_keeps_specials_at_both_ends():
    tokens = torch.tensor([101, 5, 6, 7, 8, 9, 102])
    shuffled = data.shuffle_tokens(tokens, [101, 102], torch.Generator().manual_seed(0))
    assert shuffled[0] == 101 and shuffled[-1] == 102
    assert sorted(shuffled[1:-1].tolist()) == [5, 6, 7, 8, 9]
    assert not torch.equal(shuffled, tokens)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"text": null}', "line 2 .* 'text' that is null"),
        ('{"text": 3}', "line 2 .* 'text' that is the number 3"),
        ('{"text": ["a", "b"]}', "line 2 .* 'text' that is an array"),
        ('"just a string"', "line 2 .* not a JSON object .* got a string"),
        ("[1, 2]", "line 2 .* not a JSON object .* got an array"),
    ],
)
def test_jsonl_texts_must_be_strings(tmp_path, line, message):
    path = tmp_path / "texts.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=message):
        data.read_texts(path)


def test_upper_case_jsonl_is_read_as_jsonl(tmp_path):
    path = tmp_path / "TEXTS.JSONL"
    path.write_text(json.dumps({"text": "one"}) + "\n" + json.dumps({"text": "two"}) + "\n")
    assert data.read_texts(path) == ["one", "two"]


def test_json_array_of_strings_or_objects(tmp_path):
    path = tmp_path / "texts.json"
    path.write_text(json.dumps(["one", {"text": "two"}, "three"]))
    assert data.read_texts(path) == ["one", "two", "three"]
    assert data.load_corpus(path) == ["one", "two", "three"]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"text": "one"}', "JSON array .* got an object"),
        ('["one", 2]', "item 1 .* got the number 2"),
        ('["one", {"text": null}]', "item 1 .* 'text' that is null"),
        ('["one", ', "is not JSON"),
    ],
)
def test_json_file_errors(tmp_path, content, message):
    path = tmp_path / "texts.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        data.read_texts(path)


def test_a_dict_of_texts_is_refused_not_read_by_its_keys():
    texts = {"first": "The first text.", "second": "The second text."}
    with pytest.raises(TypeError, match="got a dict"):
        validate_texts(texts)
    with pytest.raises(TypeError, match="got dict"):
        data.sample_texts(texts, 1)


def test_hub_reachable_is_false_on_a_closed_port(monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert not data.hub_reachable()


def test_offline_wikitext_fails_without_asking_datasets(monkeypatch):
    fake = types.ModuleType("datasets")

    def load_dataset(*args, **kwargs):
        raise AssertionError("datasets was asked although the hub is out of reach")

    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(data, "hub_reachable", lambda: False)
    with pytest.raises(ConnectionError, match="cannot reach .* --texts python-docs"):
        data.wikitext()
