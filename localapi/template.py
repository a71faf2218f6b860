"""What the local server needs from a SAM template: functions, their layers, environment,
timeouts, and the HTTP API routes that reach them."""

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from samtranslator.yaml_helper import yaml_parse

logger = logging.getLogger("localapi")

# Lambda's own default, used when neither the function nor Globals sets `Timeout`.
DEFAULT_TIMEOUT = 3.0
DEFAULT_MEMORY = 128


class TemplateError(ValueError):
    """The template cannot be served: a missing handler, a malformed route..."""


@dataclass(frozen=True)
class Route:
    """One HttpApi event: `METHOD /path` with `{param}` and a trailing `{proxy+}`."""

    method: str
    path: str
    function: str
    pattern: re.Pattern[str] = field(repr=False, compare=False)
    greedy: bool
    literal_segments: int
    parameters: int

    @classmethod
    def parse(cls, method: str, path: str, function: str) -> "Route":
        regex, literals, parameters, greedy = "", 0, 0, False
        segments = path.strip("/").split("/") if path.strip("/") else []
        for index, segment in enumerate(segments):
            name = re.fullmatch(r"\{([A-Za-z0-9_.-]+)(\+?)\}", segment)
            if name is None:
                literals += 1
                regex += "/" + re.escape(segment)
            elif name.group(2):
                if index != len(segments) - 1:
                    raise TemplateError(f"{path}: a greedy {{name+}} must be the last segment")
                greedy = True
                regex += f"/(?P<{_group(name.group(1))}>.+)"
            else:
                parameters += 1
                regex += f"/(?P<{_group(name.group(1))}>[^/]+)"
        method = method.upper()
        if method in ("*", "X-AMAZON-APIGATEWAY-ANY-METHOD"):
            method = "ANY"
        return cls(method, path, function, re.compile(regex or "/"), greedy, literals, parameters)

    @property
    def key(self) -> str:
        """The event's `routeKey`, e.g. `ANY /api/tasks/{proxy+}`."""
        return f"{self.method} {self.path}"

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The path parameters when this route takes the request, else None."""
        if self.method not in ("ANY", method.upper()):
            return None
        found = self.pattern.fullmatch(path)
        if found is None:
            return None
        return {_ungroup(name): value for name, value in found.groupdict().items()}

    def specificity(self) -> tuple[int, int, int, int]:
        """Sort key, most specific first, as API Gateway picks among matching routes:
        exact paths, then path variables, then greedy paths; a method beats ANY."""
        any_method = int(self.method == "ANY")
        return (int(self.greedy), -self.literal_segments, self.parameters, any_method)


def _group(name: str) -> str:
    # Regex group names must be identifiers; API Gateway allows `.` and `-` too.
    return "p_" + name.encode().hex()


def _ungroup(group: str) -> str:
    return bytes.fromhex(group.removeprefix("p_")).decode()


@dataclass(frozen=True)
class Function:
    """One `AWS::Serverless::Function`, resolved against Globals."""

    name: str
    code_uri: Path
    handler: str
    layers: tuple[Path, ...]
    environment: dict[str, str]
    timeout: float
    memory: int
    routes: tuple[Route, ...]

    @property
    def handler_file(self) -> Path:
        """`app.handler` -> `<CodeUri>/app.py`; `pkg.mod.handler` -> `<CodeUri>/pkg/mod.py`."""
        module, _, _ = self.handler.rpartition(".")
        return self.code_uri.joinpath(*module.split(".")).with_suffix(".py")

    @property
    def handler_name(self) -> str:
        return self.handler.rpartition(".")[2]


@dataclass(frozen=True)
class Cors:
    """An HttpApi's `CorsConfiguration`: API Gateway answers preflights itself and puts
    these headers on every response, ignoring any CORS headers the functions return."""

    allow_origins: tuple[str, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int | None = None
    allow_credentials: bool = False

    def allows(self, origin: str) -> bool:
        return "*" in self.allow_origins or origin in self.allow_origins


@dataclass(frozen=True)
class Template:
    path: Path
    functions: dict[str, Function]
    cors: Cors | None = None
    # Environment variables left unset: their values need AWS (a secret's ARN...).
    unresolved: tuple[str, ...] = ()

    @cached_property
    def routes(self) -> list[Route]:
        """Every route, most specific first."""
        routes = [route for function in self.functions.values() for route in function.routes]
        return sorted(routes, key=Route.specificity)

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route API Gateway picks for `METHOD path`, and its path parameters; None
        when no route takes the request (API Gateway's 404)."""
        for route in self.routes:
            parameters = route.match(method, path)
            if parameters is not None:
                return route, parameters
        return None

    @property
    def source_dirs(self) -> list[Path]:
        """Folders whose code the server runs: every CodeUri and layer."""
        dirs = {f.code_uri for f in self.functions.values()}
        dirs.update(layer for f in self.functions.values() for layer in f.layers)
        return sorted(dirs)

    def function(self, name: str) -> Function:
        try:
            return self.functions[name]
        except KeyError:
            known = ", ".join(sorted(self.functions))
            raise TemplateError(f"No function {name!r} in {self.path} (known: {known})") from None


def load_template(path: Path | str, settings: Mapping[str, str] | None = None) -> Template:
    """The template, with its parameters at their defaults, except where `settings` (what
    the developer set: shell and `.env`) give a value to an environment variable that
    takes a parameter whole (`CORS_ORIGINS: !Ref CorsOrigins`): that parameter then has the
    developer's value everywhere it is used, in conditions and the CORS configuration too,
    as a deploy with that parameter would."""
    path = Path(path).resolve()
    # The SAM translator's reader (the one `sam` itself uses): `!Ref X` is `{"Ref": X}`,
    # `!Sub ...` is `{"Fn::Sub": ...}`, as in the template the tests transform.
    document = yaml_parse(path.read_text())
    if not isinstance(document, dict):
        raise TemplateError(f"{path} is not a template")
    resources: dict[str, Any] = document.get("Resources") or {}
    parameters: dict[str, Any] = document.get("Parameters") or {}
    defaults: dict[str, Any] = (document.get("Globals") or {}).get("Function") or {}
    resolver = _Resolver(parameters, document.get("Conditions") or {})
    if settings:
        resolver.override(_parameters_taken_whole(defaults, resources, parameters), settings)
    functions = {}
    for name, resource in resources.items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        properties = {**defaults, **(resource.get("Properties") or {})}
        if "Handler" not in properties or "CodeUri" not in properties:
            logger.warning("%s has no Handler or CodeUri (an image?); not served", name)
            continue
        layers = [*(defaults.get("Layers") or []), *(resource["Properties"].get("Layers") or [])]
        environment = {
            **_variables(defaults),
            **_variables(resource.get("Properties") or {}),
        }
        functions[name] = Function(
            name=name,
            code_uri=(path.parent / str(properties["CodeUri"])).resolve(),
            handler=str(properties["Handler"]),
            layers=tuple(_layer_dirs(layers, resources, path.parent)),
            environment=resolver.environment(name, environment),
            timeout=resolver.number(properties.get("Timeout"), DEFAULT_TIMEOUT),
            memory=int(resolver.number(properties.get("MemorySize"), DEFAULT_MEMORY)),
            routes=tuple(_routes(name, properties.get("Events") or {})),
        )
    return Template(path, functions, _cors(resources, resolver), tuple(sorted(resolver.unresolved)))


def _parameters_taken_whole(
    defaults: dict[str, Any], resources: dict[str, Any], parameters: dict[str, Any]
) -> dict[str, str]:
    """Environment variable -> the parameter it is set to with a bare `!Ref`."""
    taken = {}
    functions = [r for r in resources.values() if r.get("Type") == "AWS::Serverless::Function"]
    for properties in [defaults, *(f.get("Properties") or {} for f in functions)]:
        for name, value in _variables(properties).items():
            if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in parameters:
                taken[name] = str(value["Ref"])
    return taken


def _cors(resources: dict[str, Any], resolver: "_Resolver") -> Cors | None:
    for resource in resources.values():
        if resource.get("Type") != "AWS::Serverless::HttpApi":
            continue
        config = resolver.choose((resource.get("Properties") or {}).get("CorsConfiguration"))
        if isinstance(config, dict):
            max_age = config.get("MaxAge")
            return Cors(
                allow_origins=resolver.strings(config.get("AllowOrigins")),
                allow_methods=resolver.strings(config.get("AllowMethods")),
                allow_headers=resolver.strings(config.get("AllowHeaders")),
                expose_headers=resolver.strings(config.get("ExposeHeaders")),
                max_age=None if max_age is None else int(resolver.number(max_age, 0)),
                allow_credentials=resolver.resolve(config.get("AllowCredentials")) == "true",
            )
    return None


def _variables(properties: dict[str, Any]) -> dict[str, Any]:
    return dict(((properties.get("Environment") or {}).get("Variables")) or {})


def _layer_dirs(layers: list[Any], resources: dict[str, Any], base: Path) -> list[Path]:
    """Local folders of the template's own layers; a layer given by ARN cannot be served."""
    folders = []
    for layer in layers:
        resource = resources.get(str(layer.get("Ref"))) if isinstance(layer, dict) else None
        content = (resource or {}).get("Properties", {}).get("ContentUri")
        if not isinstance(content, str):
            logger.warning("Layer %s is not a folder of this template; skipped", layer)
            continue
        folder = (base / content).resolve()
        # A layer whose folder is laid out as Lambda extracts it (`python/...`).
        folders.append(folder / "python" if (folder / "python").is_dir() else folder)
    return folders


def _routes(function: str, events: dict[str, Any]) -> list[Route]:
    routes = []
    for event in events.values():
        if event.get("Type") != "HttpApi":
            continue
        properties = event.get("Properties") or {}
        if str(properties.get("PayloadFormatVersion", "2.0")) != "2.0":
            logger.warning("%s: payload format 1.0 is served as 2.0 locally", function)
        # An HttpApi event without Path and Method is the API's `$default` route.
        routes.append(
            Route.parse(
                str(properties.get("Method", "ANY")),
                str(properties.get("Path", "/{proxy+}")),
                function,
            )
        )
    return routes


class _Resolver:
    """Resolves what can be known without AWS: `!Ref Param` (its Default), pseudo
    parameters, and `!Sub` over those. Anything else (a resource's ARN) stays unset."""

    def __init__(self, parameters: dict[str, Any], conditions: dict[str, Any]) -> None:
        self.conditions = conditions
        # Environment variables whose values need AWS (a secret's ARN...): left unset.
        self.unresolved: set[str] = set()
        self.values = {
            name: str(spec["Default"])
            for name, spec in parameters.items()
            if isinstance(spec, dict) and "Default" in spec
        }
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
        self.values.update(
            {
                "AWS::Region": region,
                "AWS::AccountId": "123456789012",
                "AWS::Partition": "aws",
                "AWS::URLSuffix": "amazonaws.com",
                "AWS::StackName": "local",
            }
        )

    def override(self, taken: dict[str, str], settings: Mapping[str, str]) -> None:
        """Give each parameter in `taken` the value `settings` has for its variable."""
        for variable, parameter in taken.items():
            if variable in settings:
                self.values[parameter] = settings[variable]

    def environment(self, function: str, variables: dict[str, Any]) -> dict[str, str]:
        resolved = {}
        for name, value in variables.items():
            text = self.resolve(value)
            if text is None:
                self.unresolved.add(name)
            else:
                resolved[name] = text
        return resolved

    def choose(self, value: Any) -> Any:
        """The branch an `!If` takes (None for `AWS::NoValue` or an unknown condition)."""
        while isinstance(value, dict) and isinstance(value.get("Fn::If"), list):
            name, when_true, when_false = value["Fn::If"]
            holds = self.condition(name)
            if holds is None:
                return None
            value = when_true if holds else when_false
        return None if value == {"Ref": "AWS::NoValue"} else value

    def condition(self, name: str) -> bool | None:
        return self._holds(self.conditions.get(name))

    def _holds(self, expression: Any) -> bool | None:
        if not isinstance(expression, dict) or len(expression) != 1:
            return None
        ((function, arguments),) = expression.items()
        if function == "Condition":
            return self.condition(str(arguments))
        if function == "Fn::Equals":
            left, right = (self.resolve(argument) for argument in arguments)
            return None if left is None or right is None else left == right
        results = [self._holds(argument) for argument in arguments]
        if None in results:
            return None
        if function == "Fn::Not":
            return not results[0]
        if function in ("Fn::And", "Fn::Or"):
            return all(results) if function == "Fn::And" else any(results)
        return None

    def strings(self, value: Any) -> tuple[str, ...]:
        """A list (or `!Split`) of strings, leaving out what cannot be resolved."""
        if isinstance(value, dict) and isinstance(value.get("Fn::Split"), list):
            separator, text = value["Fn::Split"]
            resolved = self.resolve(text)
            return tuple(resolved.split(separator)) if resolved is not None else ()
        items = value if isinstance(value, list) else [] if value is None else [value]
        return tuple(text for item in items if (text := self.resolve(item)) is not None)

    def number(self, value: Any, default: float) -> float:
        text = None if value is None else self.resolve(value)
        try:
            return float(text) if text is not None else default
        except ValueError:
            return default

    def resolve(self, value: Any) -> str | None:
        value = self.choose(value)
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, str | int | float):
            return str(value)
        if isinstance(value, dict) and "Ref" in value:
            return self.values.get(str(value["Ref"]))
        if isinstance(value, dict) and isinstance(value.get("Fn::Sub"), str):
            text: str = value["Fn::Sub"]
            names = re.findall(r"\$\{([^}!]+)\}", text)
            if any(name not in self.values for name in names):
                return None
            return re.sub(r"\$\{([^}!]+)\}", lambda found: self.values[found.group(1)], text)
        return None
