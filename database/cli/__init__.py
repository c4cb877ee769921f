"""Command-line front end of the migration runner (scripts/run-migrations.sh calls it)."""
