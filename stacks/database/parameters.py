"""PostgreSQL parameters shared by both flavours (pure data)."""

from __future__ import annotations

# TLS only, and logs that explain slow statements, connections, lock waits and schema changes.
POSTGRES_PARAMETERS: dict[str, str] = {
    "rds.force_ssl": "1",  # refuse unencrypted connections
    "log_min_duration_statement": "1000",  # log statements slower than 1 s
    "log_connections": "1",
    "log_disconnections": "1",
    "log_lock_waits": "1",  # waits longer than deadlock_timeout (1 s)
    "log_statement": "ddl",  # every CREATE/ALTER/DROP: an audit trail of migrations
    "log_temp_files": "10240",  # temp files over 10 MB (kB): sorts spilling to disk
}
