"""template.yaml's production settings, transformed by the SAM translator and then resolved
for given parameters as CloudFormation would: VPC endpoints and the VPC policy only with
subnets, reserved concurrency, alarms for every function, the alarm topic, tracing, and
the rules that refuse a stack that cannot work."""

import copy
import functools
import tomllib
from typing import Any

import pytest

from tests.support.functions import ROOT
from tests.support.template import DATABASE_SECRET, sam_template, transformed

VPC = {
    "SubnetIds": "subnet-0a1b2c3d,subnet-4e5f6a7b",
    "SecurityGroupIds": "sg-0123456789abcdef0",
    "VpcId": "vpc-0123456789abcdef0",
    "RouteTableIds": "rtb-0123456789abcdef0",
}
VPC_POLICY = "service-role/AWSLambdaVPCAccessExecutionRole"
XRAY_POLICY = "AWSXRayDaemonWriteAccess"
NO_VALUE = object()


@functools.cache
def _transformed() -> dict[str, Any]:
    return transformed({"DatabaseSecretArn": DATABASE_SECRET})


class Resolver:
    """Conditions, `Fn::If`, `Ref` to parameters and `Fn::Join`, `Fn::Equals` & co., as
    CloudFormation evaluates them for a set of parameter values."""

    def __init__(self, cfn: dict[str, Any], parameters: dict[str, str]) -> None:
        self.cfn = cfn
        self.values: dict[str, Any] = {}
        for name, declared in cfn["Parameters"].items():
            value = str(parameters.get(name, declared.get("Default", "")))
            if declared["Type"] == "CommaDelimitedList":
                self.values[name] = value.split(",") if value else [""]
            else:
                self.values[name] = value
        self.conditions: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = bool(self.value(self.cfn["Conditions"][name]))
        return self.conditions[name]

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.value(item) for item in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, argument),) = node.items()
            if key == "Ref" and argument == "AWS::NoValue":
                return NO_VALUE
            if key == "Ref" and argument in self.values:
                return self.values[argument]
            if key == "Fn::If":
                name, then, otherwise = argument
                return self.value(then if self.condition(name) else otherwise)
            if key == "Condition":
                return self.condition(argument)
            if key == "Fn::Equals":
                left, right = self.value(argument)
                return str(left) == str(right)
            if key == "Fn::Not":
                return not self.value(argument[0])
            if key == "Fn::And":
                return all(self.value(argument))
            if key == "Fn::Or":
                return any(self.value(argument))
            if key == "Fn::Join":
                separator, items = argument
                return separator.join(self.value(items))
            if key == "Fn::Split":
                separator, text = argument
                return str(self.value(text)).split(separator)
        resolved = {key: self.value(value) for key, value in node.items()}
        return {key: value for key, value in resolved.items() if value is not NO_VALUE}

    def resources(self) -> dict[str, dict[str, Any]]:
        return {
            name: self.value(resource)
            for name, resource in self.cfn["Resources"].items()
            if "Condition" not in resource or self.condition(resource["Condition"])
        }

    def refusals(self) -> list[str]:
        """The AssertDescription of every rule that refuses these parameters."""
        refused = []
        for rule in self.cfn.get("Rules", {}).values():
            if "RuleCondition" in rule and not self.value(rule["RuleCondition"]):
                continue
            for assertion in rule["Assertions"]:
                if not self.value(assertion["Assert"]):
                    refused.append(assertion["AssertDescription"])
        return refused


def deployed(**parameters: str) -> Resolver:
    return Resolver(copy.deepcopy(_transformed()), parameters)


def of_type(resources: dict[str, dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r["Properties"] for name, r in resources.items() if r["Type"] == kind}


def function_roles(resources: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    functions = of_type(resources, "AWS::Lambda::Function")
    return {
        name: resources[f["Role"]["Fn::GetAtt"][0]]["Properties"] for name, f in functions.items()
    }


def managed_policies(role: dict[str, Any]) -> list[str]:
    return [arn["Fn::Sub"].rpartition(":policy/")[2] for arn in role["ManagedPolicyArns"]]


# ---------------------------------------------------------------------------------------
# VPC


def test_without_subnets_no_endpoints_no_vpc_policy_no_vpc() -> None:
    stack = deployed()
    resources = stack.resources()
    assert not of_type(resources, "AWS::EC2::VPCEndpoint")
    assert not of_type(resources, "AWS::EC2::SecurityGroup")
    for name, role in function_roles(resources).items():
        assert VPC_POLICY not in managed_policies(role), name
    for name, function in of_type(resources, "AWS::Lambda::Function").items():
        assert "VpcConfig" not in function, name
    assert stack.refusals() == []


def test_with_subnets_both_endpoints_and_the_vpc_policy() -> None:
    stack = deployed(**VPC)
    resources = stack.resources()
    endpoints = of_type(resources, "AWS::EC2::VPCEndpoint")
    services = {e["ServiceName"]["Fn::Sub"]: e for e in endpoints.values()}
    secrets = services["com.amazonaws.${AWS::Region}.secretsmanager"]
    assert secrets["VpcEndpointType"] == "Interface"
    assert secrets["PrivateDnsEnabled"] is True  # boto3's default endpoint resolves to it
    assert secrets["SubnetIds"] == VPC["SubnetIds"].split(",")
    # The SES API (sesv2), for the mails, the same way.
    ses = services["com.amazonaws.${AWS::Region}.email"]
    assert (ses["VpcEndpointType"], ses["PrivateDnsEnabled"]) == ("Interface", True)
    assert ses["SubnetIds"] == secrets["SubnetIds"]
    assert ses["SecurityGroupIds"] == secrets["SecurityGroupIds"]
    s3 = services["com.amazonaws.${AWS::Region}.s3"]
    assert s3["VpcEndpointType"] == "Gateway"
    assert s3["RouteTableIds"] == [VPC["RouteTableIds"]]
    # The endpoint takes HTTPS from the functions' security group.
    (group,) = of_type(resources, "AWS::EC2::SecurityGroup").values()
    (ingress,) = group["SecurityGroupIngress"]
    assert (ingress["FromPort"], ingress["ToPort"]) == (443, 443)
    assert stack.value(ingress["SourceSecurityGroupId"]) == {
        "Fn::Select": [0, [VPC["SecurityGroupIds"]]]
    }
    for name, role in function_roles(resources).items():
        assert VPC_POLICY in managed_policies(role), name
    for name, function in of_type(resources, "AWS::Lambda::Function").items():
        assert function["VpcConfig"]["SubnetIds"] == VPC["SubnetIds"].split(","), name
    assert stack.refusals() == []


def test_endpoints_can_be_left_to_an_existing_nat_or_endpoint() -> None:
    resources = deployed(**VPC, CreateVpcEndpoints="false").resources()
    assert not of_type(resources, "AWS::EC2::VPCEndpoint")
    for role in function_roles(resources).values():
        assert VPC_POLICY in managed_policies(role)
    # Without route tables there is no S3 gateway endpoint, only the interface ones.
    without_routes = deployed(**{**VPC, "RouteTableIds": ""}).resources()
    endpoints = of_type(without_routes, "AWS::EC2::VPCEndpoint").values()
    assert [e["VpcEndpointType"] for e in endpoints] == ["Interface", "Interface"]


def test_the_api_functions_may_send_email_as_the_sender_only() -> None:
    stack = deployed(EmailSender="tasks@mail.example.org", PublicUrl="https://app.example.org")
    resources = stack.resources()
    functions = of_type(resources, "AWS::Lambda::Function")
    for name, role in function_roles(resources).items():
        statements = [
            statement
            for policy in role.get("Policies", [])
            for statement in policy["PolicyDocument"]["Statement"]
            if "ses:SendEmail" in statement["Action"]
        ]
        environment = functions[name]["Environment"]["Variables"]
        assert stack.value(environment["EMAIL_FROM"]) == "tasks@mail.example.org"
        assert stack.value(environment["PUBLIC_URL"]) == "https://app.example.org"
        if name.startswith("RemindersFunction"):
            continue  # its own role, which sends the reminders
        if not name.startswith(("AuthFunction", "TasksFunction")):
            assert statements == [], name
            continue
        (statement,) = statements
        assert statement["Action"] == ["ses:SendEmail"]
        address, domain = statement["Resource"]
        prefix = "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/"
        assert address == {"Fn::Sub": f"{prefix}${{EmailSender}}"}
        template, variables = domain["Fn::Sub"]
        assert template == f"{prefix}${{Domain}}"
        # The domain of the sender: the part after its "@".
        index, parts = stack.value(variables["Domain"])["Fn::Select"]
        assert parts[index] == "mail.example.org"


def test_endpoints_without_the_vpc_id_are_refused() -> None:
    (refusal,) = deployed(**{**VPC, "VpcId": ""}).refusals()
    assert "VpcId" in refusal
    assert deployed(**{**VPC, "VpcId": "", "CreateVpcEndpoints": "false"}).refusals() == []


# ---------------------------------------------------------------------------------------
# Database connections


def test_reserved_concurrency_bounds_each_api_function() -> None:
    resources = deployed(
        AuthReservedConcurrency="5", TasksReservedConcurrency="20", HealthReservedConcurrency="2"
    ).resources()
    functions = of_type(resources, "AWS::Lambda::Function")
    reserved = {name: f.get("ReservedConcurrentExecutions") for name, f in functions.items()}
    assert reserved == {
        "AuthFunction": "5",
        "TasksFunction": "20",
        "HealthFunction": "2",
        "MigrateFunction": None,
        # One run an hour: reserving would only take from the account's pool.
        "MaintenanceFunction": None,
        # Runs may overlap safely (each reminder is claimed once).
        "RemindersFunction": None,
    }
    # 0, the default, leaves a function unreserved (a reservation of 0 would stop it).
    defaults = of_type(deployed().resources(), "AWS::Lambda::Function")
    assert all("ReservedConcurrentExecutions" not in f for f in defaults.values())


def test_prod_without_rds_proxy_is_refused() -> None:
    origins = "https://tasks.example.org"
    (refusal,) = deployed(Stage="prod", CorsOrigins=origins).refusals()
    assert "RDS Proxy" in refusal
    assert "DatabaseProxy=true" in refusal
    assert deployed(Stage="prod", DatabaseProxy="true", CorsOrigins=origins).refusals() == []
    assert deployed(Stage="dev").refusals() == []


# ---------------------------------------------------------------------------------------
# Alarms


def alarm_targets(resources: dict[str, dict[str, Any]]) -> dict[tuple[str, str], list[Any]]:
    """`(function, metric) -> alarm actions` for the Lambda alarms."""
    targets = {}
    for alarm in of_type(resources, "AWS::CloudWatch::Alarm").values():
        if alarm["Namespace"] != "AWS/Lambda":
            continue
        (dimension,) = alarm["Dimensions"]
        assert dimension["Name"] == "FunctionName"
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (
            1,
            "GreaterThanOrEqualToThreshold",
        )
        targets[(dimension["Value"]["Ref"], alarm["MetricName"])] = alarm.get("AlarmActions", [])
    return targets


@pytest.mark.parametrize("metric", ["Errors", "Throttles"])
def test_every_function_has_errors_and_throttles_alarms(metric: str) -> None:
    resources = deployed().resources()
    targets = alarm_targets(resources)
    for function in of_type(resources, "AWS::Lambda::Function"):
        assert (function, metric) in targets, function
    assert ("MigrateFunction", metric) in targets


def test_alarm_email_gets_a_topic_that_every_alarm_notifies() -> None:
    resources = deployed(AlarmEmail="oncall@example.com").resources()
    (topic_name, topic) = next(iter(of_type(resources, "AWS::SNS::Topic").items()))
    assert topic["Subscription"] == [{"Protocol": "email", "Endpoint": "oncall@example.com"}]
    for alarm in of_type(resources, "AWS::CloudWatch::Alarm").values():
        assert alarm["AlarmActions"] == [{"Ref": topic_name}], alarm["AlarmDescription"]
        assert alarm["OKActions"] == [{"Ref": topic_name}]


def test_an_existing_topic_is_used_as_it_is_and_none_means_no_actions() -> None:
    arn = "arn:aws:sns:us-east-1:123456789012:oncall"
    given = deployed(AlarmTopicArn=arn, AlarmEmail="ignored@example.com").resources()
    assert not of_type(given, "AWS::SNS::Topic")
    for alarm in of_type(given, "AWS::CloudWatch::Alarm").values():
        assert alarm["AlarmActions"] == [arn]
    silent = deployed().resources()
    assert not of_type(silent, "AWS::SNS::Topic")
    assert all("AlarmActions" not in a for a in of_type(silent, "AWS::CloudWatch::Alarm").values())


# ---------------------------------------------------------------------------------------
# Tracing


def test_functions_are_traced_by_default_and_may_pass_through() -> None:
    active = deployed().resources()
    for name, function in of_type(active, "AWS::Lambda::Function").items():
        assert function["TracingConfig"] == {"Mode": "Active"}, name
    for role in function_roles(active).values():
        assert XRAY_POLICY in managed_policies(role)
    passing = deployed(TracingMode="PassThrough").resources()
    for function in of_type(passing, "AWS::Lambda::Function").values():
        assert function["TracingConfig"] == {"Mode": "PassThrough"}
    for role in function_roles(passing).values():
        assert XRAY_POLICY not in managed_policies(role)


# ---------------------------------------------------------------------------------------
# samconfig.toml


def test_prod_names_no_placeholder_origin_and_passes_its_own_rules() -> None:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    overrides = config["prod"]["deploy"]["parameters"]["parameter_overrides"]
    parameters = dict(item.split("=", 1) for item in overrides.split())
    assert "example.com" not in overrides
    assert "CorsOrigins" not in parameters
    # As shipped it is refused until the deployer names the origins (or none) ...
    (refusal,) = deployed(**parameters).refusals()
    assert "CorsOrigins" in refusal
    # ... and then it passes every rule.
    for origins in ("https://tasks.example.org", ""):
        stack = deployed(**parameters, CorsOrigins=origins)
        assert stack.refusals() == []
    assert stack.values["TracingMode"] == "Active"
    assert stack.values["DatabaseProxy"] == "true"
    # A pool of one per container behind the proxy: the faster mode through the pooler
    # (`make bench`), and the template's default.
    assert stack.values["DatabaseNullPool"] == "false"


def cors_of(stack: Resolver) -> dict[str, Any]:
    (api,) = of_type(stack.resources(), "AWS::ApiGatewayV2::Api").values()
    cors: dict[str, Any] = api["Body"]["x-amazon-apigateway-cors"]
    return cors


def test_cors_allows_the_given_origins_and_none_when_empty() -> None:
    # The transform put the default ("*") in place; the condition is CloudFormation's.
    assert cors_of(deployed())["allowOrigins"] == ["*"]
    # Empty: a configuration that allows no origin; browsers get no CORS headers.
    assert cors_of(deployed(CorsOrigins="")) == {"maxAge": 600}


@pytest.mark.parametrize("architecture", ["arm64", "x86_64"])
def test_one_parameter_sets_every_function_and_the_layer(architecture: str) -> None:
    resources = deployed(Architecture=architecture).resources()
    (layer,) = of_type(resources, "AWS::Lambda::LayerVersion").values()
    assert layer["CompatibleArchitectures"] == [architecture]
    functions = of_type(resources, "AWS::Lambda::Function")
    declared = of_type(sam_template()["Resources"], "AWS::Serverless::Function")
    assert set(functions) == set(declared)
    for name, function in functions.items():
        assert function["Architectures"] == [architecture], name


def test_database_url_is_declared_empty_so_that_sam_local_can_set_it() -> None:
    stack = deployed(DatabaseSecretArn=DATABASE_SECRET)
    for name, function in of_type(stack.resources(), "AWS::Lambda::Function").items():
        variables = function["Environment"]["Variables"]
        # Empty reads as unset (taskapi.settings): a deploy uses DATABASE_SECRET_ARN.
        assert variables["DATABASE_URL"] == "", name
        assert variables["DATABASE_SECRET_ARN"] == DATABASE_SECRET, name
