"""How the code describes itself in the OpenAPI document (tools/generate.py writes it).

Light on purpose: the health function imports it without SQLAlchemy or the models.
"""

from fastapi.routing import APIRoute
from pydantic import ConfigDict

# The config of every response schema: a field with a default is in every answer all the
# same, so the document lists it as required (pydantic leaves such fields out, and
# generated clients then type them as maybe missing).
RESPONSE_CONFIG = ConfigDict(json_schema_serialization_defaults_required=True)


def operation_id(route: APIRoute) -> str:
    """The route function's name in camelCase (`complete_task` -> `completeTask`).

    FastAPI's default adds the path and method (`complete_task_api_tasks__task_id__complete_patch`),
    which generated clients turn into unreadable method names.
    """
    first, *rest = route.name.split("_")
    return first + "".join(word.capitalize() for word in rest)
