"""Every ``fedkd`` command in the README and the docs' code blocks is one the command accepts.

Each is parsed, not run: ``fedkd run``'s flags by its parser and its ``--set`` keys and values by
the run-config parser; another command's flags against its ``--help`` (an attack study's against
the study's). The lab notebook (``docs/notebook.md``) is a historical record and is left out.
A renamed flag or key, or a removed command, fails here (the README once said
``deploy_local --keys`` after the flag had gone).
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from experiments.attacks.cli import STUDIES
from fedkd.cli.commands import MODULES, load_command, run_parser
from fedkd.cli.run_config import parse_assignments
from fedkd.distill import teacher
from fedkd.fl.config import parse_run_config
from fedkd.models import registry as model_registry

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PAGES = [page for page in PAGES if page.name not in ("notebook.md", "configuration.md")]
SHELL = ("", "bash", "console", "sh", "shell")


def blocks(text: str) -> list[str]:
    """The shell code blocks of a Markdown text (fences tracked line by line)."""
    found, current, language = [], [], None
    for line in text.splitlines():
        fence = line.strip()
        if fence.startswith("```"):
            if language is None:
                language, current = fence[3:].strip(), []
            else:
                if language in SHELL:
                    found.append("\n".join(current))
                language = None
        elif language is not None:
            current.append(line)
    return found


def commands() -> list[tuple[str, str]]:
    """(page, command line) for every ``fedkd ...`` line of a code block, continuations joined."""
    found = []
    for page in PAGES:
        for block in blocks(page.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip().removeprefix("$ ").removeprefix(".venv/bin/")
                line = re.sub(r"^(\S+=\S+\s+)+", "", line)  # VAR=value fedkd ...
                line = line.split("&& ", 1)[-1]  # cd somewhere && fedkd ...
                if re.match(r"fedkd [a-z]", line) and "<" not in line and "..." not in line:
                    found.append((page.name, line))
    return found


def _help(argv: list[str]) -> str:
    module = load_command(argv[0])
    assert module is not None, f"fedkd {argv[0]}: no such command here"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        module.main([*argv[1:], "--help"])
    return out.getvalue()


def test_the_pages_have_commands_to_check() -> None:
    assert len(commands()) >= 20


@pytest.mark.parametrize(("page", "line"), commands())
def test_a_documented_command_is_accepted(page: str, line: str) -> None:
    argv = shlex.split(line, comments=True)[1:]
    command, rest = argv[0], argv[1:]
    if command == "run":
        try:
            args = run_parser().parse_args(rest)
        except SystemExit:
            pytest.fail(f"{page}: fedkd run rejects {line!r}")
        parse_run_config(parse_assignments(args.set or []))
        return
    assert command in MODULES, f"{page}: fedkd has no command {command!r}"
    scope = [command]
    if command == "attack":  # flags belong to the study named next
        assert rest[0] in (*STUDIES, "all"), f"{page}: no attack study {rest[0]!r}"
        scope.append(rest[0])
    text = _help(scope)
    for flag in (token.split("=", 1)[0] for token in rest if token.startswith("--")):
        assert flag in text, f"{page}: {flag} is not a flag of fedkd {' '.join(scope)}"


HOWTO = ROOT / "docs" / "models-and-teachers.md"


@pytest.mark.parametrize("index", range(2))
def test_the_howto_examples_run(
    index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The how-to's examples register a model and a teacher rule, and train with them."""
    text = HOWTO.read_text()
    examples = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert len(examples) == 2
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FEDKD_HOME", str(tmp_path / "home"))
    # the registrations end with the test (the generated docs list the registries' names)
    monkeypatch.setattr(model_registry, "_MODELS", dict(model_registry._MODELS))
    monkeypatch.setattr(teacher, "_TEACHER_RULES", dict(teacher._TEACHER_RULES))
    exec(compile(examples[index], f"{HOWTO.name}[{index}]", "exec"), {})  # noqa: S102
