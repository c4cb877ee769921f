"""Keep passwords out of everything the runner shows: URIs, conninfo strings, error texts."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit, urlunsplit

_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)


def redact_conninfo(conninfo: str) -> str:
    """`postgresql://u:secret@h/db` -> `postgresql://u:***@h/db`; `password=x` -> `password=***`."""
    if "://" in conninfo:
        parts = urlsplit(conninfo)
        if parts.password is not None:
            host = parts.netloc.rsplit("@", 1)[1]
            user = parts.netloc.rsplit("@", 1)[0].split(":", 1)[0]
            parts = parts._replace(netloc=f"{user}:***@{host}")
        return _QUERY_PASSWORD.sub(r"\1***", urlunsplit(parts))
    return _KEYWORD_PASSWORD.sub(r"\1***", conninfo)


def password_of(conninfo: str) -> str | None:
    """The password a conninfo string carries, so error texts can be scrubbed of it."""
    if "://" in conninfo:
        parts = urlsplit(conninfo)
        if parts.password:
            return unquote(parts.password)
        query = re.search(r"[?&]password=([^&]*)", conninfo, re.IGNORECASE)
        return unquote(query.group(1)) if query else None
    match = _KEYWORD_PASSWORD.search(conninfo)
    return match.group(2).strip("'") if match else None


def scrub(text: str, *secrets: str | None) -> str:
    """Replace every occurrence of each secret in `text` with ***."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
