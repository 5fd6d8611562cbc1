"""Chat history in SQLite under the user data dir, and export of a chat to Markdown.

Every message is written the moment it exists (the user's when sent, the assistant's when
it starts, then again as it grows and when it ends), each write its own transaction in WAL
mode, so a crash or Ctrl-C loses at most the last few tokens of a reply — never a chat.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lynx_edge.errors import LynxError
from lynx_edge.runtime.model_files import data_dir


class StoreError(LynxError):
    """A chat history this version cannot open."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS chats (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    model TEXT NOT NULL,
    probe TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    thinking TEXT NOT NULL DEFAULT '',
    stats TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_chat ON messages(chat_id, id);
"""
# MIGRATIONS[n] takes a database from schema version n to n + 1 (``PRAGMA user_version``).
# Version 0 is a new file or one written before the store was versioned, whose tables are
# already version 1's: creating what is missing is the whole step.
MIGRATIONS: tuple[str, ...] = (SCHEMA,)
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass
class StoredMessage:
    """One message as stored; ``stats`` holds the assistant's numbers and exit decisions.

    Roles: ``user``, ``assistant``, ``tool`` (a call's result) — the conversation — and
    ``system`` (the chat's system prompt from there on) and ``note`` (a model switch: shown,
    exported, never sent to a model).
    """

    role: str
    content: str
    thinking: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    id: int | None = None


@dataclass(frozen=True)
class ChatSummary:
    id: int
    title: str
    model: str
    updated: float
    messages: int


def history_path() -> Path:
    return data_dir() / "chats.sqlite3"


class ChatStore:
    """The history database; one connection, used from the UI thread only."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or history_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None)  # autocommit: each write lands
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def _migrate(self) -> None:
        """Bring the file to ``SCHEMA_VERSION``, one step per version, each in a transaction;
        refuse a file a newer lynx-edge wrote rather than lose what it holds."""
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            self.db.close()
            raise StoreError(
                f"the chat history {self.path} was written by a newer lynx-edge (schema {version}, this one "
                f"reads up to {SCHEMA_VERSION}): upgrade lynx-edge"
            )
        for step in range(version, SCHEMA_VERSION):
            self.db.executescript(f"BEGIN; {MIGRATIONS[step]} PRAGMA user_version = {step + 1}; COMMIT;")

    def new_chat(self, title: str, model: str, probe: str | None) -> int:
        now = time.time()
        cur = self.db.execute(
            "INSERT INTO chats (title, model, probe, created, updated) VALUES (?, ?, ?, ?, ?)",
            (title[:120], model, probe, now, now),
        )
        return int(cur.lastrowid)

    def add(self, chat_id: int, message: StoredMessage) -> int:
        now = time.time()
        cur = self.db.execute(
            "INSERT INTO messages (chat_id, role, content, thinking, stats, created) VALUES (?, ?, ?, ?, ?, ?)",
            (chat_id, message.role, message.content, message.thinking, json.dumps(message.stats), now),
        )
        self.db.execute("UPDATE chats SET updated = ? WHERE id = ?", (now, chat_id))
        message.id = int(cur.lastrowid)
        return message.id

    def update(self, message: StoredMessage) -> None:
        self.db.execute(
            "UPDATE messages SET content = ?, thinking = ?, stats = ? WHERE id = ?",
            (message.content, message.thinking, json.dumps(message.stats), message.id),
        )

    def forget_from(self, chat_id: int, message_id: int) -> None:
        """Forget the conversation from ``message_id`` on (a reply regenerated, a prompt
        edited); notes and system prompts stay, as they happened."""
        self.db.execute(
            "DELETE FROM messages WHERE chat_id = ? AND id >= ? AND role IN ('user', 'assistant', 'tool')",
            (chat_id, message_id),
        )

    def chats(self) -> list[ChatSummary]:
        rows = self.db.execute(
            "SELECT c.id, c.title, c.model, c.updated, COUNT(m.id) FROM chats c "
            "LEFT JOIN messages m ON m.chat_id = c.id GROUP BY c.id ORDER BY c.updated DESC"
        ).fetchall()
        return [ChatSummary(*row) for row in rows]

    def messages(self, chat_id: int) -> list[StoredMessage]:
        rows = self.db.execute(
            "SELECT role, content, thinking, stats, id FROM messages WHERE chat_id = ? ORDER BY id", (chat_id,)
        ).fetchall()
        return [StoredMessage(r, c, t, json.loads(s), i) for r, c, t, s, i in rows]

    def title(self, chat_id: int) -> str:
        row = self.db.execute("SELECT title FROM chats WHERE id = ?", (chat_id,)).fetchone()
        return row[0] if row else ""

    def close(self) -> None:
        self.db.close()


def chat_markdown(title: str, messages: list[StoredMessage]) -> str:
    """A chat as Markdown: questions, the thinking folded in <details>, answers, and under each
    answer the model, the settings and the exit it ran with."""
    return "\n".join([f"# {title}\n", *(message_markdown(m) for m in messages)])


def message_markdown(m: StoredMessage) -> str:
    """One message as Markdown (the export's piece, and what "copy message" copies)."""
    if m.role == "user":
        return f"## You\n\n{m.content}\n"
    if m.role == "tool":
        return f"## Tool result\n\n```\n{m.content}\n```\n"
    if m.role == "system":
        return f"## System prompt\n\n{m.content or '(cleared: the model default)'}\n"
    if m.role == "note":
        return f"> {m.content}\n"
    parts = ["## Assistant\n"]
    if m.thinking:
        summary = m.stats.get("header") or "Thinking"
        parts.append(f"<details><summary>{summary}</summary>\n\n{m.thinking}\n\n</details>\n")
    parts.append(f"{m.content}\n")
    for call in m.stats.get("tool_calls", []):
        parts.append(f"`{call['name']}({json.dumps(call['arguments'], ensure_ascii=False)})`\n")
    if line := m.stats.get("line"):
        parts.append(f"_{line}_\n")
    if settings := m.stats.get("settings"):
        parts.append(f"_{settings}_\n")
    return "\n".join(parts)
