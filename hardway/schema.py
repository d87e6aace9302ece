"""A JSON Schema of cluster.yaml, from the spec model (hardway.spec.ClusterSpec), for editors.

The shape is pydantic's: keys, types, required fields, no unknown key. The words a field takes from a
short list (roles, key algorithms, encryption providers) are added as enums from the same constants
the loader checks against. Everything else `validate` checks (addresses, CIDRs, overlaps, DNS
labels) needs the whole spec and stays in `validate`. `hardway schema` prints it; the wheel ships it
as hardway/cluster.schema.json, which a test keeps equal to what this module makes.
"""

from __future__ import annotations

import json
from pathlib import Path

from .spec import ENCRYPTION_PROVIDERS, KEY_ALGORITHMS, ROLES, ClusterSpec

SCHEMA_FILE = Path(__file__).resolve().parent / "cluster.schema.json"


def _drop_titles(node, field_names: bool = False) -> None:
    """pydantic's per-field titles ("Extrasans") help nobody in an editor. (In `properties` the keys
    are field names, not keywords.)"""
    if isinstance(node, dict):
        if not field_names:
            node.pop("title", None)
        for key, value in node.items():
            _drop_titles(value, field_names=key == "properties" and not field_names)
    elif isinstance(node, list):
        for value in node:
            _drop_titles(value)


def cluster_schema() -> dict:
    body = ClusterSpec.model_json_schema()
    _drop_titles(body)
    defs = body["$defs"]
    defs["NodeSpec"]["properties"]["roles"]["items"]["enum"] = list(ROLES)
    defs["PkiSpec"]["properties"]["keyAlgorithm"]["enum"] = list(KEY_ALGORITHMS)
    defs["EncryptionSpec"]["properties"]["provider"]["enum"] = list(ENCRYPTION_PROVIDERS)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "hardway cluster.yaml",
            "description": "The cluster spec of hardway (README.md, 'The cluster spec'). The shape only: "
                           "`hardway validate` checks the values too.",
            **body}


def schema_text() -> str:
    return json.dumps(cluster_schema(), indent=2) + "\n"
