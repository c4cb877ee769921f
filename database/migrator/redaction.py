"""Keep passwords out of everything the runner shows: URIs, conninfo strings, error texts."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit, urlunsplit

_KEYWORD_PASSWORD = re.compile(r"(?<![?&])(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&\s]*", re.IGNORECASE)
# scheme://user:password@ inside any text (a URI quoted in an error message)
_URI_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)[^@\s/]*(@)", re.IGNORECASE)
# Shorter secrets are only scrubbed where they appear as a password (above): as a free-standing
# word they would turn innocent text into nonsense ("Servname not su***orted" for password "p").
MIN_SCRUBBED_SECRET_LENGTH = 4


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


def scrub(text: str, *secrets: str | None, shown: Iterable[str] = ()) -> str:
    """Remove each secret from `text` where it appears as a secret, not where it is an innocent word.

    Always: the password part of any URI (`://user:***@`) or `password=***` in the text. Then the
    secret itself, as a whole word (not inside a longer word), when it is at least
    MIN_SCRUBBED_SECRET_LENGTH characters long and is not also a value that is shown anyway
    (`shown`: the user, host or database name, e.g. user and password both `webapp`).
    """
    text = _URI_USERINFO.sub(r"\1***\2", text)
    text = _QUERY_PASSWORD.sub(r"\1***", text)
    text = _KEYWORD_PASSWORD.sub(r"\1***", text)
    visible = set(shown)
    for secret in secrets:
        if not secret or len(secret) < MIN_SCRUBBED_SECRET_LENGTH or secret in visible:
            continue
        text = re.sub(rf"(?<![\w]){re.escape(secret)}(?![\w])", "***", text)
    return text


def scrub_document(value: object, *secrets: str | None) -> object:
    """`scrub` every string in a JSON-like document (dicts, lists), keys left as they are."""
    if isinstance(value, str):
        return scrub(value, *secrets)
    if isinstance(value, dict):
        return {key: scrub_document(item, *secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [scrub_document(item, *secrets) for item in value]
    return value


def visible_parts(conninfo: str) -> tuple[str, ...]:
    """User, host and database name of a conninfo: shown in every redacted target anyway."""
    if "://" in conninfo:
        parts = urlsplit(conninfo)
        values = (parts.username, parts.hostname, parts.path.lstrip("/"))
        return tuple(unquote(value) for value in values if value)
    pairs = re.findall(r"\b(user|host|dbname)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", conninfo, re.IGNORECASE)
    return tuple(value.strip("'") for _, value in pairs)
