"""Deploy-time schema migrations: two Lambda handlers around the unchanged runner core.

deploy.handler  outside the VPC: the CDK Provider framework's on_event handler, and the target of
                the CLI's read-only status/dry-run invocations. Reads the database secret and
                invokes the runner; never imports psycopg.
runner.handler  inside the database's isolated subnets: connects with TLS (verify-full against the
                shipped RDS CA bundle) and runs database.migrator's apply, status or dry-run.
"""
