"""Infrastructure of pg-schema-deploy: one CDK stack per environment.

Keep this file free of aws_cdk imports: ``stacks.settings`` is imported by the migration runner's CLI,
which must stay cheap to start (it only compares PostgreSQL major versions).
"""
