"""Migration runner core, shared unchanged by the CLI and the deploy-time Lambda.

Modules, one concern each (modelled on dbmate's layout):
  discovery     find and validate migration files in a directory (no database)
  parsing       read and split one file into statements, checksum it (no database)
  postgres      everything that speaks PostgreSQL: connect, lock, tracking table, execute
  lockwait      lock-timeout retries, and who blocks a waiting migration
  orchestration plan, status, apply and dry-run built on the above
  events        what the core reports while it works; callers decide how to show it

Nothing here prints, reads the command line or keeps global state: callers pass settings
and an event sink explicitly. Importing this package does not import psycopg.
"""
