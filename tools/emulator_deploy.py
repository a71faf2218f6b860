"""A deploy of template.yaml to moto's server, as far as an emulator lets it go.

    python tools/emulator_deploy.py   # after `make build`; needs moto[server,cloudformation]

moto's CloudFormation does not run the SAM transform, so this does what `sam deploy` and
CloudFormation would: the SAM translator turns the template into plain CloudFormation,
the built artifacts (.aws-sam/build) are zipped into a bucket, and the stack is created
from that. Prints each resource's status and the stack's outcome (docs/DEPLOY.md,
"Deploying to an emulator", says how far it gets and why it stops there).
"""

import io
import json
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import boto3
from moto.server import ThreadedMotoServer
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / ".aws-sam" / "build"
REGION = "us-east-1"
BUCKET = "taskapi-artifacts"
STACK = "taskapi-emulated"


class _NoManagedPolicies:
    def load(self) -> dict[str, str]:
        return {}


def zipped(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder))
    return buffer.getvalue()


def main() -> int:
    if not (BUILD / "SharedLayer").is_dir():
        print("no .aws-sam/build: run `make build` first", file=sys.stderr)
        return 2
    import logging
    import warnings

    warnings.simplefilter("ignore")  # one warning per unsupported resource, repeated
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    session = boto3.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 (moto's, not a credential)
        region_name=REGION,
    )

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=endpoint)

    try:
        s3 = client("s3")
        s3.create_bucket(Bucket=BUCKET)
        secret = client("secretsmanager").create_secret(
            Name="taskapi/database", SecretString="sqlite:////tmp/taskapi-emulated.db"
        )
        template: dict[str, Any] = yaml_parse((ROOT / "template.yaml").read_text())
        for name, resource in template["Resources"].items():
            properties = resource.get("Properties", {})
            for key in ("CodeUri", "ContentUri"):
                if isinstance(properties.get(key), str):
                    s3.put_object(Bucket=BUCKET, Key=f"{name}.zip", Body=zipped(BUILD / name))
                    properties[key] = f"s3://{BUCKET}/{name}.zip"
        parameters = {
            "DatabaseSecretArn": secret["ARN"],
            # The custom resource would invoke the migrate function, which moto runs only
            # in Docker: left out, as `RunMigrationsOnDeploy=false` leaves it out on AWS.
            "RunMigrationsOnDeploy": "false",
        }
        cfn_template = transform(template, parameters, _NoManagedPolicies())
        cloudformation = client("cloudformation")
        started = time.monotonic()
        cloudformation.create_stack(
            StackName=STACK,
            TemplateBody=json.dumps(cfn_template),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
        )
        stack = cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]
        while stack["StackStatus"].endswith("IN_PROGRESS") and time.monotonic() - started < 120:
            time.sleep(1)
            stack = cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]
        resources = cloudformation.describe_stack_resources(StackName=STACK)["StackResources"]
        # moto marks a resource type it cannot create CREATE_COMPLETE with no type or id.
        made = {r["LogicalResourceId"]: r for r in resources if "LogicalResourceId" in r}
        # Resources whose condition is false (no VPC, no alarm email) are left out on AWS too.
        skipped = sorted(
            f"{name} ({resource['Type']})"
            for name, resource in cfn_template["Resources"].items()
            if name not in made and "Condition" not in resource
        )
        for name, resource in sorted(made.items()):
            print(f"{resource['ResourceStatus']:<16} {resource['ResourceType']:<28} {name}")
        print(f"accepted but not created by moto ({len(skipped)}): {', '.join(skipped)}")
        print(f"stack {stack['StackStatus']}: {len(made)} of {len(cfn_template['Resources'])} made")
        # What AWS would run: the functions' configuration as the stack made it.
        lambda_ = client("lambda")
        for output in stack.get("Outputs", []):
            if output["OutputKey"].endswith("FunctionName"):
                config = lambda_.get_function(FunctionName=output["OutputValue"])["Configuration"]
                print(
                    f"{output['OutputKey'][:-4]}: {config['Runtime']} {config['Architectures']} "
                    f"{config['Handler']} timeout {config['Timeout']} s, "
                    f"{len(config.get('Layers', []))} layer, "
                    f"tracing {config.get('TracingConfig', {}).get('Mode')}, "
                    f"role {config['Role'].rpartition('/')[2]}"
                )
        return 0 if stack["StackStatus"] == "CREATE_COMPLETE" else 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
