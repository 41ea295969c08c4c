"""Atomic writes leave the old file or the new one; JSON Lines reading drops only a torn last line."""

import json

import pytest

from owlens.persist import atomic_open, read_jsonl


def test_atomic_open_keeps_the_old_file_when_the_block_fails(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_open(path) as handle:
        handle.write("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old\n" and list(tmp_path.iterdir()) == [path]
    with atomic_open(path) as handle:
        handle.write("new\n")
    assert path.read_text() == "new\n" and list(tmp_path.iterdir()) == [path]
    with pytest.raises(ValueError, match="expected mode 'w' or 'wb'; received 'a'"):
        atomic_open(path, "a").__enter__()


def test_read_jsonl_drops_a_torn_tail_and_says_where_a_broken_line_is(tmp_path):
    path = tmp_path / "rows.jsonl"
    assert read_jsonl(path) == ([], 0)
    whole = json.dumps({"a": 1}) + "\n\n"
    path.write_text(whole + '{"a": 2}')
    assert read_jsonl(path) == ([{"a": 1}], len(whole))  # a writer killed before its newline
    assert read_jsonl(path, keep_unterminated=True)[0] == [{"a": 1}, {"a": 2}]  # another tool's last line
    path.write_text(whole + '{"a": ')
    assert read_jsonl(path, keep_unterminated=True)[0] == [{"a": 1}]
    path.write_text('{"a": \n' + whole)
    with pytest.raises(ValueError, match=r"rows.jsonl:1: not a JSON line"):
        read_jsonl(path)
