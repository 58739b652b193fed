"""negmine.retrieve.cache.publish: a cache folder appears whole or not at all."""

from __future__ import annotations

import os

import pytest

from negmine.retrieve.cache import publish


def _write(name: str, text: str):
    def fill(tmp):
        (tmp / name).write_text(text)
    return fill


def test_publish_writes_the_folder_and_leaves_nothing_else(tmp_path):
    folder = tmp_path / "cache" / "entry"
    publish(folder, _write("a.txt", "one"))
    assert (folder / "a.txt").read_text() == "one"
    assert os.listdir(folder.parent) == ["entry"]


def test_a_failed_fill_publishes_nothing(tmp_path):
    folder = tmp_path / "entry"

    def fill(tmp):
        (tmp / "half.txt").write_text("half")
        raise ValueError("stopped halfway")

    with pytest.raises(ValueError, match="halfway"):
        publish(folder, fill)
    assert os.listdir(tmp_path) == []


def test_a_folder_published_first_by_another_writer_is_kept(tmp_path):
    folder = tmp_path / "entry"
    publish(folder, _write("a.txt", "first"))
    publish(folder, _write("a.txt", "second"))
    assert (folder / "a.txt").read_text() == "first"
    assert os.listdir(tmp_path) == ["entry"]


def test_an_unwritable_place_raises_oserror(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        publish(blocker / "entry", _write("a.txt", "x"))
