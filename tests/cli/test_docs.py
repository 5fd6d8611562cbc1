"""The commands the READMEs quote exist, with the flags they quote: each is resolved in the CLI's
command tree, asked for --help, and every ``--flag`` it quotes must be one of its options."""

from __future__ import annotations

import re
from pathlib import Path

import click
from click.testing import CliRunner

from lynx_edge.cli.main import main

REPO = Path(__file__).resolve().parents[2]
QUOTED = re.compile(r"lynx-edge ((?:[a-z][\w-]*)(?: [^\n`|]*)?)")


def quoted_commands() -> list[tuple[Path, str]]:
    """Every "lynx-edge …" a README quotes inside code (fenced blocks and `inline`)."""
    found = []
    for doc in sorted(REPO.rglob("*.md")):
        if any(part in (".venv", "node_modules", "runs") for part in doc.parts):
            continue
        text = doc.read_text(encoding="utf-8")
        code = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S) + re.findall(r"`([^`\n]+)`", text)
        for block in code:
            block = block.replace("\\\n", " ")
            found += [(doc, m.group(1).split("#")[0].strip()) for m in QUOTED.finditer(block)]
    return found


def resolve(words: list[str]) -> tuple[list[str], click.Command]:
    """The longest run of ``words`` that names a command, and that command."""
    command: click.Command = main
    path: list[str] = []
    for word in words:
        if not isinstance(command, click.Group) or word not in command.commands:
            break
        command = command.commands[word]
        path.append(word)
    return path, command


def test_every_quoted_command_and_flag_exists() -> None:
    quoted = quoted_commands()
    assert len(quoted) > 30  # the READMEs quote many; this reads them
    runner = CliRunner()
    helped: set[tuple[str, ...]] = set()
    for doc, line in quoted:
        path, command = resolve(line.split())
        assert path, f"{doc.relative_to(REPO)}: `lynx-edge {line}` names no command"
        if tuple(path) not in helped:
            result = runner.invoke(main, [*path, "--help"])
            assert result.exit_code == 0, f"`lynx-edge {' '.join(path)} --help` failed: {result.output}"
            helped.add(tuple(path))
        options = {name for p in command.params for name in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}
        for flag in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", line):
            assert flag in options or flag == "--help", f"{doc.relative_to(REPO)}: `lynx-edge {line}` quotes {flag}"
