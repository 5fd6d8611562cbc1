"""What a generation asks of the watchers that ride along with it (the thinking's limits, the
tool calls): decisions, never edits of the KV cache, which stays the generation's alone."""

from __future__ import annotations

from typing import Protocol

from lynx_edge.runtime.ledger import TokenLedger


class Watcher(Protocol):
    """One concern watching a reply token by token."""

    def hold_from(self, ledger: TokenLedger, thinking_open: bool) -> int | None:
        """The char from which the thinking must be held back from the stream now, because a
        decision still pending may remove or move it (None: nothing to hold)."""
        ...
