"""The chat history's schema is versioned: old files are migrated in place, newer ones refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from lynx_edge.chat.store import SCHEMA, SCHEMA_VERSION, ChatStore, StoredMessage, StoreError


def test_a_history_from_before_versioning_keeps_its_chats_and_gets_a_version(tmp_path: Path) -> None:
    path = tmp_path / "chats.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(SCHEMA)  # what lynx-edge wrote before the store had a version
    old.execute("INSERT INTO chats (title, model, probe, created, updated) VALUES ('old', 'm', NULL, 1, 1)")
    old.execute("INSERT INTO messages (chat_id, role, content, created) VALUES (1, 'user', 'hello', 1)")
    old.commit()
    old.close()
    store = ChatStore(path)
    try:
        assert [c.title for c in store.chats()] == ["old"]
        assert [m.content for m in store.messages(1)] == ["hello"]
        store.add(1, StoredMessage("assistant", "hi", stats={"line": "x"}))
        assert int(store.db.execute("PRAGMA user_version").fetchone()[0]) == SCHEMA_VERSION
    finally:
        store.close()
    reopened = ChatStore(path)  # a second open migrates nothing and loses nothing
    try:
        assert [m.content for m in reopened.messages(1)] == ["hello", "hi"]
    finally:
        reopened.close()


def test_a_history_from_a_newer_version_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "chats.sqlite3"
    newer = sqlite3.connect(path)
    newer.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    newer.close()
    with pytest.raises(StoreError, match="newer lynx-edge.*upgrade lynx-edge"):
        ChatStore(path)
    check = sqlite3.connect(path)
    assert check.execute("SELECT name FROM sqlite_master").fetchall() == []  # nothing was created
    check.close()
