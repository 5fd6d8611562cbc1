"""The cue matcher finds whole-word cues in streamed text, token by token."""

from __future__ import annotations

import codecs

import pytest

from lynx_edge.runtime.cues import CueMatcher, cue_label

WORDS = ("wait", "hmm", "alternatively")


def stream(matcher: CueMatcher, pieces: list[bytes]) -> list[tuple[int, str, bool]]:
    """Feed byte pieces like tokens; return (token index, cue, open_end) per match found."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text, found = "", []
    for i, piece in enumerate(pieces):
        prev = len(text)
        text += decoder.decode(piece)
        found += [(i, m.cue, m.open_end) for m in matcher.matches_ending_after(text, prev)]
    return found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Wait, that is wrong", ["wait"]),
        ("WAIT. hmm. Alternatively,", ["wait", "hmm", "alternatively"]),
        ("await the result", []),
        ("Waiting is hard", []),
        ("hmmm no", []),
        ("x=3;wait!", ["wait"]),
        ("naïve wait", ["wait"]),
    ],
)
def test_whole_words_case_insensitive(text: str, expected: list[str]) -> None:
    """Only whole words count, in any case; 'await' and 'Waiting' are not cues."""
    found = CueMatcher(WORDS).matches_ending_after(text + " ", 0)
    assert [m.cue for m in found] == expected


def test_multi_token_cue_fires_on_token_with_last_char() -> None:
    """' Altern' + 'atively' is one cue, reported on the second token."""
    found = stream(CueMatcher(WORDS), [b"So", b" Altern", b"atively", b","])
    assert found == [(2, "alternatively", True)]


def test_open_end_is_resolved_by_next_text() -> None:
    """A cue at the very end of the text is open until the next character shows the word ended."""
    m = CueMatcher(WORDS)
    [match] = m.matches_ending_after("so Wait", 0)
    assert match.open_end


def test_utf8_split_across_tokens() -> None:
    """A multi-byte character split over two tokens neither hides nor fakes a cue."""
    e_acute = "é".encode()
    pieces = [b"caf", e_acute[:1], e_acute[1:], b" Hmm", b"."]
    assert stream(CueMatcher(WORDS), pieces) == [(3, "hmm", True)]
    # 'é' glued to 'wait' makes one word, so no cue
    assert stream(CueMatcher(WORDS), [e_acute[:1], e_acute[1:] + b"wait", b" x"]) == []


def test_structural_newline_cue_needs_no_boundary() -> None:
    """A line break is a cue wherever it appears, and is never open."""
    found = stream(CueMatcher(("\n",)), [b"a = 1.", b"\n", b"b"])
    assert found == [(1, "\n", False)]
    assert cue_label("\n") == "\\n"


def test_partial_start_holds_back_possible_cue_prefixes() -> None:
    """The tail that might still become a cue is held back; other text is released."""
    m = CueMatcher(WORDS)
    assert m.partial_start("I think Wa") == len("I think ")
    assert m.partial_start("I think Alter") == len("I think ")
    assert m.partial_start("I think swa") == len("I think swa")  # 'swa' can't start a word cue
    assert m.partial_start("all clear.") == len("all clear.")
