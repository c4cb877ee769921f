"""A copy-on-write clone of an environment's Aurora cluster, for one rehearsal: made, waited for
with visible progress, and deleted, always. Runs with the caller's AWS credentials (a person, or
the deploy workflow's role: stacks/rehearsal/policy.py is exactly what this needs).

The clone shares the cluster's storage pages until either side changes one (RDS "Aurora cloning"),
so it is ready in minutes whatever the size; it keeps the cluster's master credentials, subnet
group and security groups, and so the environment's migration function reaches it as it reaches the
cluster. Every clone carries the tag REHEARSAL_TAG = <environment>: the IAM policy allows deleting
only tagged clusters, and ``cleanup`` finds the leftovers of an interrupted run by it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

REHEARSAL_TAG = "pg-schema-deploy:rehearsal"
CLONE_INFIX = "-rehearsal-"
INSTANCE_CLASS = "db.serverless"
READY_TIMEOUT_SECONDS = 3600.0  # cloning takes minutes; an hour means something is wrong
POLL_SECONDS = 15.0
PROGRESS_SECONDS = 60.0  # a line at least this often while waiting, so CI logs show it is alive


class CloneError(Exception):
    """The clone could not be made or deleted; the message says what to do."""


@dataclass(frozen=True)
class Clone:
    cluster: str
    instance: str
    endpoint: str
    port: int


def clone_name(source: str, now: datetime) -> str:
    """``<cluster>-rehearsal-<UTC timestamp>``: the name the migration function accepts as a clone
    of its cluster (at most 63 characters, as RDS requires)."""
    return f"{source}{CLONE_INFIX}{now.strftime('%Y%m%d%H%M%S')}"


class ClusterCloner:
    """Makes and deletes rehearsal clones of ``source`` with an RDS client."""

    def __init__(
        self,
        rds: Any,
        environment: str,
        source: str,
        out: TextIO,
        *,
        poll_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rds = rds
        self.environment = environment
        self.source = source
        self.out = out
        self.poll_seconds = POLL_SECONDS if poll_seconds is None else poll_seconds
        self.clock = clock
        self.sleep = sleep

    @contextmanager
    def clone(self) -> Iterator[Clone]:
        """A clone ready for connections, deleted when the block ends however it ends (Ctrl-C too)."""
        cluster = self._describe_source()
        name = clone_name(self.source, datetime.now(UTC))
        tags = [{"Key": REHEARSAL_TAG, "Value": self.environment}]
        restore: dict[str, Any] = {
            "DBClusterIdentifier": name,
            "SourceDBClusterIdentifier": self.source,
            "RestoreType": "copy-on-write",
            "UseLatestRestorableTime": True,
            "DBSubnetGroupName": cluster["DBSubnetGroup"],
            "VpcSecurityGroupIds": [group["VpcSecurityGroupId"] for group in cluster.get("VpcSecurityGroups") or []],
            "DeletionProtection": False,
            "CopyTagsToSnapshot": False,
            "Tags": tags,
        }
        if cluster.get("DBClusterParameterGroup"):
            restore["DBClusterParameterGroupName"] = cluster["DBClusterParameterGroup"]
        if cluster.get("ServerlessV2ScalingConfiguration"):  # the cluster's own range: measured as it would run
            scaling = cluster["ServerlessV2ScalingConfiguration"]
            restore["ServerlessV2ScalingConfiguration"] = {
                "MinCapacity": max(0.5, float(scaling.get("MinCapacity") or 0)),  # never paused while rehearsing
                "MaxCapacity": float(scaling.get("MaxCapacity") or 1),
            }
        instance = f"{name}-1"
        self._say(f"🧬 Cloning {self.source} (copy-on-write, latest restorable time) as {name}")
        self._call("RestoreDBClusterToPointInTime", self.rds.restore_db_cluster_to_point_in_time, **restore)
        try:
            self._call(
                "CreateDBInstance",
                self.rds.create_db_instance,
                DBInstanceIdentifier=instance,
                DBClusterIdentifier=name,
                DBInstanceClass=INSTANCE_CLASS,
                Engine=cluster.get("Engine") or "aurora-postgresql",
                PubliclyAccessible=False,
                Tags=tags,
            )
            ready = self._wait_until_available(name, instance)
            yield Clone(name, instance, str(ready["Endpoint"]), int(ready.get("Port") or cluster.get("Port") or 5432))
        finally:
            self.delete(name, [instance])

    def cleanup(self) -> list[str]:
        """Delete every rehearsal clone of this environment (the leftovers of an interrupted run,
        or a rehearsal still running elsewhere); the names deleted."""
        deleted = []
        for cluster in self._clusters():
            tags = {tag["Key"]: tag["Value"] for tag in cluster.get("TagList") or []}
            if tags.get(REHEARSAL_TAG) != self.environment:
                continue
            members = [member["DBInstanceIdentifier"] for member in cluster.get("DBClusterMembers") or []]
            self.delete(str(cluster["DBClusterIdentifier"]), members)
            deleted.append(str(cluster["DBClusterIdentifier"]))
        if not deleted:
            self._say(f"✅ No rehearsal clones of {self.environment} left")
        return deleted

    def delete(self, name: str, instances: list[str]) -> None:
        """Start deleting the clone (its instances first: RDS deletes a cluster only once none is
        left in a state other than deleting). Deletion goes on in AWS after this returns."""
        from botocore.exceptions import ClientError

        for instance in instances:
            try:
                self._when_deletable(instance)
                self.rds.delete_db_instance(DBInstanceIdentifier=instance)
            except ClientError as error:
                if _code(error) not in ("DBInstanceNotFound", "DBInstanceNotFoundFault", "InvalidDBInstanceState"):
                    raise self._left_behind(name, error) from None
        try:
            self.rds.delete_db_cluster(DBClusterIdentifier=name, SkipFinalSnapshot=True)
        except ClientError as error:
            if _code(error) not in ("DBClusterNotFoundFault", "DBClusterNotFound"):
                raise self._left_behind(name, error) from None
        self._say(f"🧹 Deleting clone {name} (no final snapshot; it is gone in a few minutes)")

    def _when_deletable(self, instance: str) -> None:
        """An instance still being created cannot be deleted yet: wait for it (bounded)."""
        from botocore.exceptions import ClientError

        deadline = self.clock() + READY_TIMEOUT_SECONDS
        while True:
            try:
                [found] = self.rds.describe_db_instances(DBInstanceIdentifier=instance)["DBInstances"]
            except ClientError as error:
                if _code(error) in ("DBInstanceNotFound", "DBInstanceNotFoundFault"):
                    return
                raise
            if found.get("DBInstanceStatus") != "creating" or self.clock() > deadline:
                return
            self._say(f"⏳ {instance} is still being created; it can be deleted once it is (Ctrl-C leaves it: "
                      f"scripts/rehearse.sh {self.environment} --cleanup removes it later)")  # fmt: skip
            self.sleep(self.poll_seconds)

    def _describe_source(self) -> dict[str, Any]:
        clusters = self._call("DescribeDBClusters", self.rds.describe_db_clusters, DBClusterIdentifier=self.source)
        [cluster] = clusters["DBClusters"]
        if cluster.get("Status") != "available":
            raise CloneError(
                f"cluster {self.source} is {cluster.get('Status')}, not available: rehearse once it is available"
            )
        return dict(cluster)

    def _wait_until_available(self, cluster: str, instance: str) -> dict[str, Any]:
        """Poll the clone and its instance until both are available, a line on every change and
        at least every PROGRESS_SECONDS; the clone's description."""
        started = self.clock()
        last: tuple[str, str] | None = None
        said = started
        while True:
            [found] = self._call("DescribeDBClusters", self.rds.describe_db_clusters,
                                 DBClusterIdentifier=cluster)["DBClusters"]  # fmt: skip
            [member] = self._call("DescribeDBInstances", self.rds.describe_db_instances,
                                  DBInstanceIdentifier=instance)["DBInstances"]  # fmt: skip
            state = (str(found.get("Status")), str(member.get("DBInstanceStatus")))
            now = self.clock()
            if state == ("available", "available"):
                self._say(f"✅ Clone {cluster} available after {_elapsed(now - started)}")
                return dict(found)
            if "failed" in state or "incompatible-parameters" in state or "incompatible-restore" in state:
                raise CloneError(f"clone {cluster}: cluster {state[0]}, instance {state[1]}; see its RDS events")
            if state != last or now - said >= PROGRESS_SECONDS:
                self._say(f"⏳ Clone {cluster}: cluster {state[0]}, instance {state[1]} ({_elapsed(now - started)})")
                last, said = state, now
            if now - started > READY_TIMEOUT_SECONDS:
                raise CloneError(f"clone {cluster} not available after {_elapsed(now - started)}; see its RDS events")
            self.sleep(self.poll_seconds)

    def _clusters(self) -> Iterator[dict[str, Any]]:
        paginator = self.rds.get_paginator("describe_db_clusters")
        for page in self._call("DescribeDBClusters", paginator.paginate):
            yield from page["DBClusters"]

    def _call(self, operation: str, method: Callable[..., Any], **arguments: Any) -> Any:
        """An RDS call whose failure becomes a one-line CloneError naming what was refused."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return method(**arguments)
        except ClientError as error:
            code = _code(error)
            message = error.response.get("Error", {}).get("Message", str(error))
            if code in ("AccessDenied", "AccessDeniedException", "AccessDeniedFault"):
                raise CloneError(
                    f"not allowed: rds:{operation} ({message}); the rehearsal needs the RDS rights of "
                    "docs/rehearsal.md#permissions (the GitHub deploy role has them once PgSchemaDeploy-github is "
                    "deployed again)"
                ) from None
            raise CloneError(f"rds:{operation} failed ({code}): {message}") from None
        except BotoCoreError as error:
            raise CloneError(f"rds:{operation} failed: {error}") from None

    def _left_behind(self, name: str, error: Exception) -> CloneError:
        return CloneError(
            f"could not delete clone {name} ({error}); it bills until it is deleted: "
            f"scripts/rehearse.sh {self.environment} --cleanup"
        )

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)


def _code(error: Any) -> str:
    return str(error.response.get("Error", {}).get("Code") or "")


def _elapsed(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"
