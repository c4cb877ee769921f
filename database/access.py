"""The application's login names, read by both halves: the stacks (each environment's default, in
stacks/settings.py) and the local server (scripts/local-db.sh, --environment local)."""

APPLICATION_ROLE = "webapp_app"
READONLY_ROLE = "webapp_readonly"
