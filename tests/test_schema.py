"""The JSON Schema of cluster.yaml (`hardway schema`, shipped as hardway/cluster.schema.json): every
example conforms, and it rejects every spec whose shape `validate` rejects (the loader's own model
refuses it), using the bad specs of test_spec.py as the cases."""

from __future__ import annotations

import json

import pytest
import yaml
from pydantic import ValidationError

from hardway.schema import SCHEMA_FILE, schema_text
from hardway.spec import ClusterSpec
from helpers import REPO

jsonschema = pytest.importorskip("jsonschema", reason="pip install -e '.[test]' (jsonschema is a test extra)")


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_shipped_schema_is_the_models():
    assert SCHEMA_FILE.read_text() == schema_text(), "regenerate it: hardway schema > hardway/cluster.schema.json"


def test_the_schema_task_prints_it(run_cli, tmp_path):
    result = run_cli(["schema"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(SCHEMA_FILE.read_text())


@pytest.mark.parametrize("example", sorted(p.stem for p in (REPO / "examples").glob("*.yaml")))
def test_every_example_conforms(example, validator):
    data = yaml.safe_load((REPO / "examples" / f"{example}.yaml").read_text())
    errors = [e.message for e in validator.iter_errors(data)]
    assert not errors, errors[:5]


def _shape_cases():
    from test_spec import BAD  # the bad specs validate explains
    for param in BAD:
        text = param.values[0]
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            continue  # not YAML at all: no schema applies
        try:
            ClusterSpec.model_validate(data)
        except ValidationError:
            yield pytest.param(data, id=param.id)


EXTRA_SHAPE_CASES = [
    pytest.param({"name": "x", "nodes": [{"name": "a", "address": "10.0.0.1", "roles": ["controler"]}]}, id="bad-role"),
    pytest.param({"name": "x", "pki": {"keyAlgorithm": "Ed25519"},
                  "nodes": [{"name": "a", "address": "10.0.0.1", "roles": ["controller"]}]}, id="bad-key-algorithm"),
    pytest.param({"name": "x", "kubelet": {"resolvconf": "/x"},
                  "nodes": [{"name": "a", "address": "10.0.0.1", "roles": ["controller"]}]}, id="kubelet-typo"),
    pytest.param({"name": "x", "nodes": [{"name": "a", "address": "10.0.0.1", "roles": ["controller"],
                                          "kubelet": {"resolvConf": 3}}]}, id="node-kubelet-type"),
]


@pytest.mark.parametrize("data", list(_shape_cases()) + EXTRA_SHAPE_CASES)
def test_the_schema_rejects_what_validate_rejects_for_its_shape(data, validator):
    from hardway import spec
    from hardway.errors import SpecError
    with pytest.raises(SpecError):
        spec.loads(yaml.safe_dump(data))
    assert list(validator.iter_errors(data)), f"the schema accepts {data!r}"


def test_there_are_shape_cases():
    assert len(list(_shape_cases())) >= 10
