"""Property: any ModelDeployment either renders to objects the API server admits, or is
refused with one InvalidSpec naming the field. Never an unhandled exception.

Three entry points see the same inputs: ``render(ModelDeployment.parse(obj))`` (what
`kubeserve render` and the operator share), ``reconcile()`` with an in-memory API (what the
operator runs), and the `kubeserve render -f FILE` command itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import event, given
from hypothesis import strategies as st
from rel_k8s import problems
from rel_settings import CLI_EXAMPLES, FIELD_EXAMPLES, RENDER_EXAMPLES, count, fuzz
from rel_strategies import (
    AFFINITY_HOSTILE,
    AFFINITY_VALID,
    LABEL_KEYS,
    LABEL_VALUES,
    PEERS_HOSTILE,
    PEERS_VALID,
    SpecBuilder,
    model_deployments,
)

from kubeserve import cli
from kubeserve.api import InvalidSpec, ModelDeployment
from kubeserve.config import OperatorConfig
from kubeserve.reconcile import ReconcileResult, reconcile
from kubeserve.render import render

CFG = OperatorConfig()
NOW = "2026-01-01T00:00:00Z"


class MemoryApi:
    """The slice of KubeClient that reconcile uses, over an empty cluster."""

    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str]] = []

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> None:
        return None

    async def apply(
        self, obj: dict[str, Any], plural: str, *, field_manager: str, force: bool = True
    ) -> dict[str, Any]:
        self.applied.append(obj)
        return obj

    async def delete(self, *args: Any, **kwargs: Any) -> None:
        self.deleted.append((args[1], args[3]))

    async def api_available(self, api_version: str) -> bool:
        return True


def run_reconcile(obj: dict[str, Any]) -> tuple[ReconcileResult, MemoryApi]:
    api = MemoryApi()
    result = asyncio.run(reconcile(obj, api, CFG, now=NOW))  # type: ignore[arg-type]
    return result, api


def resolves(obj: Any, path: list[str]) -> bool:
    """Whether a dotted error path (list indexes as numbers) leads somewhere in ``obj``."""
    node = obj
    for part in path:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def assert_names_the_field(obj: dict[str, Any], exc: InvalidSpec) -> None:
    assert exc.field, f"InvalidSpec without a field: {exc}"
    assert str(exc) == f"{exc.field}: {exc.message}"
    head = exc.field.split(".")
    assert head[0] in {"metadata", "spec", "apiVersion", "kind"}, exc.field
    # The field itself may be missing ("Field required"), or defaulted (the metrics of
    # spec.autoscaling): it must lead into something the user wrote.
    assert resolves(obj, head[: max(1, min(2, len(head) - 1))]), (
        f"{exc.field} does not lead into the object"
    )
    assert "\n" not in str(exc), "one line, so it fits a condition message and a CLI line"


def condition(result: ReconcileResult, kind: str) -> dict[str, Any]:
    return next(c for c in result.status["conditions"] if c["type"] == kind)


def check_property(obj: dict[str, Any]) -> None:
    """Admitted: every child passes the API server's checks. Refused: InvalidSpec names the
    field, and reconcile touches nothing and says so in the status."""
    count("examples: render + reconcile")
    try:
        children = render(ModelDeployment.parse(obj), CFG)
        refused: InvalidSpec | None = None
    except InvalidSpec as exc:
        refused = exc
    result, api = run_reconcile(obj)
    ready = condition(result, "Ready")

    if refused is not None:
        count("examples: refused with InvalidSpec")
        event("refused: " + refused.field.split(".")[0 if refused.field.count(".") < 1 else 1])
        assert_names_the_field(obj, refused)
        assert api.applied == [] and api.deleted == [], "an invalid spec must touch nothing"
        assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
        assert ready["message"] == str(refused)
        assert result.events == [("Warning", "InvalidSpec", str(refused))]
        return

    event("rendered")
    for child in children:
        found = problems(child)
        assert not found, f"{child['kind']} {child['metadata']['name']}: {found}"
    assert api.applied == children, "reconcile applies exactly what render prints"
    assert ready["reason"] != "InvalidSpec"
    assert condition(result, "InvalidSpec")["status"] == "False"
    kinds = [child["kind"] for child in children]
    assert len(set(kinds)) == len(kinds), "one child per kind"


@fuzz(RENDER_EXAMPLES)
@given(obj=model_deployments())
def test_render_and_reconcile_admit_or_name_the_field(obj: dict[str, Any]) -> None:
    check_property(obj)


# Near misses once in 4 draws: one field gets every chance to break a rule.
_BUILDER = SpecBuilder(garbage=True, unknown=True, hostile_free_form=True, one_in=4)
# One spec field at a time, on an otherwise valid object: a rule that only one field breaks
# gets many more chances than in whole objects, where something else is usually wrong first.
FIELDS: dict[str, Any] = {
    "tolerations": _BUILDER.tolerations(),
    "env": _BUILDER.env(),
    "resources": _BUILDER.resources(),
    "gpu": _BUILDER.gpu(),
    "autoscaling": _BUILDER.autoscaling(),
    "rollout": _BUILDER.rollout(),
    "affinity": _BUILDER.free(AFFINITY_VALID, AFFINITY_HOSTILE),
    "networkPolicy": _BUILDER.obj(
        {"enabled": st.just(True)},
        {"from": st.lists(_BUILDER.free(PEERS_VALID, PEERS_HOSTILE), max_size=3)},
    ),
    "nodeSelector": st.dictionaries(LABEL_KEYS, LABEL_VALUES, max_size=3),
    "model": _BUILDER.model(),
}


@pytest.mark.parametrize("field", sorted(FIELDS))
@fuzz(FIELD_EXAMPLES)
@given(data=st.data())
def test_each_field_alone_admits_or_names_the_field(field: str, data: st.DataObject) -> None:
    obj = base()
    obj["spec"][field] = data.draw(FIELDS[field], label=field)
    if field == "gpu" and isinstance(obj["spec"][field], dict):
        obj["spec"]["runtime"] = "tfserving"
    check_property(obj)


# --- the CLI ---------------------------------------------------------------------------------

HOSTILE_FILES: list[bytes] = [
    b"",
    b"[1, 2]",
    b"42",
    b"null",
    b"{",
    b"\t:",
    b"\xff\xfe\x00 not utf-8",
    b"[" * 5000 + b"]" * 5000,
    b"a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
    + b"".join(
        b"%c: &%c [%s]\n" % (ord(n), ord(n), b", ".join([b"*" + p.encode()] * 10))
        for p, n in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + b"apiVersion: kubeserve.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: x}\n"
    + b"spec: {runtime: onnxruntime, model: {uri: 's3://bucket/m'}, affinity: {x: *i}}\n",
    b"apiVersion: kubeserve.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: x}\n"
    b"spec: {runtime: onnxruntime, model: {uri: 's3://bucket/m'}, replicas: .nan}\n",
    b"apiVersion: kubeserve.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: x}\n"
    b"spec: {runtime: onnxruntime, model: {uri: 's3://bucket/m', 'a\\nb': 1}}\n",
    b"apiVersion: kubeserve.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: 2001-01-01}\n"
    b"spec: {runtime: onnxruntime, model: {uri: !!binary aGVsbG8=}}\n",
    b"!!python/object:os.system ls\n",
    b"kind: Deployment\napiVersion: apps/v1\n",
    b"---\n---\n",
]


def _yaml_text(obj: Any) -> bytes:
    return yaml.safe_dump(obj, allow_unicode=True).encode()


def run_cli(data: bytes) -> tuple[int, str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "md.yaml"
        path.write_bytes(data)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["render", "-f", str(path)])
    return code, out.getvalue(), err.getvalue()


ERROR_LINE = re.compile(r"^kubeserve: (invalid ModelDeployment: .+|cannot read .+)\n$")


def assert_cli_contract(data: bytes) -> None:
    count("examples: kubeserve render -f")
    code, out, err = run_cli(data)
    assert code in (0, 1), code
    if code == 0:
        assert err == ""
        for child in yaml.safe_load_all(out):
            assert not problems(child), (child["kind"], problems(child))
        return
    assert out == "", "no partial output on failure"
    assert ERROR_LINE.match(err), f"not one error line: {err!r}"
    assert "Traceback" not in err


@fuzz(CLI_EXAMPLES)
@given(data=model_deployments().map(_yaml_text))
def test_cli_render_prints_yaml_or_one_error_line(data: bytes) -> None:
    assert_cli_contract(data)


@pytest.mark.parametrize("index", range(len(HOSTILE_FILES)))
def test_cli_render_survives_hostile_files(index: int) -> None:
    assert_cli_contract(HOSTILE_FILES[index])


def test_cli_error_line_names_the_field() -> None:
    data = _yaml_text(
        {
            "apiVersion": "kubeserve.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "m"},
            "spec": {"runtime": "onnxruntime", "model": {"uri": "s3://bucket/m"}, "replicas": -1},
        }
    )
    code, _out, err = run_cli(data)
    assert code == 1
    assert err == (
        "kubeserve: invalid ModelDeployment: spec.replicas: "
        "Input should be greater than or equal to 0\n"
    )


# --- extremes, one at a time -------------------------------------------------------------


def nested(depth: int) -> Any:
    value: Any = "v"
    for _ in range(depth):
        value = [value]
    return value


def base(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubeserve.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "namespace": "ml", "uid": "u-1", "generation": 1},
        "spec": {"runtime": "onnxruntime", "model": {"uri": "s3://bucket/m"}, **spec},
    }


def _extremes() -> Iterator[tuple[str, dict[str, Any]]]:
    yield "depth-40", base(affinity={"nodeAffinity": nested(40)})
    yield "depth-300", base(affinity={"nodeAffinity": nested(300)})
    yield "depth-5000", base(affinity={"nodeAffinity": nested(5000)})
    yield "nan", base(replicas=math.nan)
    yield (
        "inf-target",
        base(autoscaling={"maxReplicas": 2, "metrics": [{"type": "cpu", "target": math.inf}]}),
    )
    yield "huge-int", base(replicas=10**400)
    yield "wide", base(env=[{"name": f"V{i}", "value": "x"} for i in range(100_000)])
    yield "long-name", {**base(), "metadata": {"name": ".".join(["a" * 63] * 4)[:253]}}
    yield "name-254", {**base(), "metadata": {"name": "a" * 254}}
    yield "unicode-key", base(**{"rëplicas": 1})
    yield "newline-key", base(**{"a\nb": 1})
    int_key = base()
    int_key["spec"][1] = 2
    yield "int-key", int_key
    yield "big-uri", base(model={"uri": "s3://bucket/" + "p" * 10_000})


EXTREMES = dict(_extremes())


@pytest.mark.parametrize("name", sorted(EXTREMES))
def test_extremes_admit_or_name_the_field(name: str) -> None:
    obj = EXTREMES[name]
    try:
        children = render(ModelDeployment.parse(obj), CFG)
    except InvalidSpec as exc:
        assert_names_the_field(obj, exc)
        result, api = run_reconcile(obj)
        assert condition(result, "Ready")["reason"] == "InvalidSpec"
        assert api.applied == []
        return
    for child in children:
        assert not problems(child), problems(child)


@given(st.data())
@fuzz(50)
def test_long_dotted_names_give_short_distinct_child_names(data: st.DataObject) -> None:
    from rel_strategies import dns_subdomain

    first = data.draw(dns_subdomain())
    second = data.draw(dns_subdomain().filter(lambda n: n != first))
    names = []
    for name in (first, second):
        obj = base()
        obj["metadata"] = {"name": name, "namespace": "ml"}
        children = render(ModelDeployment.parse(obj), CFG)
        assert {c["metadata"]["name"] for c in children} == {children[0]["metadata"]["name"]}
        names.append(children[0]["metadata"]["name"])
    assert names[0] != names[1], f"{first!r} and {second!r} collide on {names[0]!r}"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("1abc", "md-1abc"),  # a Service name needs a leading letter: "md-" is added
        ("a.b", "a-b"),  # a Service name has no dots
        ("a" * 64, "a" * 63 + "b"),  # too long: shortened
        ("0", "md-0"),
    ],
)
def test_distinct_names_get_distinct_children(first: str, second: str) -> None:
    names = set()
    for name in (first, second):
        obj = base()
        obj["metadata"] = {"name": name, "namespace": "ml"}
        names.add(render(ModelDeployment.parse(obj), CFG)[0]["metadata"]["name"])
    assert len(names) == 2, names
