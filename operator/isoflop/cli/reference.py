"""The command-line reference: every command of `isoflop` and `isoflop-train` with every option,
its default and its help, generated from the parsers themselves (docs/hooks.py renders it; a
test fails when an option has no help)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from isoflop import cli
from isoflop_trainer import cli as train_cli


def programs() -> dict[str, argparse.ArgumentParser]:
    return {"isoflop": cli.parser(), "isoflop-train": train_cli.parser()}


def commands(root: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def options(command: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in command._actions:
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            yield action


def undocumented() -> list[str]:
    """`program command option` for every option (or argument) without help."""
    return [
        f"{program} {name} {action.option_strings[0] if action.option_strings else action.dest}"
        for program, root in programs().items()
        for name, command in commands(root)
        for action in options(command)
        if not action.help
    ]


def _summary(root: argparse.ArgumentParser, name: str) -> str:
    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if choice.dest == name:
                    return choice.help or ""
    return ""


def _default(action: argparse.Action) -> str:
    if action.default in (None, False, [], argparse.SUPPRESS) or action.option_strings == []:
        return ""
    return f"`{action.default}`"


def markdown() -> str:
    out = ["# Command-line reference", "",
           "Generated from the parsers of `isoflop` and `isoflop-train`; `--help` on any "
           "command prints the same.", ""]  # fmt: skip
    for program, root in programs().items():
        out += [f"## `{program}`", "", root.description or "", ""]
        for name, command in commands(root):
            out += [f"### `{program} {name}`", "", _summary(root, name), ""]
            out += ["```", command.format_usage().strip().removeprefix("usage: "), "```", ""]
            out += ["| option | default | what it does |", "|---|---|---|"]
            for action in options(command):
                flag = ", ".join(action.option_strings) or action.dest.upper()
                text = " ".join((action.help or "").split()).replace("%%", "%").replace("|", "\\|")
                out.append(f"| `{flag}` | {_default(action)} | {text} |")
            out.append("")
    return "\n".join(out)
