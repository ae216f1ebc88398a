"""Keep credentials out of telemetry and the store.

Provider tokens, API keys and URLs with credentials can hide in backend options, service
objects, argv and environment. Everything qobs records as free text goes through here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED]"
_SECRET_KEY = re.compile(r"(token|api[_-]?key|apikey|secret|passw(or)?d|credential|auth|bearer|private[_-]?key)",
                         re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:[a-z0-9_-]*(?:token|key|secret|password|passwd|signature|sig|auth)[a-z0-9_-]*))=(?P<val>[^&;#\s]*)",
    re.IGNORECASE)
_ASSIGNMENT = re.compile(
    r"(?P<key>(?:--?)?[a-z0-9_.-]*(?:token|api[_-]?key|apikey|secret|password|passwd|credential)[a-z0-9_.-]*)"
    r"(?P<sep>[=:]\s*|\s+)(?P<val>\S+)", re.IGNORECASE)
_BEARER = re.compile(r"(bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def redact_text(text: str) -> str:
    """Redact credentials inside a free-text string (URLs, ``key=value``, bearer headers)."""
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    text = _SECRET_QUERY.sub(lambda m: f"{m['key']}={REDACTED}", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    return _ASSIGNMENT.sub(lambda m: f"{m['key']}{m['sep']}{REDACTED}", text)


def redact_argv(argv: list[str]) -> list[str]:
    """Redact an argument vector: values after ``--token``-like flags and inline secrets."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        if arg.startswith("-") and "=" not in arg and is_secret_key(arg):
            out.append(arg)
            hide_next = True
            continue
        out.append(redact_text(arg))
    return out


def redact(value: Any, _depth: int = 0) -> Any:
    """Redact a value of any shape: mappings by key, strings by content, sequences item by item."""
    if _depth > 6:
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: (REDACTED if isinstance(k, str) and is_secret_key(k) and v not in (None, "")
                    else redact(v, _depth + 1)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v, _depth + 1) for v in value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return redact_text(str(value))
