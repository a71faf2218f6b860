"""template.yaml as the SAM translator turns it into CloudFormation, in-process (what
`sam deploy` sends), and what the tests read of the result."""

import re
from typing import Any

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

from tests.support.functions import ROOT

TEMPLATE = ROOT / "template.yaml"
DATABASE_SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:taskapi-db-AbCdEf"
HTTP_FUNCTIONS = {"AuthFunction": "auth", "TasksFunction": "tasks", "HealthFunction": "health"}


class NoManagedPolicies:
    """The translator's managed-policy loader, without IAM: the template names no managed
    policy, so the translator never needs one."""

    def load(self) -> dict[str, str]:
        return {}


def sam_template() -> dict[str, Any]:
    """template.yaml as SAM reads it, local paths replaced as `sam package` replaces them."""
    template: dict[str, Any] = yaml_parse(TEMPLATE.read_text())
    for name, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(properties.get(key), str):
                properties[key] = f"s3://artifacts/{name}.zip"
    return template


def transformed(
    parameters: dict[str, str], template: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The CloudFormation template that the SAM transform makes of `template` (default:
    template.yaml) with these parameter values."""
    result: dict[str, Any] = transform(template or sam_template(), parameters, NoManagedPolicies())
    return result


def resources_of_type(cfn: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in cfn["Resources"].items() if r["Type"] == kind}


def api_routes(cfn: dict[str, Any]) -> dict[tuple[str, str], str]:
    """`(METHOD, path) -> function` for every route of the HTTP API."""
    (api,) = resources_of_type(cfn, "AWS::ApiGatewayV2::Api").values()
    routes = {}
    for path, operations in api["Properties"]["Body"]["paths"].items():
        for method, operation in operations.items():
            integration = operation["x-amazon-apigateway-integration"]
            assert integration["payloadFormatVersion"] == "2.0", (method, path)
            uri = integration["uri"]["Fn::Sub"]
            # Each function's alias `live` (AutoPublishAlias), never its unpublished $LATEST.
            function = re.search(r"\$\{(\w+)Aliaslive\}", uri)
            assert function is not None, uri
            verb = "ANY" if method == "x-amazon-apigateway-any-method" else method.upper()
            routes[(verb, path)] = function.group(1)
    return routes
