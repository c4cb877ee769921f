"""The VPC the database lives in."""

from stacks.network.vpc import DatabaseNetwork

__all__ = ["DatabaseNetwork"]
