"""What every part of the API shares: names, patterns, the error a user can cause, and the
base models (camelCase on the wire, strict where a user writes)."""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    JsonValue,
    model_validator,
)
from pydantic.alias_generators import to_camel

GROUP = "isoflop.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ScalingSweep"
PLURAL = "scalingsweeps"
SINGULAR = "scalingsweep"
SHORT_NAMES = ["sweep", "sweeps"]  # kubectl get sweep(s): it never pluralizes a short name

# Kubernetes quantity ("8", "500m", "64Gi") and DNS-1123 label patterns.
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
NAME_MAX_LENGTH = 40  # a sweep's name, with a trial's ID, must fit a Job name and a label value
NAME_RULE = (
    f"must be a DNS label (lower-case letters, digits and '-', starting and ending with a letter "
    f"or digit) of at most {NAME_MAX_LENGTH} characters"
)
# s3://BUCKET/PREFIX with a bucket S3 can name (3-63 lower-case letters, digits, '.', '-'); no
# control character anywhere, and no space in a procedural source's name
DATA_URI_PATTERN = (
    r"^(procedural://[^\s\x00-\x1f\x7f]*|file://[^\x00-\x1f\x7f]*"
    r"|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\x00-\x1f\x7f]*)?)$"
)
# where checkpoints go: an S3 prefix (as above) or a path on a shared volume
STORE_URI_PATTERN = (
    r"^(file:///[^\x00-\x1f\x7f]*|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\x00-\x1f\x7f]*)?)$"
)

# Kubernetes' own rules for what ends up in a pod (k8s.io/apimachinery validation): a label key
# (an optional DNS-subdomain prefix and '/', then a name of at most 63 characters), a label
# value, and an image reference as the kubelet parses it (distribution's reference grammar:
# [registry[:port]/]path[:tag][@digest]). RE2 syntax, for the CRD's patterns and CEL rules too.
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
LABEL_KEY_PATTERN = rf"^({_SUBDOMAIN}/)?{_LABEL_NAME}$"
LABEL_VALUE_PATTERN = rf"^({_LABEL_NAME})?$"
_HOST_LABEL = r"([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"{_HOST_LABEL}(\.{_HOST_LABEL})*(:[0-9]+)?"
_COMPONENT = r"[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*"
IMAGE_PATTERN = (
    rf"^({_HOST}/)?{_COMPONENT}(/{_COMPONENT})*(:[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
    r"(@[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
# an http(s) URL with a host (a name or an address, [IPv6] too), an optional port from 1 to
# 65535, and nothing a URL cannot hold as written (spaces, controls, NUL, DEL)
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
_URL_CHAR = r"[^\s\x00-\x1f\x7f]"
HTTP_URL_PATTERN = (
    rf"^https?://(\[[0-9A-Fa-f:.]+\]|[^\s\x00-\x1f\x7f/?#@:\[\]]+)(:{_PORT})?(/{_URL_CHAR}*)?$"
)
# What S3 forbids in a bucket name beyond the pattern's letters and length (its naming rules):
# the API server's CEL rules and validate's, on every s3:// field
S3_BUCKET_RULES: list[tuple[str, str]] = [
    (r"^s3://[^/]*\.\.", "an S3 bucket name has no two adjacent periods"),
    (r"^s3://[^/]*(\.-|-\.)", "an S3 bucket name has no period next to a hyphen"),
    (r"^s3://[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+(/|$)", "an S3 bucket name is not an IP address"),
    (r"^s3://(xn--|sthree-|amzn-s3-demo-)", "an S3 bucket name starts with none of xn--, "
     "sthree-, amzn-s3-demo-"),
    (r"^s3://[^/]*(-s3alias|--ol-s3|\.mrap|--x-s3|--table-s3)(/|$)", "an S3 bucket name ends "
     "with none of -s3alias, --ol-s3, .mrap, --x-s3, --table-s3"),
]  # fmt: skip

# What a pattern asks, in words: the sentence a refusal gives instead of the regular expression
PATTERN_RULES = {
    DATA_URI_PATTERN: "must be procedural://NAME, file:///PATH or s3://BUCKET/PREFIX, with a "
    "bucket name S3 allows (3-63 lower-case letters, digits, '.' and '-') and no control "
    "characters",
    QUANTITY_PATTERN: "must be a Kubernetes quantity such as 500m, 4 or 16Gi",
    LABEL_KEY_PATTERN: "must be a label key: an optional DNS-subdomain prefix and '/', then "
    "at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
    LABEL_VALUE_PATTERN: "must be a label value: empty, or at most 63 letters, digits, '-', "
    "'_' or '.', starting and ending with a letter or digit",
    IMAGE_PATTERN: "must be an image reference such as registry.example.com:5000/team/trainer"
    ":1.0 or name@sha256:DIGEST (lower-case path, no spaces)",
    HTTP_URL_PATTERN: "must be an http:// or https:// URL with a host, a port (if any) from 1 "
    "to 65535, and no spaces or control characters",
    STORE_URI_PATTERN: "must be s3://BUCKET/PREFIX, with a bucket name S3 allows (3-63 "
    "lower-case letters, digits, '.' and '-'), or file:///PATH, with no control characters",
}

# A CEL transition rule: the API server refuses changes to fields that define the sweep.
Immutable: dict[str, JsonValue] = {
    "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "is immutable"}]
}


def s3_bucket_problem(uri: str | None) -> str | None:
    """The S3 naming rule an s3:// URI's bucket breaks (S3_BUCKET_RULES); None if none."""
    return next((m for r, m in S3_BUCKET_RULES if uri and re.search(r, uri)), None)


def s3_bucket_rules() -> dict[str, Any]:
    """The same rules for the API server (a field's x-kubernetes-validations)."""
    return {
        "x-kubernetes-validations": [
            {"rule": f"!self.matches({json.dumps(r)})", "message": m} for r, m in S3_BUCKET_RULES
        ]
    }


class ManifestError(ValueError):
    """A manifest the user wrote is invalid; the message is one sentence naming the field."""


class Model(BaseModel):
    """Base: camelCase on the wire, snake_case in Python, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,  # a field's docstring is its description (CRD, docs)
    )

    def to_wire(self) -> dict[str, Any]:
        """JSON-ready dict with camelCase keys, unset optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class SpecModel(Model):
    """What a user writes: validated as strictly as the API server validates it (no "4" for 4,
    no "true" for true, no snake_case keys: parse_sweep reads aliases only)."""

    model_config = ConfigDict(strict=True)

    @model_validator(mode="before")
    @classmethod
    def _whole_numbers(cls, data: Any) -> Any:
        # JSON has one number type: the API server takes 4.0 for an integer, and so do we
        if not isinstance(data, Mapping):
            return data
        out = dict(data)
        for name, field in cls.model_fields.items():
            key = field.alias or name
            if key in out and _integer_kind(field.annotation) == "int":
                out[key] = _whole(out[key])
            elif (
                key in out
                and _integer_kind(field.annotation) == "list"
                and isinstance(out[key], list)
            ):
                out[key] = [_whole(v) for v in out[key]]
        return out


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _integer_kind(annotation: Any) -> str | None:
    """'int' for int and int | None, 'list' for a list of ints, else None."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is int:
        return "int"
    if origin is Annotated:
        return _integer_kind(args[0])
    if origin in (typing.Union, types.UnionType):
        return "int" if int in args else None
    if origin is list and args:
        return "list" if _integer_kind(args[0]) == "int" else None
    return None
