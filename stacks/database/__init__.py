"""The PostgreSQL database: Aurora Serverless v2 or an RDS free-tier instance, with its security groups."""

from stacks.database.aurora import AuroraServerlessDatabase
from stacks.database.base import PostgresDatabase
from stacks.database.rds_instance import RdsFreeDatabase
from stacks.database.security import DatabaseSecurityGroups

__all__ = ["AuroraServerlessDatabase", "DatabaseSecurityGroups", "PostgresDatabase", "RdsFreeDatabase"]
