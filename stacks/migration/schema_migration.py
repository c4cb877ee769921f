"""SchemaMigration: the custom resource that applies pending migrations on every deploy that adds them.

Three functions, one custom resource:

- the *deploy function* (outside the VPC) is the Provider framework's on-event handler. It reads the
  database secret at run time and invokes the runner with the credentials in the payload, so no
  NAT gateway or VPC endpoint is needed (``secrets_manager_endpoint`` turns that around);
- the *runner function* sits in the database's isolated subnets, in a security group whose only
  egress is the database port (and 443 to the Secrets Manager endpoint when there is one);
- the Provider framework's own function answers CloudFormation from outside the VPC, so that answer
  never depends on a route out of the isolated subnets.

The resource's properties describe the migrations the asset carries (``build_manifest``): they change
when a migration file is added or edited, or the database is replaced, and only then, so CloudFormation
calls the handler exactly on those deploys and ``cdk diff`` lists the new files by name.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import CfnResource, CustomResource, Duration, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import custom_resources as cr
from constructs import Construct, IConstruct

from database.migrator.discovery import scan
from database.migrator.errors import InvalidMigrationError
from database.migrator.manifest import Manifest, build_manifest
from stacks.common import companion_removal_policy
from stacks.compliance import acknowledge
from stacks.database.base import PostgresDatabase
from stacks.settings import MIGRATION_POLL_SECONDS, DatabaseAccess, EnvironmentSettings, SettingsError

RUNTIME = lambda_.Runtime.PYTHON_3_13
ARCHITECTURE = lambda_.Architecture.X86_64
DEPLOY_HANDLER = "schema_migrations.deploy.handler"
RUNNER_HANDLER = "schema_migrations.runner.handler"
RESOURCE_TYPE = "Custom::SchemaMigrations"
GUARD_RESOURCE_TYPE = "Custom::CreateRollbackGuard"
GUARD_TIMEOUT_SECONDS = 300  # its Delete makes one RDS call
HTTPS_PORT = 443
# The deploy function only reads a secret and waits for the runner: the smallest size that keeps
# boto3's import quick.
DEPLOY_MEMORY_MB = 256

# What Lambda needs to attach a function to the VPC: the actions of the AWS-managed
# AWSLambdaVPCAccessExecutionRole, without its account-wide CloudWatch Logs rights.
_VPC_NETWORK_INTERFACE_ACTIONS = [
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
]


def function_names(settings: EnvironmentSettings) -> dict[str, str]:
    """Fixed names (pg-schema-deploy-<env>-...), so that logs sit at /aws/lambda/<name>."""
    return {
        "deploy": f"{settings.identifier}-migrate",
        "runner": f"{settings.identifier}-migration-runner",
        "provider": f"{settings.identifier}-migration-provider",
        "provider-waiter": f"{settings.identifier}-migration-waiter",
        "provider-timeout": f"{settings.identifier}-migration-timeout",
    }


def migration_properties(
    manifest: Manifest, environment: str, database_token: str, access: DatabaseAccess
) -> dict[str, object]:
    """The custom resource's properties (the deploy-contract's names), without the service token.

    ``Migrations`` maps the newest versions to a short digest of their content, so that `cdk diff`
    prints ``+ 004_add_phone_index`` for a new file and a changed value for an edited one.
    ``DatabaseRoles`` names the application's logins, which every migrating deploy makes sure of
    (a renamed role, or the first deploy of a stack that had none, runs the function too).
    """
    return {
        "Environment": environment,
        "DatabaseRoles": {"Application": access.application_role, "ReadOnly": access.readonly_role},
        "Database": database_token,
        "MigrationsDigest": manifest.digest,
        "MigrationCount": str(manifest.count),
        "LatestMigration": manifest.latest or "none",
        "Migrations": dict(manifest.recent),
    }


class SchemaMigration(Construct):
    """One environment's deploy-time migration.

    Attributes:
        deploy_function: the out-of-VPC handler; the CLI invokes it for ``--status`` / ``--dry-run``.
        runner_function: the in-VPC function that connects to PostgreSQL.
        runner_security_group: the runner's own group (egress: the database port only).
        resource: the CustomResource; ``SchemaVersion``, ``AppliedThisDeploy``, ``AppliedCount``.
        manifest: the migrations the asset carries, as put into the properties.
        secrets_endpoint: the Secrets Manager interface endpoint, or None (the default).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: EnvironmentSettings,
        database: PostgresDatabase,
        asset_directory: Path,
    ) -> None:
        super().__init__(scope, construct_id)
        migration = settings.migration
        names = function_names(settings)
        self.manifest = _manifest_of(asset_directory)
        code = lambda_.Code.from_asset(str(asset_directory))
        secret_arn = database.secret.secret_arn

        self.runner_security_group = ec2.SecurityGroup(
            self,
            "RunnerSecurityGroup",
            vpc=database.vpc,
            description=(
                f"pg-schema-deploy {settings.name}: migration runner, egress to PostgreSQL "
                "(and to the Secrets Manager endpoint if enabled) only"
            ),
            allow_all_outbound=False,
        )
        database.security_group.add_ingress_rule(
            self.runner_security_group, ec2.Port.tcp(settings.port), "PostgreSQL from the migration runner"
        )
        runner_egress = [_egress_rule(database.security_group, settings.port, "Migration runner to PostgreSQL")]

        runner_environment = {
            "ENVIRONMENT_NAME": settings.name,
            "SCHEMA_DRIFT": migration.schema_drift.value,
            "LINT_ERROR_ROWS": str(migration.lint_error_rows),
        }
        if settings.restore.baseline_version is not None:
            _check_baseline_version(settings.restore.baseline_version, asset_directory, settings.name)
            runner_environment["BASELINE_VERSION"] = settings.restore.baseline_version
        self.secrets_endpoint: ec2.InterfaceVpcEndpoint | None = None
        endpoint_security_group: ec2.SecurityGroup | None = None
        if migration.secrets_manager_endpoint:
            endpoint_security_group = self._secrets_manager_endpoint(settings, database)
            runner_egress.append(
                _egress_rule(endpoint_security_group, HTTPS_PORT, "Migration runner to the Secrets Manager endpoint")
            )
            runner_environment.update(DATABASE_SECRET_ARN=secret_arn, **_connection_facts(database))
        _set_only_egress(self.runner_security_group, runner_egress)

        runner_role = iam.Role(
            self,
            "RunnerRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"pg-schema-deploy {settings.name}: migration runner (VPC network interfaces, its log)",
            # Inline in the role, not a separate AWS::IAM::Policy: these rights then exist exactly as
            # long as the role, before the function is created (Lambda checks them) and until after
            # it is deleted.
            inline_policies={
                "VpcNetworkInterfaces": iam.PolicyDocument(
                    statements=[iam.PolicyStatement(actions=_VPC_NETWORK_INTERFACE_ACTIONS, resources=["*"])]
                )
            },
        )
        if migration.secrets_manager_endpoint:
            database.grant_secret_read(runner_role)
        self.runner_function = lambda_.Function(
            self,
            "Runner",
            description=f"pg-schema-deploy {settings.name}: applies database/migrations inside the VPC",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=RUNNER_HANDLER,
            code=code,
            timeout=Duration.seconds(migration.timeout_seconds),
            memory_size=migration.memory_mb,
            environment=runner_environment,
            role=runner_role,
            function_name=names["runner"],
            vpc=database.vpc,
            vpc_subnets=database.subnets,
            security_groups=[self.runner_security_group],
        )

        deploy_role = iam.Role(
            self,
            "DeployRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"pg-schema-deploy {settings.name}: migration deploy step (reads the secret, calls the runner)",
        )
        deploy_role.add_to_policy(
            iam.PolicyStatement(
                # GetFunction: waiting for an Inactive runner to become Active again.
                actions=["lambda:InvokeFunction", "lambda:GetFunction"],
                resources=[self.runner_function.function_arn],
            )
        )
        deploy_role.add_to_policy(  # the stack's status tells a rollback from a deploy
            iam.PolicyStatement(actions=["cloudformation:DescribeStacks"], resources=[Stack.of(self).stack_id])
        )
        if not migration.secrets_manager_endpoint:
            database.grant_secret_read(deploy_role)
        self.deploy_function = lambda_.Function(
            self,
            "Deploy",
            description=f"pg-schema-deploy {settings.name}: runs the schema migrations on deploy; status for the CLI",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=DEPLOY_HANDLER,
            code=code,
            timeout=Duration.seconds(migration.deploy_timeout_seconds),
            memory_size=DEPLOY_MEMORY_MB,
            environment={
                "RUNNER_FUNCTION_NAME": self.runner_function.function_name,
                "DATABASE_SECRET_ARN": secret_arn,
                "ENVIRONMENT_NAME": settings.name,
                "SECRETS_IN_VPC": "1" if migration.secrets_manager_endpoint else "0",
                **_connection_facts(database),
                "RUNNER_TIMEOUT_SECONDS": str(migration.timeout_seconds),
                "DEPLOY_BUDGET_SECONDS": str(migration.total_timeout_seconds),
            },
            role=deploy_role,
            function_name=names["deploy"],
        )

        provider_role = iam.Role(
            self,
            "ProviderRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"pg-schema-deploy {settings.name}: CDK provider framework (invokes the deploy step)",
        )
        waiter_role = iam.Role(
            self,
            "ProviderWaiterRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"pg-schema-deploy {settings.name}: CDK provider framework's is-complete and timeout steps",
        )
        # is_complete: the deploy function again, called until every pending migration is applied,
        # each call one run of the runner (a long history takes several).
        self.provider = cr.Provider(
            self,
            "Provider",
            on_event_handler=self.deploy_function,
            is_complete_handler=self.deploy_function,
            query_interval=Duration.seconds(MIGRATION_POLL_SECONDS),
            total_timeout=Duration.seconds(migration.provider_timeout_seconds),
            framework_on_event_role=provider_role,
            framework_complete_and_timeout_role=waiter_role,
            provider_function_name=names["provider"],
        )
        functions = {"runner": self.runner_function, "deploy": self.deploy_function}
        for role, child in (("provider", "framework-onEvent"), ("provider-waiter", "framework-isComplete"),
                            ("provider-timeout", "framework-onTimeout")):  # fmt: skip
            framework_function = self.provider.node.find_child(child)
            assert isinstance(framework_function, lambda_.Function)
            cfn_function = framework_function.node.default_child
            assert isinstance(cfn_function, lambda_.CfnFunction)
            cfn_function.function_name = names[role]  # the Provider names only its onEvent function
            functions[role] = framework_function
        for role, function in functions.items():
            _keep_logs(function, names[role], settings)
            _accept_role_dependency(function)
        _accept_role_dependency(self.provider.node.find_child("waiter-state-machine"))

        self.resource = CustomResource(
            self,
            "Resource",
            service_token=self.provider.service_token,
            resource_type=RESOURCE_TYPE,
            service_timeout=Duration.seconds(migration.service_timeout_seconds),
            properties=migration_properties(self.manifest, settings.name, database.resource_id, settings.access),
        )
        # Runs once the writer is available (the cluster's subtree holds its writer instance) and the
        # network path is open: the database group's ingress rules are its children, and the
        # endpoint if there is one.
        self.resource.node.add_dependency(*_database_parts_besides_itself(database), database.security_group)
        if self.secrets_endpoint is not None:
            self.resource.node.add_dependency(self.secrets_endpoint, endpoint_security_group)

        self.create_rollback_guard: CustomResource | None = None
        if settings.deletion_protection:
            self.create_rollback_guard = self._guard_first_create(database, deploy_role)

        self._acknowledge_findings(settings, runner_role, [provider_role, waiter_role])

    def _guard_first_create(self, database: PostgresDatabase, deploy_role: iam.Role) -> CustomResource:
        """A resource beside the database whose deletion, during the rollback of a failed first
        create only, turns deletion protection off: CloudFormation deletes it before the database
        (it names the database), so the rollback completes and the create can be retried."""
        resource = database.resource
        if isinstance(resource, rds.DatabaseClusterBase):
            kind, identifier, arn = "cluster", resource.cluster_identifier, resource.cluster_arn
        else:
            assert isinstance(resource, rds.DatabaseInstanceBase)
            kind, identifier, arn = "instance", resource.instance_identifier, resource.instance_arn
        action = "rds:ModifyDBCluster" if kind == "cluster" else "rds:ModifyDBInstance"
        deploy_role.add_to_policy(iam.PolicyStatement(actions=[action], resources=[arn]))
        return CustomResource(
            self,
            "CreateRollbackGuard",
            service_token=self.provider.service_token,
            resource_type=GUARD_RESOURCE_TYPE,
            service_timeout=Duration.seconds(GUARD_TIMEOUT_SECONDS),
            properties={"DatabaseIdentifier": identifier, "DatabaseKind": kind},
        )

    def _secrets_manager_endpoint(self, settings: EnvironmentSettings, database: PostgresDatabase) -> ec2.SecurityGroup:
        """An interface endpoint in the database subnets that only the runner's group may reach; its group."""
        endpoint_security_group = ec2.SecurityGroup(
            self,
            "SecretsEndpointSecurityGroup",
            vpc=database.vpc,
            description=f"pg-schema-deploy {settings.name}: Secrets Manager endpoint, HTTPS from the migration runner",
            allow_all_outbound=False,
        )
        endpoint = ec2.InterfaceVpcEndpoint(
            self,
            "SecretsManagerEndpoint",
            vpc=database.vpc,
            service=ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
            subnets=database.subnets,
            private_dns_enabled=True,
            security_groups=[endpoint_security_group],
            open=False,
        )
        endpoint_security_group.add_ingress_rule(
            self.runner_security_group, ec2.Port.tcp(HTTPS_PORT), "HTTPS from the migration runner"
        )
        self.secrets_endpoint = endpoint
        return endpoint_security_group

    def _acknowledge_findings(
        self, settings: EnvironmentSettings, runner_role: iam.Role, framework_roles: list[iam.Role]
    ) -> None:
        """cdk-nag findings on the functions and their roles, each with why it stays."""
        acknowledge(
            runner_role,
            "AwsSolutions-IAM5[Resource::*]",
            "Lambda creates, describes and deletes the runner's VPC network interfaces before their ids exist; "
            "EC2 offers no narrower resource for these actions (the same grant as AWS's "
            "AWSLambdaVPCAccessExecutionRole, without its account-wide CloudWatch Logs rights).",
        )
        deploy_resource = self.deploy_function.node.default_child
        assert isinstance(deploy_resource, CfnResource)
        deploy_id = Stack.of(self).get_logical_id(deploy_resource)
        for framework_role in framework_roles:
            acknowledge(
                framework_role,
                f"AwsSolutions-IAM5[Resource::<{deploy_id}.Arn>:*]",
                "The CDK Provider framework grants its function invoke on the deploy function and that function's "
                "versions (ARN:*); it can invoke nothing else.",
            )
        waiter = self.provider.node.find_child("waiter-state-machine")
        for step in ("isComplete", "onTimeout"):
            step_function = self.provider.node.find_child(f"framework-{step}").node.default_child
            assert isinstance(step_function, CfnResource)
            acknowledge(
                waiter,
                f"AwsSolutions-IAM5[Resource::<{Stack.of(self).get_logical_id(step_function)}.Arn>:*]",
                f"The Provider framework's waiter state machine may invoke its own {step} function and that "
                "function's versions (ARN:*), nothing else.",
            )
        acknowledge(
            waiter,
            "AwsSolutions-SF1",
            "The waiter only calls the framework's is-complete function every few seconds during a deploy; "
            "each call's outcome is in that function's and the deploy function's CloudWatch log groups, and "
            "the execution history stays in the Step Functions console: a log group of its own adds nothing.",
        )
        acknowledge(
            waiter,
            "AwsSolutions-SF2",
            "X-Ray traces of a two-state polling loop would show nothing the functions' logs do not: the time "
            "goes into the migration runner, whose log line per migration has its duration.",
        )
        for function in (self.deploy_function, self.runner_function):
            acknowledge(
                function,
                "AwsSolutions-L1",
                f"Python 3.13 on purpose ({settings.name}): the asset carries psycopg's binary wheels built for "
                "CPython 3.13 (cp313, manylinux x86_64) at the versions in uv.lock; a newer runtime needs new wheels.",
            )


def _manifest_of(asset_directory: Path) -> Manifest:
    """The manifest of the migrations the asset carries: the same files the deploy function checks.

    A bad migration file stops the synth with the runner's own message, its paths shown relative to
    the project (database/migrations/...) rather than inside the asset folder.
    """
    try:
        return build_manifest(asset_directory / "database" / "migrations")
    except InvalidMigrationError as error:
        message = str(error).replace(f"{asset_directory}/", "")
        raise SettingsError(f"the deploy-time migration cannot be built: {message}") from None


def _check_baseline_version(version: str, asset_directory: Path, environment: str) -> None:
    """A baseline_version must name one of the migrations the deploy carries: the runner would
    refuse it on the first deploy, after CloudFormation had created the database."""
    files, _ = scan(asset_directory / "database" / "migrations")
    if version not in {file.version for file in files}:
        raise SettingsError(
            f"{environment}: baseline_version={version!r} names no migration in database/migrations "
            f"(the newest is {files[-1].version if files else 'none'})"
        )


def _egress_rule(destination: ec2.SecurityGroup, port: int, description: str) -> dict[str, object]:
    """One TCP egress rule to a security group, in CloudFormation's inline form."""
    return {
        "IpProtocol": "tcp",
        "FromPort": port,
        "ToPort": port,
        "DestinationSecurityGroupId": destination.security_group_id,
        "Description": description,
    }


def _set_only_egress(group: ec2.SecurityGroup, rules: list[dict[str, object]]) -> None:
    """Make ``rules`` the group's whole egress, inline in the group.

    CDK writes egress to another security group as a separate AWS::EC2::SecurityGroupEgress, and
    EC2 gives a group created without inline egress its default allow-all rule; whether a separate
    rule removes that default is not something to depend on. Inline rules replace the default at
    creation, which is documented (AWS::EC2::SecurityGroup, SecurityGroupEgress). No cycle arises:
    the destination groups reference this one only from separate ingress resources.
    """
    cfn_group = group.node.default_child
    assert isinstance(cfn_group, ec2.CfnSecurityGroup)
    cfn_group.add_property_override("SecurityGroupEgress", rules)


def _database_parts_besides_itself(database: PostgresDatabase) -> list[Construct]:
    """What the database construct creates besides the cluster/instance resource itself (the writer
    instance, the subnet group). The resource itself is already a dependency through the
    ``Database`` property's GetAtt; listing it again is what cfn-lint W3005 reports as redundant."""
    own = database.resource.node.default_child
    assert own is not None
    return [
        child
        for child in database.resource.node.find_all()
        if isinstance(child, CfnResource) and child.node.path != own.node.path
    ]


def _keep_logs(function: lambda_.Function, function_name: str, settings: EnvironmentSettings) -> None:
    """The environment's retention and removal on the function's /aws/lambda/<name> log group, and
    the right to write there (the roles carry no account-wide CloudWatch Logs grant).

    The group is the one aws-cdk-lib creates under @aws-cdk/aws-lambda:useCdkManagedLogGroup, at
    Lambda's default name: the Provider framework's failure message points there ("Logs:
    /aws/lambda/<name>"). The name is written out, not a Ref of the function: the function depends
    on its role's policy, which names this group, so a Ref would close a cycle.
    """
    log_group = function.log_group
    cfn_log_group = log_group.node.default_child
    assert isinstance(cfn_log_group, logs.CfnLogGroup) and function.role is not None
    cfn_log_group.log_group_name = f"/aws/lambda/{function_name}"
    cfn_log_group.retention_in_days = settings.log_retention_days
    log_group.apply_removal_policy(companion_removal_policy(settings.removal))
    log_group.grant_write(function.role)


def _accept_role_dependency(construct: IConstruct) -> None:
    """Tell cfn-lint that the function's (or the framework's state machine's) DependsOn on its role
    is intended (W3005 "already enforced by a GetAtt"): aws-cdk-lib adds it so that the role's
    separate policy exists before the service uses it (for the runner: before Lambda creates its
    network interfaces)."""
    resource = construct.node.default_child
    assert isinstance(resource, CfnResource)
    resource.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3005"]}})


def _connection_facts(database: PostgresDatabase) -> dict[str, str]:
    """Where the database is: RDS's own master secret holds only the username and password."""
    return {
        "DATABASE_HOST": database.endpoint.hostname,
        "DATABASE_PORT": str(database.settings.port),
        "DATABASE_NAME": database.database_name,
    }
