"""The migration linter: squawk's rules, and severity from the database the files will run on.

  findings  what was found, as data (the deploy function reads it from its asset)
  engine    files -> findings: squawk, located with PostgreSQL's parser (pglast); CLI and synth only
  severity  findings + the target's table sizes -> errors and warnings (one catalog query)
  gate      the pre-apply check that refuses an apply while an unacknowledged error stands
"""

# A locking or rewriting statement on a table with at least this many estimated rows is an error.
DEFAULT_ERROR_ROWS = 100_000
