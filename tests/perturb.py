"""A second corpus, written apart from tests/corpus.py: manifest *files* made by perturbing the
text of the paper examples (not the quickstart) as a user edits YAML by hand.

tests/corpus.py breaks parsed manifests against the schema; this one changes how a value or a
file is written, where kubectl's reading and Python's used to differ: every scalar line of the
example rewritten in each YAML spelling that could mean something else (null, ~, octal, 0o, hex,
sexagesimal, y/n/on/off, an integer past 64 bits, a float for an integer, a quoted number, an
exponent), and the whole file wrapped the ways kubectl reads (byte-order marks, UTF-16, CRLF, a
v1 List, several documents, a status block, a leading separator). Valid or not, `isoflop
validate` must read each file as kubectl hands it to the server: tests/e2e/test_corpus.py
compares validate's verdict and spec with what the server stores and the operator then parses.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ("paper-in-context.yaml", "paper-cross-attention.yaml")

# "  key: value  # comment" with a plain scalar value (not a flow list, not a block)
_SCALAR_LINE = re.compile(
    r"^(?P<indent>\s*(- )?)(?P<key>[A-Za-z0-9]+): (?P<value>[^\[\]{}#\s][^#]*?)(?P<rest>\s*(#.*)?)$"
)


def spellings(value: str) -> Iterator[tuple[str, str]]:
    """(what, text) other ways to write a scalar, each read differently by some YAML reader."""
    yield "null", "null"
    yield "~", "~"
    yield "empty", ""
    yield "quoted", f'"{value}"'
    if re.fullmatch(r"[0-9]+", value):
        n = int(value)
        yield "0o octal", f"0o{n:o}"
        yield "leading-0 octal", f"0{n:o}"
        yield "hex", f"0x{n:x}"
        yield "a float", f"{n}.0"
        yield "an exponent", f"{n}e0"
        yield "underscores", f"{n:_}"
        yield "sexagesimal", f"{n // 60}:{n % 60:02d}"
        yield "past 64 bits", str(n) + "0" * 20
        yield "leading 0 and 8", f"0{n}8"
    elif value in ("true", "false"):
        yield "y/n", "y" if value == "true" else "n"
        yield "on/off", "on" if value == "true" else "off"
        yield "Yes/No", "Yes" if value == "true" else "No"
        yield "upper case", value.upper()
    else:
        yield "1:30", "1:30"
        yield "a date", "2026-01-02"
    # explicit tags, each resolved by go-yaml v2 its own way (or the file refused)
    for tag in ("!!int", "!!float", "!!str", "!!bool", "!!null", "!!timestamp", "!local"):
        yield f"tagged {tag}", f"{tag} {value}"
    yield "tagged !!int and empty", "!!int"
    yield "tagged !!binary", "!!binary " + base64.b64encode(value.encode()).decode()
    yield "tagged !!binary, not base64", "!!binary a*b"


# Whole-file edits of the structure go-yaml v2 builds: merge keys in their order, keys that are
# not strings, anchors defined twice, aliasing past its limit. Each (what, old, new) replaces a
# line of the example; the metadata's anchors are what the spec's maps then merge.
_LABELS = "  labels: &a {team: vision, tier: '1'}\n  annotations: &b {tier: '2', note: x}\n"
_SELECTOR = "    nodeSelector:\n      cloud.google.com/gke-accelerator: nvidia-h100-80gb\n"
_TOLERATION = "      - key: nvidia.com/gpu\n        operator: Exists\n        effect: NoSchedule\n"
STRUCTURES: tuple[tuple[str, str, str], ...] = (
    ("merge keys in a list, a key before them", _SELECTOR,
     "    nodeSelector: {team: other, <<: [*a, *b]}\n"),
    ("merge keys, a key after them", _SELECTOR, "    nodeSelector: {<<: [*b, *a], team: other}\n"),
    ("two merge keys in one map", _SELECTOR, "    nodeSelector: {<<: *a, <<: *b}\n"),
    ("a merge key in a list item", _TOLERATION,
     "      - &t {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}\n"
     "      - {effect: NoExecute, <<: *t, key: other}\n"),
    ("a merge key of a scalar", _SELECTOR, "    nodeSelector: {<<: 3}\n"),
    ("a toleration for 300 s", _TOLERATION,
     "      - {key: gpu, operator: Exists, effect: NoExecute, tolerationSeconds: 300}\n"),
    ("a toleration for -1 s", _TOLERATION,
     "      - {key: a, operator: Exists, effect: NoExecute, tolerationSeconds: -1}\n"),
    ("keys that are not strings", _SELECTOR,
     "    nodeSelector: {8: a, y: b, 0x10: c, 1e3: d, 1.5: e, 010: f, n: g}\n"),
    ("keys that are not strings, two the same", _SELECTOR, "    nodeSelector: {y: a, on: b}\n"),
    ("a null key", _SELECTOR, "    nodeSelector: {~: a}\n"),
    ("a key of 2^64 - 1", _SELECTOR, "    nodeSelector: {18446744073709551615: a}\n"),
    ("a list as a key", _SELECTOR, "    nodeSelector: {[a]: b}\n"),
    ("an anchor defined again before its alias", _SELECTOR,
     "    nodeSelector: *a\n"),
    ("a null label", "  labels: &a {team: vision, tier: '1'}\n", "  labels: {team: null}\n"),
    ("an alias bomb", _SELECTOR,
     "    nodeSelector: {}\n    x: &a [&b [&c [&d [&e [&f [q, q, q, q, q, q, q, q, q], *f, *f, *f,"
     " *f, *f, *f, *f, *f], *e, *e, *e, *e, *e, *e, *e, *e], *d, *d, *d, *d, *d, *d, *d, *d],"
     " *c, *c, *c, *c, *c, *c, *c, *c], *b, *b, *b, *b, *b, *b, *b, *b]\n"),
    ("many aliases, well within the limit", _SELECTOR,
     "    nodeSelector: {team: 'x', a: *x, b: *x, c: *x, d: *x, e: *x}\n"),
)  # fmt: skip


def _with_name(text: str, name: str) -> str:
    return re.sub(r"(?m)^  name: [a-z-]+$", f"  name: {name}", text, count=1)


def perturbed_files() -> Iterator[tuple[str, str, bytes]]:
    """(what, object name, file bytes): every perturbation, each sweep named uniquely so the
    server's answer can be matched to its file."""
    i = 0

    def name() -> str:
        nonlocal i
        i += 1
        return f"p{i:04d}"

    for example in EXAMPLES:
        text = (ROOT / "examples" / example).read_text()
        lines = text.splitlines()
        for n, line in enumerate(lines):
            m = _SCALAR_LINE.match(line)
            if m is None or m["key"] in ("apiVersion", "kind", "name"):
                continue
            for what, spelled in spellings(m["value"].strip()):
                changed = f"{m['indent']}{m['key']}: {spelled}{m['rest']}".rstrip()
                edited = "\n".join([*lines[:n], changed, *lines[n + 1 :]]) + "\n"
                sweep = name()
                yield f"{example} {m['key']} {what}", sweep, _with_name(edited, sweep).encode()
        for what, codec, mark in (
            ("UTF-8 with a byte-order mark", "utf-8", b"\xef\xbb\xbf"),
            ("UTF-16LE with a byte-order mark", "utf-16-le", b"\xff\xfe"),
            ("UTF-16BE with a byte-order mark", "utf-16-be", b"\xfe\xff"),
        ):
            sweep = name()
            yield f"{example} {what}", sweep, mark + _with_name(text, sweep).encode(codec)
        sweep = name()
        yield f"{example} CRLF", sweep, _with_name(text, sweep).replace("\n", "\r\n").encode()
        sweep = name()
        yield f"{example} after ---", sweep, ("---\n" + _with_name(text, sweep)).encode()
        sweep = name()
        status = "status:\n  phase: Succeeded\n  progress: 9/9\n"
        yield f"{example} with a status", sweep, (_with_name(text, sweep) + status).encode()
        sweep = name()
        body = _with_name(text, sweep).replace("\n", "\n    ")
        listed = f"apiVersion: v1\nkind: List\nitems:\n  - {body}\n"
        yield f"{example} in a v1 List", sweep, listed.encode()
        first, second = name(), name()
        both = f"{_with_name(text, first)}\n---\n{_with_name(text, second)}"
        yield f"{example} two documents", f"{first},{second}", both.encode()
        for api_version, kind in (
            ("apps/v1", "List"),
            ("isoflop.dev/v1alpha1", "ScalingSweepList"),
            ("isoflop.dev/v1alpha1", "List"),
            ("", "List"),  # kubectl refuses a list with no apiVersion
        ):
            sweep = name()
            body = _with_name(text, sweep).replace("\n", "\n    ")
            head = f"apiVersion: {api_version}\n" if api_version else ""
            listed = f"{head}kind: {kind}\nitems:\n  - {body}\n"
            yield f"{example} in a {api_version} {kind}", sweep, listed.encode()
        labelled = text.replace("  name: ", _LABELS + "  name: ", 1)
        for what, old, new in STRUCTURES:
            if old not in labelled:
                continue
            sweep = name()
            edited = labelled.replace(old, new, 1)
            if what == "an anchor defined again before its alias":
                edited = edited.replace("&b {", "&a {", 1)  # the alias *a now means the second
            if "*x" in new:
                edited = edited.replace("team: vision", "team: &x vision", 1)
            yield f"{example} {what}", sweep, _with_name(edited, sweep).encode()
