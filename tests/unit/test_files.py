"""jumpray.files: a file or folder appears whole under its name, or not at all."""

from __future__ import annotations

import json

import pytest

from jumpray.files import atomic_path, copy_tree, replace_tree, write_json, write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_text(tmp_path / "summary.json", "old\n")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half a fil")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_json_is_indented_ends_with_a_newline_and_strs_what_json_cannot_hold(tmp_path):
    path = write_json(tmp_path / "a.json", {"path": tmp_path, "n": 1}, indent=1)
    text = path.read_text()
    assert text.endswith("}\n") and json.loads(text) == {"path": str(tmp_path), "n": 1}


def test_replace_tree_swaps_a_folder_and_copy_tree_leaves_the_source(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "x").write_text("new")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stale").write_text("old")
    copy_tree(tmp_path / "new", tmp_path / "copy")
    replace_tree(tmp_path / "new", tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["x"]
    assert (tmp_path / "copy" / "x").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "out"]
