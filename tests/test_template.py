"""template.yaml, transformed in-process by the SAM translator (what `sam deploy` sends to
CloudFormation), checked against the functions' FastAPI apps and the contract."""

import copy
import functools
import math
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from samtranslator.yaml_helper import yaml_parse

from taskapi.settings import Settings
from tests.support.emf import emf_lines
from tests.support.environment import configure
from tests.support.functions import ROOT, load_function
from tests.support.keys import JWT_KEY
from tests.support.template import (
    DATABASE_SECRET,
    HTTP_FUNCTIONS,
    TEMPLATE,
    api_routes,
    resources_of_type,
    sam_template,
    transformed,
)

# Invoked by EventBridge or by hand, not through the API.
EVENT_FUNCTIONS = {"MaintenanceFunction": "maintenance", "RemindersFunction": "reminders"}
ALL_FUNCTIONS = (*HTTP_FUNCTIONS, *EVENT_FUNCTIONS, "MigrateFunction")
# Which secrets each function may read: no function gets a secret it does not use.
SECRETS = {
    "AuthFunction": {"DatabaseSecretArn", "JwtSecret"},
    "TasksFunction": {"DatabaseSecretArn", "JwtSecret"},
    "HealthFunction": {"DatabaseSecretArn"},
    "MaintenanceFunction": {"DatabaseSecretArn"},
    "RemindersFunction": {"DatabaseSecretArn"},
    "MigrateFunction": {"DatabaseSecretArn"},
}
# The contract's settings (docs/API.md "Configuration") that the deployed functions get.
CONTRACT_SETTINGS = {
    "STAGE",
    "JWT_ALGORITHM",
    "ACCESS_TOKEN_EXPIRE_MINUTES",
    "REFRESH_TOKEN_EXPIRE_DAYS",
    "BCRYPT_ROUNDS",
    "LOGIN_MAX_ATTEMPTS",
    "LOGIN_MAX_ATTEMPTS_PER_EMAIL",
    "LOGIN_LOCKOUT_MINUTES",
    "LOG_LEVEL",
    "CORS_ORIGINS",
    "DATABASE_POOL_SIZE",
    "DATABASE_MAX_OVERFLOW",
    "DATABASE_POOL_TIMEOUT",
    "DATABASE_SECRET_ARN",
}


@functools.cache
def _transformed() -> dict[str, Any]:
    return transformed({"DatabaseSecretArn": DATABASE_SECRET})


@pytest.fixture
def cfn() -> dict[str, Any]:
    """The CloudFormation template that the SAM transform produces."""
    return copy.deepcopy(_transformed())


# ---------------------------------------------------------------------------------------
# Routes


def route_matches(route: tuple[str, str], method: str, path: str) -> bool:
    """Does the API route `(METHOD, path)` send `method path` (FastAPI's syntax) on?"""
    route_method, route_path = route
    if route_method not in ("ANY", method):
        return False
    if route_path.endswith("/{proxy+}"):
        # A greedy path needs at least one more segment after its prefix.
        return path.startswith(route_path.removesuffix("{proxy+}")) and not path.endswith("/")
    # `{id}` in either path stands for one segment.
    pattern = re.sub(r"\\\{[^/]+\\\}", "[^/]+", re.escape(route_path))
    return re.fullmatch(pattern, path) is not None or route_path == path


def app_routes(domain: str) -> set[tuple[str, str]]:
    """`(METHOD, path)` for every route the function's FastAPI app declares, including
    those of included routers."""
    app = load_function(domain).app
    return {
        (method, context.path)
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute) and context.path
        for method in context.methods or ()
    }


@pytest.fixture
def apps(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[tuple[str, str]]]:
    """The routes of each HTTP function's app; skipped for an app not written yet."""
    # The `db` fixture's settings, without a database: importing an app connects to none.
    configure(
        monkeypatch,
        stage="test",
        jwt_secret_key=JWT_KEY,
        bcrypt_rounds="4",
        cors_origins="",
    )
    routes = {}
    for function, domain in HTTP_FUNCTIONS.items():
        routes[function] = app_routes(domain)
    return routes


@pytest.mark.parametrize("function", HTTP_FUNCTIONS)
def test_every_app_route_is_reachable_through_the_api(
    cfn: dict[str, Any], apps: dict[str, set[tuple[str, str]]], function: str
) -> None:
    routes = api_routes(cfn)
    assert apps[function], f"{function}'s app declares no route"
    for method, path in apps[function]:
        reaching = {routes[route] for route in routes if route_matches(route, method, path)}
        assert reaching == {function}, f"{method} {path} reaches {reaching or 'nothing'}"


def test_every_api_route_has_a_handler_route(
    cfn: dict[str, Any], apps: dict[str, set[tuple[str, str]]]
) -> None:
    for route, function in api_routes(cfn).items():
        served = [r for r in apps[function] if route_matches(route, *r)]
        assert served, f"{route} goes to {function}, whose app has no route for it"


def test_routes_are_the_contracts(cfn: dict[str, Any]) -> None:
    assert api_routes(cfn) == {
        ("ANY", "/api/auth/{proxy+}"): "AuthFunction",
        ("ANY", "/api/tasks"): "TasksFunction",
        ("ANY", "/api/tasks/{proxy+}"): "TasksFunction",
        ("GET", "/health"): "HealthFunction",
        ("GET", "/health/{proxy+}"): "HealthFunction",
        ("GET", "/docs"): "HealthFunction",
        ("GET", "/docs/{proxy+}"): "HealthFunction",
        ("GET", "/redoc"): "HealthFunction",
        ("GET", "/redoc/{proxy+}"): "HealthFunction",
        ("GET", "/openapi.json"): "HealthFunction",
    }


def test_route_matching_honours_proxy_paths() -> None:
    assert route_matches(("ANY", "/api/tasks/{proxy+}"), "PATCH", "/api/tasks/{task_id}/complete")
    assert route_matches(("ANY", "/api/tasks"), "GET", "/api/tasks")
    assert not route_matches(("ANY", "/api/tasks/{proxy+}"), "GET", "/api/tasks")
    assert not route_matches(("GET", "/health/{proxy+}"), "POST", "/health/db")
    assert not route_matches(("GET", "/health"), "GET", "/healthz")


def test_the_api_has_cors_throttling_and_access_logs(cfn: dict[str, Any]) -> None:
    (api,) = resources_of_type(cfn, "AWS::ApiGatewayV2::Api").values()
    condition, cors, otherwise = api["Properties"]["Body"]["x-amazon-apigateway-cors"]["Fn::If"]
    # The parameter, resolved to its default ("*") by the transform; empty allows no
    # origin. A mapping, never AWS::NoValue, which `sam local` cannot resolve.
    assert (condition, otherwise) == ("HasCors", {"maxAge": 600})
    assert cors["allowOrigins"] == {"Fn::Split": [",", "*"]}
    assert {"authorization", "content-type", "if-match", "idempotency-key"} <= set(
        cors["allowHeaders"]
    )
    assert {"etag", "location", "retry-after", "idempotent-replayed"} <= set(cors["exposeHeaders"])
    assert {"GET", "POST", "PUT", "PATCH", "DELETE"} <= set(cors["allowMethods"])
    (stage,) = resources_of_type(cfn, "AWS::ApiGatewayV2::Stage").values()
    properties = stage["Properties"]
    # The $default stage: paths reach the apps without a stage prefix.
    assert properties["StageName"] == "$default"
    assert properties["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": {"Ref": "ThrottlingRateLimit"},
        "ThrottlingBurstLimit": {"Ref": "ThrottlingBurstLimit"},
    }
    logs = properties["AccessLogSettings"]
    assert logs["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    assert "$context.requestId" in logs["Format"]
    assert "$context.status" in logs["Format"]


# ---------------------------------------------------------------------------------------
# Functions


def functions(cfn: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = resources_of_type(cfn, "AWS::Lambda::Function")
    assert set(found) == set(ALL_FUNCTIONS)
    return found


def test_every_function_runs_python_3_13_on_one_architecture_with_the_layer(
    cfn: dict[str, Any],
) -> None:
    parameter = sam_template()["Parameters"]["Architecture"]
    assert (parameter["Default"], parameter["AllowedValues"]) == ("arm64", ["arm64", "x86_64"])
    layers = resources_of_type(cfn, "AWS::Lambda::LayerVersion")
    (layer_name,) = layers
    assert layer_name.startswith("SharedLayer")
    layer = layers[layer_name]["Properties"]
    assert layer["CompatibleRuntimes"] == ["python3.13"]
    # The transform leaves the parameter to CloudFormation: one place for all of them.
    assert layer["CompatibleArchitectures"] == [{"Ref": "Architecture"}]
    raw = yaml_parse(TEMPLATE.read_text())["Resources"]["SharedLayer"]["Metadata"]
    assert raw["BuildArchitecture"] == {"Ref": "Architecture"}
    for name, function in functions(cfn).items():
        properties = function["Properties"]
        assert properties["Runtime"] == "python3.13", name
        assert properties["Architectures"] == [{"Ref": "Architecture"}], name
        assert properties["Layers"] == [{"Ref": layer_name}], name


def test_handlers_and_code_folders() -> None:
    resources = sam_template()["Resources"]
    for function, domain in {**HTTP_FUNCTIONS, **EVENT_FUNCTIONS}.items():
        properties = resources[function]["Properties"]
        assert properties["Handler"] == "app.handler"
        assert properties["CodeUri"] == f"s3://artifacts/{function}.zip"
        assert (ROOT / "functions" / domain).is_dir()
    raw = yaml_parse(TEMPLATE.read_text())["Resources"]
    assert raw["MigrateFunction"]["Properties"]["CodeUri"] == "migrations/"
    assert raw["MigrateFunction"]["Properties"]["Handler"] == "handler.handler"
    for function in ALL_FUNCTIONS:
        # Built by shared/Makefile: code only, compiled to bytecode (tests/test_build.py).
        assert raw[function]["Metadata"] == {"BuildMethod": "makefile", "ContextPath": "shared"}
    assert raw["SharedLayer"]["Metadata"]["BuildMethod"] == "makefile"


def test_the_auth_function_has_a_full_vcpu_for_bcrypt(cfn: dict[str, Any]) -> None:
    parameters = sam_template()["Parameters"]
    auth = functions(cfn)["AuthFunction"]["Properties"]
    assert auth["MemorySize"] == {"Ref": "AuthMemorySize"}
    # Lambda gives one full vCPU at 1769 MB; less would slow every login.
    assert parameters["AuthMemorySize"]["Default"] >= 1769
    assert parameters["BcryptRounds"]["Default"] == 12
    env = auth["Environment"]["Variables"]
    assert env["BCRYPT_ROUNDS"] == {"Ref": "BcryptRounds"}


def test_functions_get_the_contracts_settings(cfn: dict[str, Any]) -> None:
    known = {name.upper() for name in Settings.model_fields}
    for name, function in functions(cfn).items():
        env = function["Properties"]["Environment"]["Variables"]
        assert set(env) >= CONTRACT_SETTINGS, name
        # Every variable is a setting the layer reads (a typo would be silently ignored).
        assert set(env) <= known, set(env) - known
        assert env["DATABASE_SECRET_ARN"] == {"Ref": "DatabaseSecretArn"}
        # Only the functions that may read the JWT secret are told where it is.
        has_jwt = "JwtSecret" in SECRETS[name]
        assert ("JWT_SECRET_ARN" in env) == has_jwt, name
        if has_jwt:
            assert env["JWT_SECRET_ARN"] == {"Ref": "JwtSecret"}


def test_timeouts_stay_inside_the_http_apis_limit(cfn: dict[str, Any]) -> None:
    for name, function in functions(cfn).items():
        timeout = function["Properties"]["Timeout"]
        if name not in HTTP_FUNCTIONS:
            assert timeout >= 60, name
        else:
            assert timeout <= 29, name


# ---------------------------------------------------------------------------------------
# Schedule, migrations on deploy, secrets and policies


@pytest.mark.parametrize(
    ("function", "schedule", "default"),
    [
        ("HealthFunction", "HealthCheckSchedule", "rate(5 minutes)"),
        ("MaintenanceFunction", "MaintenanceSchedule", "rate(1 hour)"),
    ],
)
def test_each_schedule_targets_its_function(
    cfn: dict[str, Any], function: str, schedule: str, default: str
) -> None:
    rules = [
        rule["Properties"]
        for rule in resources_of_type(cfn, "AWS::Events::Rule").values()
        if rule["Properties"]["ScheduleExpression"] == {"Ref": schedule}
    ]
    (properties,) = rules
    assert sam_template()["Parameters"][schedule]["Default"] == default
    assert properties["State"] == "ENABLED"
    # The health function's alias `live`, as the API's routes (AutoPublishAlias); the
    # maintenance function has no alias (no SnapStart), so the function itself.
    target: dict[str, Any]
    invoked: dict[str, Any]
    if function == "HealthFunction":
        target = invoked = {"Ref": f"{function}Aliaslive"}
    else:
        target, invoked = {"Fn::GetAtt": [function, "Arn"]}, {"Ref": function}
    assert [t["Arn"] for t in properties["Targets"]] == [target]
    permissions = resources_of_type(cfn, "AWS::Lambda::Permission").values()
    assert any(
        p["Properties"]["Principal"] == "events.amazonaws.com"
        and p["Properties"]["FunctionName"] == invoked
        for p in permissions
    )


def test_the_reminders_run_every_minute(cfn: dict[str, Any]) -> None:
    (rule,) = [
        rule["Properties"]
        for rule in resources_of_type(cfn, "AWS::Events::Rule").values()
        if rule["Properties"]["ScheduleExpression"] == "rate(1 minute)"
    ]
    assert rule["State"] == "ENABLED"
    assert [target["Arn"] for target in rule["Targets"]] == [
        {"Fn::GetAtt": ["RemindersFunction", "Arn"]}
    ]


def test_the_maintenance_run_is_not_retried_and_gets_the_retention(cfn: dict[str, Any]) -> None:
    configs = resources_of_type(cfn, "AWS::Lambda::EventInvokeConfig").values()
    assert {config["Properties"]["FunctionName"]["Ref"] for config in configs} == {
        "MaintenanceFunction",
        "RemindersFunction",
    }
    assert all(config["Properties"]["MaximumRetryAttempts"] == 0 for config in configs)
    env = functions(cfn)["MaintenanceFunction"]["Properties"]["Environment"]["Variables"]
    assert env["TRASH_RETENTION_DAYS"] == {"Ref": "TrashRetentionDays"}
    assert env["CHANGES_RETENTION_DAYS"] == {"Ref": "ChangesRetentionDays"}
    budget = float(env["MAINTENANCE_TIME_BUDGET_SECONDS"])
    assert budget < functions(cfn)["MaintenanceFunction"]["Properties"]["Timeout"]
    reminders = functions(cfn)["RemindersFunction"]["Properties"]
    # A run ends before the next minute's starts.
    assert float(reminders["Environment"]["Variables"]["REMINDERS_TIME_BUDGET_SECONDS"]) < 60
    assert reminders["Timeout"] == 60
    tasks_env = functions(cfn)["TasksFunction"]["Properties"]["Environment"]["Variables"]
    assert tasks_env["MAX_TASKS_PER_USER"] == {"Ref": "MaxTasksPerUser"}
    parameters = sam_template()["Parameters"]
    assert (
        parameters["TrashRetentionDays"]["Default"],
        parameters["MaxTasksPerUser"]["Default"],
    ) == (
        30,
        10000,
    )


def test_migrations_run_on_deploy_through_the_migrate_function(cfn: dict[str, Any]) -> None:
    hook = cfn["Resources"]["MigrateOnDeploy"]
    assert hook["Condition"] == "RunMigrations"
    assert cfn["Conditions"]["RunMigrations"] == {
        "Fn::Equals": [{"Ref": "RunMigrationsOnDeploy"}, "true"]
    }
    properties = hook["Properties"]
    assert properties["ServiceToken"] == {"Fn::GetAtt": ["MigrateFunction", "Arn"]}
    # A property that changes with every new version of the code or the layer: that is
    # what makes CloudFormation send an Update, and so run the migrations.
    (version,) = [
        name
        for name, resource in resources_of_type(cfn, "AWS::Lambda::Version").items()
        if resource["Properties"]["FunctionName"] == {"Ref": "MigrateFunction"}
    ]
    assert properties["FunctionVersion"] == {"Ref": version}
    assert properties["ServiceTimeout"] > functions(cfn)["MigrateFunction"]["Properties"]["Timeout"]
    assert sam_template()["Parameters"]["RunMigrationsOnDeploy"]["Default"] == "true"


def test_the_jwt_secret_is_generated_as_a_plain_string(cfn: dict[str, Any]) -> None:
    secret = cfn["Resources"]["JwtSecret"]
    generate = secret["Properties"]["GenerateSecretString"]
    # No SecretStringTemplate: the secret is the key itself, as the layer reads it.
    assert "SecretStringTemplate" not in generate
    assert "GenerateStringKey" not in generate
    assert generate["PasswordLength"] >= 32


def readable_secrets(role: dict[str, Any]) -> set[str]:
    """The secrets (by the name the template refers to them with) a role may read."""
    secrets = set()
    for policy in role["Properties"].get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            actions = statement["Action"]
            actions = [actions] if isinstance(actions, str) else actions
            if not any(action.startswith("secretsmanager:") for action in actions):
                continue
            assert actions == ["secretsmanager:GetSecretValue"], actions
            resources = statement["Resource"]
            for resource in resources if isinstance(resources, list) else [resources]:
                # A SAM policy template renders `SecretArn` as `Fn::Sub: [${secretArn}, ...]`.
                reference = (
                    resource["Fn::Sub"][1]["secretArn"] if "Fn::Sub" in resource else resource
                )
                secrets.add(reference["Ref"])
    return secrets


def test_each_function_reads_only_its_own_secrets(cfn: dict[str, Any]) -> None:
    for name, function in functions(cfn).items():
        role_name = function["Properties"]["Role"]["Fn::GetAtt"][0]
        role = cfn["Resources"][role_name]
        assert readable_secrets(role) == SECRETS[name], name


def test_no_inline_policy_grants_every_resource(cfn: dict[str, Any]) -> None:
    for name, role in resources_of_type(cfn, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                resources = statement["Resource"]
                resources = resources if isinstance(resources, list) else [resources]
                assert "*" not in resources, (name, statement)
                assert statement["Effect"] == "Allow"


def test_the_database_secret_is_a_required_parameter() -> None:
    parameter = sam_template()["Parameters"]["DatabaseSecretArn"]
    assert "Default" not in parameter
    assert re.fullmatch(parameter["AllowedPattern"], DATABASE_SECRET)
    assert not re.fullmatch(parameter["AllowedPattern"], "taskapi-db")


def test_vpc_settings_are_optional(cfn: dict[str, Any]) -> None:
    parameters = sam_template()["Parameters"]
    assert parameters["SubnetIds"]["Default"] == ""
    assert parameters["SecurityGroupIds"]["Default"] == ""
    for name, function in functions(cfn).items():
        vpc = function["Properties"]["VpcConfig"]["Fn::If"]
        assert vpc[0] == "HasVpc", name
        assert vpc[2] == {"Ref": "AWS::NoValue"}, name


# ---------------------------------------------------------------------------------------
# Alarms and outputs


def alarms(cfn: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: alarm["Properties"]
        for name, alarm in resources_of_type(cfn, "AWS::CloudWatch::Alarm").items()
    }


def test_an_alarm_watches_the_apis_5xx_responses(cfn: dict[str, Any]) -> None:
    alarm = alarms(cfn)["Api5xxAlarm"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/ApiGateway", "5xx")
    assert alarm["Dimensions"] == [{"Name": "ApiId", "Value": {"Ref": "HttpApi"}}]


def test_the_database_alarm_watches_what_the_health_check_writes(
    cfn: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The health function's own EMF line names the namespace, metric and dimension the
    alarm watches (a renamed metric would leave the alarm watching nothing)."""
    configure(monkeypatch, stage="prod")
    load_function("health")  # puts functions/health on sys.path
    from health_schedule import publish_metrics  # type: ignore[import-not-found]

    capsys.readouterr()
    publish_metrics(database_up=False, latency_ms=None)
    (emf,) = emf_lines(capsys.readouterr().out)
    (directive,) = emf["_aws"]["CloudWatchMetrics"]
    alarm = alarms(cfn)["DatabaseDownAlarm"]
    assert directive["Namespace"] == alarm["Namespace"] == "TaskApi"
    assert alarm["MetricName"] in {metric["Name"] for metric in directive["Metrics"]}
    assert [d["Name"] for d in alarm["Dimensions"]] == ["Stage"]
    assert ["Stage"] in directive["Dimensions"]
    assert emf["Stage"] == "prod"
    assert alarm["Dimensions"][0]["Value"] == {"Ref": "Stage"}
    assert emf[alarm["MetricName"]] in (0, [0])
    # Up is 1: anything below it is an outage; no data at all counts as one too.
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("LessThanThreshold", 1)
    assert alarm["TreatMissingData"] == "breaching"


def test_outputs_name_the_api_url_and_the_functions(cfn: dict[str, Any]) -> None:
    outputs = cfn["Outputs"]
    assert outputs["ApiUrl"]["Value"] == {
        "Fn::Sub": "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"
    }
    for function in ALL_FUNCTIONS:
        assert outputs[f"{function}Name"]["Value"] == {"Ref": function}


def test_samconfig_has_a_dev_and_a_prod_environment() -> None:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    for env, stack in (("default", "taskapi-dev"), ("prod", "taskapi-prod")):
        assert config[env]["global"]["parameters"]["stack_name"] == stack
        deploy = config[env]["deploy"]["parameters"]
        assert deploy["capabilities"] == "CAPABILITY_IAM"
        assert deploy["resolve_s3"] is True
        overrides = dict(item.split("=", 1) for item in deploy["parameter_overrides"].split())
        assert overrides["Stage"] == ("dev" if env == "default" else "prod")
        # Every override names a parameter of the template.
        assert set(overrides) <= set(sam_template()["Parameters"])
        build = config[env]["build"]["parameters"]
        assert build["cached"] is True
        assert build["parallel"] is True


def test_the_template_is_what_the_local_server_reads() -> None:
    """The Docker-free local server serves the same template: same functions and routes."""
    from localapi.template import load_template

    template = load_template(TEMPLATE)
    assert set(template.functions) == set(ALL_FUNCTIONS)
    keys = {route.key for route in template.routes}
    assert "ANY /api/auth/{proxy+}" in keys
    assert "GET /openapi.json" in keys
    assert Path(template.functions["MigrateFunction"].code_uri) == ROOT / "migrations"


def test_an_alarm_watches_the_maintenance_runs_failures(
    cfn: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    alarm = cfn["Resources"]["MaintenanceFailureAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("TaskApi", "MaintenanceFailures")
    assert alarm["Dimensions"] == [{"Name": "Stage", "Value": {"Ref": "Stage"}}]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == (
        "GreaterThanOrEqualToThreshold",
        1,
    )

    # The metric is the one a failed run writes, in the namespace and dimension watched.
    load_function("maintenance")  # puts functions/maintenance on sys.path
    from maintenance_jobs import MaintenanceResult, publish_metrics  # type: ignore[import-not-found]

    capsys.readouterr()
    publish_metrics(MaintenanceResult(failed=["trash"]), stage="prod")
    (emf,) = emf_lines(capsys.readouterr().out)
    (directive,) = emf["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == alarm["Namespace"]
    assert directive["Dimensions"] == [["Stage"]]
    assert emf["Stage"] == "prod"
    assert alarm["MetricName"] in {metric["Name"] for metric in directive["Metrics"]}
    assert emf[alarm["MetricName"]] >= alarm["Threshold"]


def test_number_parameters_stay_inside_the_bounds_of_their_settings(cfn: dict[str, Any]) -> None:
    # A value the settings refuse must fail at deploy, not at the function's first start.
    # A parameter may be stricter (BcryptRounds keeps deployed stages at 10 to 14).
    parameters = sam_template()["Parameters"]
    checked = set()
    for function in functions(cfn).values():
        for variable, value in function["Properties"]["Environment"]["Variables"].items():
            parameter = parameters.get(value.get("Ref")) if isinstance(value, dict) else None
            if parameter is None or parameter["Type"] != "Number":
                continue
            for constraint in Settings.model_fields[variable.lower()].metadata:
                if getattr(constraint, "ge", None) is not None:
                    assert parameter.get("MinValue", -math.inf) >= constraint.ge, variable
                if getattr(constraint, "le", None) is not None:
                    assert parameter.get("MaxValue", math.inf) <= constraint.le, variable
            checked.add(variable)
    assert {"PASSWORD_RESET_MINUTES", "BCRYPT_ROUNDS", "MAX_TASKS_PER_USER"} <= checked
