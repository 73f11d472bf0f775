"""Reading a manifest file as kubectl reads it, so that `isoflop validate` and `kubectl apply`
see the same objects.

kubectl decodes YAML with sigs.k8s.io/yaml (go-yaml v2's scalars, then JSON for the server):

- the file: UTF-8, or UTF-16 or UTF-8 with a byte-order mark (cli-runtime's BOM override);
  several documents split at `---`, empty ones skipped, and every list flattened into its
  items (`kind: List` of any apiVersion, `ScalingSweepList`), so each object is applied (and
  here validated) on its own;
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
- explicit tags as go-yaml v2 resolves them: `!!int`, `!!float`, `!!bool`, `!!null` and
  `!!timestamp` take only what they name (`!!float 3` is 3, `!!int 1e3` and `!!bool maybe` are
  refused, as kubectl refuses the file), `!!str` and unknown tags (`!foo 3`) give the text,
  `!!binary` its decoded bytes as text;
- maps as go-yaml v2 builds them: keys in order, each `<<` merging its map (or its maps, the
  first winning) over the keys before it, a later key over everything before; keys that are not
  strings written as JSON's (`8` "8", `y` "true", `1e3` "1000"; a null key is refused); an
  anchor may be defined again (later aliases take the new one); aliasing refused past go-yaml's
  ratio (an alias bomb);
- what the server does on create: a field set to null is dropped (its default then applies),
  and a manifest's `status` is dropped (the status subresource is the operator's).

`objects(text)` gives the objects and, for each, the notes on what was dropped.
"""

from __future__ import annotations

import base64
import binascii
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


def go_key(key: Any) -> str:
    """A map key as sigs.k8s.io/yaml writes it into JSON (go-yaml v2's value, then Go's
    formatting: a float as a 32-bit %g); a key JSON cannot hold (null, uint64, a list) refused."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int) and -INT64 <= key < INT64:
        return str(key)
    if isinstance(key, float):
        return _float32_g(key)
    what = "null" if key is None else f"{type(key).__name__} {key!r}"
    raise ValueError(f"a map key cannot be {what} (JSON keys are strings)")


def _float32_g(value: float) -> str:
    """strconv.FormatFloat(value, 'g', -1, 32): the float32's shortest digits, written %e for
    an exponent below -4 or from 6 on (1e-05, 1e+06), plainly between (1000, 0.001)."""
    import numpy as np  # only for a float key, which few manifests have

    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    if math.isnan(value):
        return ".nan"
    single = np.float32(value)
    scientific = np.format_float_scientific(single, unique=True, trim="-", exp_digits=2)
    exponent = int(scientific.rsplit("e", 1)[1])
    if exponent < -4 or exponent >= 6:
        return scientific
    return np.format_float_positional(single, unique=True, trim="-")


# go-yaml v2's resolveMap: the plain spellings it looks up before anything else
_MAPPED: dict[str, tuple[str, Any]] = {
    **dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "on", "On", "ON"), ("bool", True)),
    **dict.fromkeys(("true", "True", "TRUE"), ("bool", True)),
    **dict.fromkeys(("n", "N", "no", "No", "NO", "off", "Off", "OFF"), ("bool", False)),
    **dict.fromkeys(("false", "False", "FALSE"), ("bool", False)),
    **dict.fromkeys(("", "~", "null", "Null", "NULL"), ("null", None)),
    **{w: ("float", v) for w, v in _SPECIAL.items()},
    "<<": ("merge", "<<"),
}
_TIMESTAMP = re.compile(
    r"^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}"
    r"(([Tt]| +)[0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}(\.[0-9]+)?(Z|[-+][0-9]{1,2}(:[0-9]{2})?)?)?$"
)
_RESOLVED_TAGS = ("bool", "int", "float", "null", "timestamp")


def go_resolve(text: str, timestamps: bool) -> tuple[str, Any]:
    """(tag, value) go-yaml v2 reads `text` as, untagged (its resolve with no tag)."""
    if text in _MAPPED:
        return _MAPPED[text]
    if text[:1] == ".":
        return ("float", float(text)) if _FLOAT.match(text) else ("str", text)
    if text[:1] in "+-0123456789" and text:
        if timestamps and _TIMESTAMP.match(text):
            return "timestamp", text
        value = go_scalar(text)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "str", text
        return ("int" if isinstance(value, int) else "float"), value
    return "str", text


def _explicit(tag: str, text: str) -> Any:
    """A scalar with an explicit standard tag, as go-yaml v2 decodes it (or refuses it)."""
    got, value = go_resolve(text, timestamps=tag == "timestamp")
    if got == tag:
        return value
    if tag == "float" and got == "int":
        return float(value)
    raise ValueError(f"cannot decode !!{got} `{text}` as a !!{tag}")


def _allowed_alias_ratio(decodes: int) -> float:
    """go-yaml v2's allowedAliasRatio: 99% up to 400,000 decodes, 10% from 4,000,000."""
    low, high = 400_000, 4_000_000
    if decodes <= low:
        return 0.99
    if decodes >= high:
        return 0.10
    return 0.99 - 0.89 * (decodes - low) / (high - low)


class Loader(yaml.SafeLoader):
    """A safe loader that reads as go-yaml v2 (the module's docstring): its implicit tags for
    plain scalars, its explicit tags, its maps and merge keys, its anchors and aliasing limit."""

    def compose_document(self) -> Any:
        self.decodes, self.aliased, self.frames = 0, 0, [0]
        self.sizes: dict[int, int] = {}  # an anchored node's size with its aliases expanded
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            self._count_alias(self.sizes.get(id(node), 1), node)
            return node
        # go-yaml lets a document define an anchor again; later aliases take the latest
        anchor = self.peek_event().anchor  # type: ignore[no-untyped-call]
        if anchor is not None:
            self.anchors.pop(anchor, None)
        self.decodes += 1
        self.frames.append(0)
        node = super().compose_node(parent, index)
        size = 1 + self.frames.pop()
        self.frames[-1] += size
        if anchor is not None:
            self.sizes[id(node)] = size
        return node

    def _count_alias(self, size: int, node: Any) -> None:
        """go-yaml decodes an alias's node again at each use, and refuses a document most of
        whose decoding is aliases (its allowedAliasRatio): the bomb a few lines can hold."""
        self.decodes += 1 + size
        self.aliased += size
        self.frames[-1] += 1 + size
        if (
            self.aliased > 100
            and self.decodes > 1000
            and self.aliased / self.decodes > _allowed_alias_ratio(self.decodes)
        ):
            raise yaml.composer.ComposerError(
                None, None, "document contains excessive aliasing", node.start_mark
            )

    def flatten_mapping(self, node: Any) -> None:
        pass  # merges are go-yaml's, in order (construct_mapping)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(
                None, None, f"expected a map, found {node.id}", node.start_mark
            )
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else None
                for source in reversed(merged) if merged is not None else [value_node]:
                    out.update(self.construct_mapping(source, deep=True))
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                key = go_key(key)
            except (ValueError, TypeError) as err:
                raise yaml.constructor.ConstructorError(
                    None, None, str(err), key_node.start_mark
                ) from None
            out[key] = self.construct_object(value_node, deep=deep)
        return out


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


def _go_number(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    return go_scalar(str(loader.construct_scalar(node)))  # type: ignore[arg-type]


def _tagged(tag: str) -> Callable[[yaml.SafeLoader, yaml.Node], Any]:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        try:
            return _explicit(tag, str(loader.construct_scalar(node)))  # type: ignore[arg-type]
        except ValueError as err:
            raise yaml.constructor.ConstructorError(None, None, str(err), node.start_mark) from None

    return construct


def _binary(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    text = "".join(str(loader.construct_scalar(node)).split())  # type: ignore[arg-type]
    try:
        return base64.b64decode(text, validate=True).decode("utf-8", errors="replace")
    except binascii.Error:
        raise yaml.constructor.ConstructorError(
            None, None, "!!binary value contains invalid base64 data", node.start_mark
        ) from None


def _other(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    """A tag go-yaml does not resolve (`!foo`, `!!merge` on a value): the node as it is."""
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]


for _tag in _RESOLVED_TAGS:
    Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _tagged(_tag))
Loader.add_constructor("tag:yaml.org,2002:binary", _binary)
Loader.add_constructor(NUMBER, _go_number)
for _tag in ("set", "omap", "pairs"):  # not go-yaml's: the map or list as written
    Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _other)
Loader.add_constructor(None, _other)


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
    """A list kubectl expands: `kind: List` of any apiVersion, or our own list kind."""
    if not isinstance(doc, dict) or not doc.get("apiVersion"):
        return False
    return doc.get("kind") == "List" or (
        doc.get("kind") == "ScalingSweepList" and doc.get("apiVersion") == "isoflop.dev/v1alpha1"
    )


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
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):  # Go decodes a null into a map of strings as ""
        metadata = dict(metadata)
        for key in ("labels", "annotations"):
            if isinstance(metadata.get(key), dict):
                metadata[key] = {k: "" if v is None else v for k, v in metadata[key].items()}
        obj = {**obj, "metadata": metadata}
    obj, nulls = prune_nulls(obj, known)
    notes += [f"{p}: null (the server drops it; the default applies)" for p in nulls]
    return Document(obj, where, notes)


def objects(text: str, known: Known = lambda path: True) -> list[Document]:
    """Every object of a manifest file, as kubectl applies them and the server creates them
    (`known` tells the fields of the schema from keys it would refuse)."""
    return [as_created(obj, where, known) for where, obj in flatten(list(load_all(text)))]
