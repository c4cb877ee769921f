"""The PostgreSQL version of the whole project, read by both halves: the stacks deploy it (through
stacks/settings.py), scripts/local-db.sh runs it locally, and the runner warns when the server it
reaches has another major. It lives in database/ so that the runner never imports the stacks.

One PostgreSQL version for both flavours. 17.9 exists for Aurora PostgreSQL and for RDS for
PostgreSQL in aws-cdk-lib 2.275 (AuroraPostgresEngineVersion.VER_17_9 / PostgresEngineVersion.VER_17_9),
and every Aurora PostgreSQL 17 minor supports Serverless v2 scale to zero (0 ACU with auto-pause).
"""

POSTGRES_VERSION = "17.9"
POSTGRES_MAJOR_VERSION = int(POSTGRES_VERSION.split(".")[0])
