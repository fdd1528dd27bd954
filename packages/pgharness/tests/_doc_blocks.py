"""The code blocks of the Markdown docs, and the ``doctest`` comments that say how to run them.

A fenced block is claimed by an HTML comment on the line just above it::

    <!-- doctest: project=signup file=myapp/models.py -->     write the block to that file
    <!-- doctest: project=signup run expect="passed=3" -->    run the block's command there
    <!-- doctest: project=signup output -->                   these lines are in the last output
    <!-- doctest: skip="why it cannot run here" -->           not run, for the stated reason

Writing the same file twice in one project appends (a guide grows a file step by step).
A file block may also run a command once written (``run="pytest tests/test_x.py"``), and
``base=other`` starts a project from the files another project of the same doc wrote.
``run`` blocks hold one ``pytest ...`` command line; ``expect`` takes pytest's outcome words
(``passed=3 failed=1``) and ``exit=N``; ``warnings=none`` fails the block if the run prints
any warning at all; ``requires=module`` runs the project only where that
module is importable. Output lines must appear in order, each as a substring of an output
line; a line ``...`` stands for anything.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RUNNABLE_LANGUAGES", "Block", "Project", "Step", "parse_blocks", "projects_of"]

#: Block languages that are code or commands: each must be claimed by a doctest comment.
RUNNABLE_LANGUAGES = frozenset({"python", "py", "sh", "bash", "shell", "console", "toml", "ini"})

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)(?P<lang>[\w+-]*)\s*$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*doctest:(?P<body>.*?)-->\s*$")


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    directive: dict[str, str] | None

    @property
    def where(self) -> str:
        return f"{self.doc.name}:{self.line}"


def _parse_directive(body: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for word in shlex.split(body):
        key, _, value = word.partition("=")
        fields[key] = value
    return fields


def parse_blocks(doc: Path) -> list[Block]:
    lines = doc.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        directive_line = lines[index - 1] if index > 0 else ""
        directive = _DIRECTIVE.match(directive_line)
        indent = len(opening["indent"])
        body: list[str] = []
        end = index + 1
        while end < len(lines) and lines[end].strip() != opening["fence"]:
            body.append(lines[end][indent:] if lines[end][:indent].isspace() else lines[end])
            end += 1
        blocks.append(
            Block(
                doc=doc,
                line=index + 1,
                lang=opening["lang"].lower(),
                text="\n".join(body) + "\n",
                directive=_parse_directive(directive["body"]) if directive else None,
            )
        )
        index = end + 1
    return blocks


@dataclass(frozen=True)
class Step:
    """One thing to do in a project: write a file, run a command, or check output."""

    kind: str  # "file" | "run" | "output"
    block: Block

    @property
    def directive(self) -> dict[str, str]:
        assert self.block.directive is not None
        return self.block.directive


@dataclass
class Project:
    doc: Path
    name: str
    steps: list[Step] = field(default_factory=list)
    requires: set[str] = field(default_factory=set)
    base: str | None = None

    @property
    def id(self) -> str:
        return f"{self.doc.name}::{self.name}"


def projects_of(docs: list[Path]) -> list[Project]:
    """Every project the docs build, in document order, each with its steps."""
    projects: dict[tuple[Path, str], Project] = {}
    for doc in docs:
        for block in parse_blocks(doc):
            directive = block.directive
            if directive is None or "project" not in directive:
                continue
            key = (doc, directive["project"])
            project = projects.setdefault(key, Project(doc, directive["project"]))
            if "requires" in directive:
                project.requires.add(directive["requires"])
            if "base" in directive:
                project.base = directive["base"]
            if "file" in directive:
                project.steps.append(Step("file", block))
            elif "run" in directive:
                project.steps.append(Step("run", block))
            elif "output" in directive:
                project.steps.append(Step("output", block))
            else:
                raise ValueError(f"{block.where}: doctest comment names no file, run or output")
    return list(projects.values())
