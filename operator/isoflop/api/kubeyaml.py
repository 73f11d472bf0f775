"""Reading a manifest file as kubectl reads it, so that `isoflop validate` and `kubectl apply`
see the same objects.

kubectl decodes YAML with sigs.k8s.io/yaml (go-yaml v2's scalars, then JSON for the server):

- the file: UTF-8, or UTF-16 or UTF-8 with a byte-order mark (cli-runtime's BOM override);
  several documents split at `---`, empty ones skipped, and every `List` flattened into its
  items, so each object is applied (and here validated) on its own;
- the scalars of plain (unquoted) values, which are not YAML 1.1's nor 1.2's:
    null      ~, null, Null, NULL and nothing at all
    booleans  y, Y, yes, Yes, YES, on, On, ON, true, True, TRUE and their negatives
              (n, N, no, No, NO, off, Off, OFF, false, False, FALSE)
    integers  Go's strconv.ParseInt(s, 0, 64) after dropping every `_`: 42, +42, -42, 0x2a,
              0o52, 052 (a leading 0 is octal), 0b101010; up to 2^64 - 1
    floats    [-+](digits[.digits] | .digits)[e[-+]digits], .inf, -.inf, .nan; so an integer
              beyond 2^64 - 1 is a float (1e30 written out), and 08 is 8.0
    strings   everything else: 1:30 (no sexagesimal), 2026-01-02 (go-yaml v2.4 decodes a
              timestamp into a string as written, the API server shows)
- what the server does on create: a field set to null is dropped (its default then applies),
  and a manifest's `status` is dropped (the status subresource is the operator's).

`objects(text)` gives the objects and, for each, the notes on what was dropped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

BOMS = (
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)


def decode(data: bytes) -> str:
    """The text of a file as kubectl reads it: a byte-order mark names UTF-8 or UTF-16 (and is
    dropped); without one, UTF-8, an invalid byte read as U+FFFD."""
    for mark, codec in BOMS:
        if data.startswith(mark):
            return data[len(mark) :].decode(codec, errors="replace")
    return data.decode("utf-8", errors="replace")


NUMBER = "tag:isoflop.dev,2026:go-number"  # a plain scalar Go may read as a number
_INT = re.compile(r"^[-+]?(0[xX][0-9a-fA-F]+|0[bB][01]+|0[oO][0-7]+|0[0-7]*|[1-9][0-9]*)$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_SPECIAL = {
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
}
INT64 = 2**63


def go_int(text: str) -> int | None:
    """strconv.ParseInt(text, 0, 64), else ParseUint (no sign); None where both refuse."""
    if not _INT.match(text):
        return None
    body = text.lstrip("+-")
    base = {"x": 16, "X": 16, "o": 8, "O": 8, "b": 2, "B": 2}.get(body[1:2], 10)
    if base != 10:
        value = int(body[2:], base)
    elif len(body) > 1 and body[0] == "0":
        value = int(body[1:], 8)  # a leading 0: octal (08 is no integer: a float below)
    else:
        value = int(body)
    value = -value if text[0] == "-" else value
    if -INT64 <= value < INT64 or (text[0] not in "+-" and value < 2**64):
        return value
    return None


def go_scalar(text: str) -> Any:
    """A plain scalar starting with a digit, a sign or '.', as go-yaml v2 resolves it."""
    if text in _SPECIAL:
        return _SPECIAL[text]
    if text[0] == ".":  # strconv.ParseFloat as it is
        return float(text) if _FLOAT.match(text) else text
    plain = text.replace("_", "")
    if (value := go_int(plain)) is not None:
        return value
    if _FLOAT.match(plain):
        number = float(plain)
        return number if math.isfinite(number) else text  # out of range: Go keeps the string
    return text


class Loader(yaml.SafeLoader):
    """A safe loader with go-yaml v2's implicit tags for plain scalars (the module's docstring)."""


Loader.yaml_implicit_resolvers = {}
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(
        r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$"
    ),
    list("yYnNtTfFoO"),
)
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
Loader.add_implicit_resolver(NUMBER, re.compile(r"^[-+.0-9]"), list("-+.0123456789"))
Loader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^<<$"), ["<"])


def _go_bool(loader: yaml.SafeLoader, node: yaml.Node) -> bool:
    return str(loader.construct_scalar(node)).lower() in ("y", "yes", "on", "true")  # type: ignore[arg-type]


def _go_number(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    return go_scalar(str(loader.construct_scalar(node)))  # type: ignore[arg-type]


Loader.add_constructor("tag:yaml.org,2002:bool", _go_bool)
Loader.add_constructor(NUMBER, _go_number)


def load(text: str) -> Any:
    """One YAML document, its scalars as kubectl reads them."""
    return yaml.load(text, Loader=Loader)


def load_all(text: str) -> Iterator[Any]:
    return yaml.load_all(text, Loader=Loader)


@dataclass
class Document:
    """One object of a file, as the server would store it on create, and what was dropped."""

    obj: Any
    where: str  # "document 2", "document 1, item 3"
    dropped: list[str] = field(default_factory=list)


def flatten(docs: list[Any]) -> Iterator[tuple[str, Any]]:
    """Every object of the documents, a List's items in its place (as kubectl applies them)."""
    for i, doc in enumerate(docs, 1):
        if doc is None:
            continue
        if _is_list(doc):
            for j, item in enumerate(doc.get("items") or [], 1):
                yield f"document {i}, item {j}", item
        else:
            yield f"document {i}", doc


def _is_list(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("kind") == "List" and doc.get("apiVersion") == "v1"


Known = Callable[[tuple[str, ...]], bool]  # whether a key (its path) is a field of the schema


def prune_nulls(obj: Any, known: Known, path: tuple[str, ...] = ()) -> tuple[Any, list[str]]:
    """The object without the fields set to null (the server drops them; a default applies),
    and their paths. A key the schema does not know is kept for validation to refuse by name
    (the server's strict field validation refuses it, null or not), and so is a null item of a
    list."""
    dropped: list[str] = []
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            where = (*path, str(key))
            if value is None and known(where):
                dropped.append(".".join(where))
                continue
            out[key], below = prune_nulls(value, known, where)
            dropped += below
        return out, dropped
    if isinstance(obj, list):
        items = []
        for value in obj:
            item, below = prune_nulls(value, known, path)
            items.append(item)
            dropped += below
        return items, dropped
    return obj, dropped


def as_created(obj: Any, where: str, known: Known) -> Document:
    """What the server stores of an object it creates: no status, no fields set to null."""
    if not isinstance(obj, dict):
        return Document(obj, where)
    notes = []
    if "status" in obj:
        obj = {k: v for k, v in obj.items() if k != "status"}
        notes.append("status (the server drops a manifest's status on create)")
    obj, nulls = prune_nulls(obj, known)
    notes += [f"{p}: null (the server drops it; the default applies)" for p in nulls]
    return Document(obj, where, notes)


def objects(text: str, known: Known = lambda path: True) -> list[Document]:
    """Every object of a manifest file, as kubectl applies them and the server creates them
    (`known` tells the fields of the schema from keys it would refuse)."""
    return [as_created(obj, where, known) for where, obj in flatten(list(load_all(text)))]
