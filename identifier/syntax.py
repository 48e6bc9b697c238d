"""Identifier syntax (the README's "Identifiers"): `PREFIX/SUFFIX`, checked before anything is sent.

PREFIX: dot-separated numeric segments (`88.118.8`: country or system, industry, enterprise),
at most 64 characters. SUFFIX: 1-128 characters of letters, digits and `-_.:`, not starting or
ending with `.`. The whole at most 255 characters. ASCII compares case-insensitively, so the
canonical key of an identifier is its lower-case form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX_MAX = 64
SUFFIX_MAX = 128
HANDLE_MAX = 255
_PREFIX = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_SUFFIX_CHARS = re.compile(r"[A-Za-z0-9\-_.:]+")


class IdentifierError(ValueError):
    """A malformed identifier; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Identifier:
    prefix: str
    suffix: str

    def __str__(self) -> str:
        return f"{self.prefix}/{self.suffix}"

    @property
    def key(self) -> str:
        """The form two equal identifiers share (ASCII is compared case-insensitively)."""
        return str(self).lower()


def check_prefix(prefix: str) -> str:
    if not prefix:
        raise IdentifierError("the prefix is empty")
    if len(prefix) > PREFIX_MAX:
        raise IdentifierError(f"the prefix is {len(prefix)} characters; at most {PREFIX_MAX}")
    if not _PREFIX.fullmatch(prefix):
        raise IdentifierError(f"prefix {prefix!r} is not dot-separated digits such as 88.118.8")
    return prefix


def parse(text: str) -> Identifier:
    """`PREFIX/SUFFIX` -> Identifier, or IdentifierError naming the first problem."""
    if not isinstance(text, str):
        raise IdentifierError("an identifier is a string")
    if len(text) > HANDLE_MAX:
        raise IdentifierError(f"the identifier is {len(text)} characters; at most {HANDLE_MAX}")
    prefix, slash, suffix = text.partition("/")
    if not slash:
        raise IdentifierError(f"{text!r} has no '/': an identifier is PREFIX/SUFFIX, e.g. 88.118.8/SN-000123")
    check_prefix(prefix)
    if not suffix:
        raise IdentifierError("the suffix after '/' is empty")
    if len(suffix) > SUFFIX_MAX:
        raise IdentifierError(f"the suffix is {len(suffix)} characters; at most {SUFFIX_MAX}")
    if not _SUFFIX_CHARS.fullmatch(suffix):
        bad = next(c for c in suffix if not _SUFFIX_CHARS.fullmatch(c))
        raise IdentifierError(f"the suffix contains {bad!r}; allowed are letters, digits and -_.:")
    if suffix.startswith(".") or suffix.endswith("."):
        raise IdentifierError("the suffix starts or ends with '.'")
    return Identifier(prefix, suffix)
