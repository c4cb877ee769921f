"""The database half of the project: migrations (SQL) and the runner that applies them."""
