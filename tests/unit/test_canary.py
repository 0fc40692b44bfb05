"""Canary groundwork (issue 14): the API's rules, the pure builders, and the routes against
the real Gateway API CRDs. The controller that uses them is not written yet."""

from __future__ import annotations

from typing import Any

import pytest
from cel_helper import cel_errors
from gateway_schema import route_errors
from keda_schema import child_errors

from kubeserve.api import (
    CANARY_MODEL_NAME,
    CANARY_SAME_AS_STABLE,
    CANARY_SCALE_TO_ZERO,
    InvalidSpec,
    ModelDeployment,
)
from kubeserve.config import OperatorConfig, parse_gateway
from kubeserve.render import render
from kubeserve.resources.canary import (
    TRACK_LABEL,
    canary_config_map,
    canary_deployment,
    canary_replicas,
    canary_view,
    effective_percent,
    gateway_canary_replicas,
    template_hash,
    traffic_text,
)
from kubeserve.resources.deployment import deployment
from kubeserve.resources.gateway import (
    MIRROR_NEEDS_GATEWAY,
    grpc_route,
    http_route,
    mirror_problem,
    parent_ref,
    track_service,
)

CFG = OperatorConfig()
CFG_GW = OperatorConfig(gateway=("infra", "shared"))
V2 = {"model": {"uri": "s3://models/resnet-v2"}}


def md(runtime: str = "onnxruntime", **spec: Any) -> ModelDeployment:
    return ModelDeployment.parse(
        {
            "apiVersion": "kubeserve.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "resnet", "namespace": "ml", "uid": "u-1"},
            "spec": {"runtime": runtime, "model": {"uri": "s3://models/resnet-v1"}, **spec},
        }
    )


# ---------------------------------------------------------------------------------------------
# Sizing without a Gateway: the canary's share of ready pods


@pytest.mark.parametrize(
    ("stable", "percent", "expected"),
    [
        (9, 10, 1),  # the issue's example: exactly 10 %
        (9, 0, 0),
        (0, 10, 0),  # nothing to split
        (4, 10, 1),  # the least a pod can take: 20 %
        (1, 10, 1),  # 50 %
        (18, 10, 2),
        (19, 5, 1),
        (3, 25, 1),
        (3, 50, 3),
        (3, 100, 3),  # capped at the stable's count: at most 50 % without a Gateway
        (10, 33, 5),  # 5/15 = 33.3 %
        (2, 34, 1),  # 33.3 % beats 50 %
    ],
)
def test_canary_replicas_approximate_the_percent(stable: int, percent: int, expected: int) -> None:
    assert canary_replicas(stable, percent) == expected


def test_canary_replicas_is_the_nearest_share() -> None:
    for stable in range(1, 40):
        for percent in range(1, 51):
            got = canary_replicas(stable, percent)
            error = abs(got / (stable + got) - percent / 100)
            for other in range(1, stable + 1):
                assert error <= abs(other / (stable + other) - percent / 100) + 1e-12


@pytest.mark.parametrize(
    ("stable", "percent", "expected"),
    [(9, 10, 1), (10, 25, 3), (4, 100, 4), (0, 50, 1), (5, 0, 0), (1, 1, 1)],
)
def test_gateway_canary_replicas_follow_the_load(stable: int, percent: int, expected: int) -> None:
    assert gateway_canary_replicas(stable, percent) == expected


def test_effective_percent_and_traffic_text() -> None:
    assert effective_percent(9, 1) == 10
    assert effective_percent(4, 1) == 20
    assert effective_percent(0, 0) == 0
    assert effective_percent(0, 2) == 100
    assert traffic_text(10) == "stable 90 / canary 10"
    assert traffic_text(0) == "stable 100 / canary 0"
    assert traffic_text(10, mirror=True) == "stable 100 / mirror 10"


# ---------------------------------------------------------------------------------------------
# The canary Deployment and ConfigMap


def test_canary_view_takes_the_canary_fields_and_keeps_the_rest() -> None:
    stable = md(
        runtime="tfserving",
        model={"uri": "s3://models/resnet-v1", "name": "resnet"},
        env=[{"name": "A", "value": "stable"}],
        gpu={"count": 1},
        autoscaling={"maxReplicas": 4},
        canary={
            "model": {"uri": "s3://models/resnet-v2"},
            "image": "example.com/tfs:2",
            "env": [{"name": "A", "value": "canary"}],
            "replicas": 2,
        },
    )
    view = canary_view(stable)
    assert view.spec.model.uri == "s3://models/resnet-v2"
    assert view.spec.model.name == "resnet"  # inherited
    assert view.spec.image == "example.com/tfs:2"
    assert [e.value for e in view.spec.env or []] == ["canary"]
    assert view.spec.gpu == stable.spec.gpu  # same hardware
    assert view.spec.runtime == stable.spec.runtime  # same runtime by construction
    assert view.spec.autoscaling is None and view.spec.canary is None
    assert view.spec.replicas == 2


def test_canary_view_needs_a_canary() -> None:
    with pytest.raises(ValueError, match=r"no spec\.canary"):
        canary_view(md())


def test_canary_deployment_has_its_own_name_selector_and_track() -> None:
    obj = md(canary={**V2, "progressDeadlineSeconds": 120})
    built = canary_deployment(obj, CFG, replicas=3, config=canary_config_map(obj, CFG))
    assert built["metadata"]["name"] == "resnet-canary"
    assert built["metadata"]["labels"][TRACK_LABEL] == "canary"
    assert built["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    spec = built["spec"]
    assert spec["replicas"] == 3
    assert spec["progressDeadlineSeconds"] == 120
    assert spec["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "onnxruntime",
        "app.kubernetes.io/instance": "resnet",
        "app.kubernetes.io/managed-by": "kubeserve",
        TRACK_LABEL: "canary",
    }
    labels = spec["template"]["metadata"]["labels"]
    assert labels[TRACK_LABEL] == "canary"
    # The stable Deployment's selector is a subset of the canary's pod labels, so the main
    # Service (the same selector) sends the approximate share to the canary's pods.
    stable = deployment(obj, CFG, config=None)
    assert stable["spec"]["selector"]["matchLabels"].items() <= labels.items()
    init = spec["template"]["spec"]["initContainers"][0]
    assert "s3://models/resnet-v2" in init["args"]
    assert child_errors(built) == []


def test_canary_deployment_mounts_its_own_config_map() -> None:
    obj = md(runtime="torchserve", canary=V2)
    assert canary_config_map(md(canary=V2), CFG) is None  # onnxruntime reads no config file
    config = canary_config_map(obj, CFG)
    assert config is not None and config["metadata"]["name"] == "resnet-canary"
    built = canary_deployment(obj, CFG, replicas=1, config=config)
    volumes = built["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": "resnet-canary"}} in volumes
    assert child_errors(config) == []


def test_gpu_canary_is_gpu_safe() -> None:
    obj = md(gpu={"count": 1}, replicas=3, canary={**V2, "replicas": 2})
    built = canary_deployment(obj, CFG, replicas=2, config=None)
    assert built["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }
    limits = built["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    one = canary_deployment(obj, CFG, replicas=1, config=None)
    assert one["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }


def test_stable_pods_carry_the_track_label_only_with_a_gateway() -> None:
    def labels(obj: ModelDeployment, cfg: OperatorConfig) -> dict[str, str]:
        built = deployment(obj, cfg, config=None)
        result: dict[str, str] = built["spec"]["template"]["metadata"]["labels"]
        return result

    assert TRACK_LABEL not in labels(md(), CFG)  # an operator upgrade restarts nothing
    assert labels(md(gateway={"name": "gw"}), CFG)[TRACK_LABEL] == "stable"
    assert labels(md(), CFG_GW)[TRACK_LABEL] == "stable"
    # Never in the selector: a Deployment's selector cannot change.
    built = deployment(md(gateway={"name": "gw"}), CFG, config=None)
    assert TRACK_LABEL not in built["spec"]["selector"]["matchLabels"]


def test_template_hash_follows_the_pod_shape_only() -> None:
    base = template_hash(md(canary={**V2, "trafficPercent": 10}))
    assert base == template_hash(md(canary={**V2, "trafficPercent": 50}))
    assert base != template_hash(md(canary={**V2, "image": "example.com/x:2"}))
    assert base != template_hash(md(canary={"model": {"uri": "s3://models/resnet-v3"}}))
    assert template_hash(md()) == ""


def test_render_shows_the_canary_deployment_without_a_gateway() -> None:
    names = {(c["kind"], c["metadata"]["name"]) for c in render(md(canary=V2), CFG)}
    stable = {(c["kind"], c["metadata"]["name"]) for c in render(md(), CFG)}
    assert names - stable == {("Deployment", "resnet-canary")}


def test_render_with_a_gateway_shows_routes_at_weight_zero_before_the_controller_looks() -> None:
    children = render(md(canary={**V2, "trafficPercent": 10}), CFG_GW)
    names = [(c["kind"], c["metadata"]["name"]) for c in children]
    assert ("Service", "resnet-stable") in names and ("Service", "resnet-canary") in names
    # The routes come before the canary Deployment: on a rollback weight 0 goes first.
    assert names.index(("HTTPRoute", "resnet")) < names.index(("Deployment", "resnet-canary"))
    route = next(c for c in children if c["kind"] == "HTTPRoute")
    assert route["spec"]["rules"][0]["backendRefs"] == [
        {"name": "resnet-stable", "port": 8080, "weight": 1}
    ]


# ---------------------------------------------------------------------------------------------
# Gateway API: Services and routes


def test_parent_ref_from_the_spec_then_the_operator_default() -> None:
    own = md(gateway={"name": "gw", "sectionName": "https"})
    assert parent_ref(own, CFG_GW) == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": "gw",
        "namespace": "ml",
        "sectionName": "https",
    }
    assert parent_ref(md(), CFG_GW) == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": "shared",
        "namespace": "infra",
    }
    assert parent_ref(md(), CFG) is None
    assert http_route(md(), CFG) is None and grpc_route(md(), CFG) is None


def test_mirroring_without_a_gateway_is_refused_by_the_operator() -> None:
    mirrored = md(canary={**V2, "mirror": True, "trafficPercent": 100})
    assert mirror_problem(mirrored, CFG) == MIRROR_NEEDS_GATEWAY
    assert mirror_problem(mirrored, CFG_GW) is None
    assert mirror_problem(md(canary=V2), CFG) is None


@pytest.mark.parametrize("track", ["stable", "canary"])
def test_track_services_select_one_track(track: str) -> None:
    built = track_service(md(), track)
    assert built["metadata"]["name"] == f"resnet-{track}"
    assert built["spec"]["selector"][TRACK_LABEL] == track
    assert [p["name"] for p in built["spec"]["ports"]] == ["http", "grpc"]
    assert child_errors(built) == []
    with pytest.raises(ValueError):
        track_service(md(), "blue")


def _backends(route: dict[str, Any]) -> list[tuple[str, int, int | None]]:
    return [
        (ref["name"], ref["port"], ref.get("weight"))
        for ref in route["spec"]["rules"][0]["backendRefs"]
    ]


# name -> (canary percent, mirror, expected HTTP backendRefs, expected mirror percent)
ROUTES: dict[str, tuple[int, bool, list[tuple[str, int, int | None]], int | None]] = {
    "no-canary-yet": (0, False, [("resnet-stable", 8080, 1)], None),
    "ten-percent": (10, False, [("resnet-stable", 8080, 90), ("resnet-canary", 8080, 10)], None),
    "half": (50, False, [("resnet-stable", 8080, 50), ("resnet-canary", 8080, 50)], None),
    "all-canary": (100, False, [("resnet-canary", 8080, 1)], None),
    "mirror-ten": (10, True, [("resnet-stable", 8080, 1)], 10),
    "mirror-not-ready": (0, True, [("resnet-stable", 8080, 1)], None),
}


@pytest.mark.parametrize("name", sorted(ROUTES))
def test_http_route_table(name: str) -> None:
    percent, mirror, backends, mirrored = ROUTES[name]
    obj = md(gateway={"name": "gw", "hostnames": ["resnet.example.com"]}, canary=V2)
    route = http_route(obj, CFG, canary_percent=percent, mirror=mirror)
    assert route is not None
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["kind"] == "HTTPRoute"
    assert route["metadata"]["name"] == "resnet"
    assert route["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert route["spec"]["hostnames"] == ["resnet.example.com"]
    assert _backends(route) == backends
    filters = route["spec"]["rules"][0].get("filters", [])
    if mirrored is None:
        assert filters == []
    else:
        assert filters == [
            {
                "type": "RequestMirror",
                "requestMirror": {
                    "backendRef": {"name": "resnet-canary", "port": 8080},
                    "percent": mirrored,
                },
            }
        ]
    assert route_errors(route) == []


@pytest.mark.parametrize("name", sorted(ROUTES))
def test_grpc_route_table(name: str) -> None:
    percent, mirror, backends, _mirrored = ROUTES[name]
    route = grpc_route(
        md(gateway={"name": "gw"}, canary=V2), CFG, canary_percent=percent, mirror=mirror
    )
    assert route is not None and route["kind"] == "GRPCRoute"
    assert _backends(route) == [(name_, 9000, weight) for name_, _port, weight in backends]
    assert route_errors(route) == []


def test_no_grpc_route_for_a_runtime_without_a_grpc_port() -> None:
    obj = md(runtime="torchserve", gateway={"name": "gw"}, canary=V2)
    assert grpc_route(obj, CFG, canary_percent=10) is None
    route = http_route(obj, CFG, canary_percent=10)
    assert route is not None and route_errors(route) == []


def test_route_validator_catches_what_the_real_crd_refuses() -> None:
    route = http_route(md(gateway={"name": "gw"}), CFG)
    assert route is not None
    route["spec"]["rules"][0]["filters"] = [{"type": "RequestMirror"}]
    assert any("requestMirror must be specified" in e for e in route_errors(route))
    route["spec"]["rules"][0]["filters"] = []
    route["spec"]["rules"][0]["backendRefs"][0]["weight"] = -1
    assert route_errors(route)
    route["spec"]["rules"][0]["backendRefs"][0] = {"name": "x", "port": 8080, "wieght": 1}
    assert route_errors(route)


def test_route_refuses_a_share_out_of_range() -> None:
    with pytest.raises(ValueError):
        http_route(md(gateway={"name": "gw"}), CFG, canary_percent=101)


# ---------------------------------------------------------------------------------------------
# The API's rules: CEL (what kubectl apply refuses) and pydantic (what the operator refuses)

SPEC_CASES: dict[str, tuple[dict[str, Any], str | None]] = {
    "ok": ({"canary": V2}, None),
    "same-as-stable": (
        {"canary": {"model": {"uri": "s3://models/resnet-v1"}}},
        CANARY_SAME_AS_STABLE,
    ),
    "same-uri-new-env": (
        {"canary": {"model": {"uri": "s3://models/resnet-v1"}, "env": [{"name": "A"}]}},
        None,
    ),
    "other-name": (
        {"canary": {"model": {"uri": "s3://models/v2", "name": "x"}}},
        CANARY_MODEL_NAME,
    ),
    "same-name": (
        {
            "model": {"uri": "s3://models/resnet-v1", "name": "x"},
            "canary": {"model": {"uri": "s3://models/v2", "name": "x"}},
        },
        None,
    ),
    "keda-http": (
        {
            "autoscaling": {
                "engine": "keda-http",
                "maxReplicas": 2,
                "metrics": [{"type": "concurrency", "target": 4}],
            },
            "canary": V2,
        },
        CANARY_SCALE_TO_ZERO,
    ),
    "hpa": ({"autoscaling": {"maxReplicas": 2}, "canary": V2}, None),
}


@pytest.mark.parametrize("name", sorted(SPEC_CASES))
def test_spec_rules_cel_and_pydantic_agree(name: str) -> None:
    extra, message = SPEC_CASES[name]
    spec = {"runtime": "onnxruntime", "model": {"uri": "s3://models/resnet-v1"}, **extra}
    errors = cel_errors("spec", spec)
    assert errors == ([message] if message else [])
    if message is None:
        md(**{k: v for k, v in extra.items()})
    else:
        with pytest.raises(InvalidSpec, match=r"^spec: canary"):
            md(**extra)


def test_canary_rules_cel_and_pydantic_agree() -> None:
    mirror = {**V2, "mirror": True}
    assert cel_errors("spec.canary", mirror) == [
        "canary.mirror copies trafficPercent % of the requests to the canary: set "
        "trafficPercent above 0 (100 copies every request)"
    ]
    with pytest.raises(InvalidSpec, match=r"^spec\.canary: mirror copies"):
        md(canary=mirror)
    assert cel_errors("spec.canary", {**mirror, "trafficPercent": 5}) == []
    assert cel_errors("spec.canary.analysis", {"failureLimit": 1}) == [
        "canary.analysis: set maxErrorRatio, maxLatencyMs or both"
    ]
    with pytest.raises(InvalidSpec, match=r"^spec\.canary\.analysis: set maxErrorRatio"):
        md(canary={**V2, "analysis": {}})
    assert cel_errors("spec.canary.analysis", {"maxLatencyMs": 100}) == []


def test_the_canary_has_no_runtime_of_its_own() -> None:
    with pytest.raises(InvalidSpec, match=r"^spec\.canary\.runtime: unknown field"):
        md(canary={**V2, "runtime": "tfserving"})


def test_defaults() -> None:
    canary = md(canary=V2).spec.canary
    assert canary is not None
    assert (canary.traffic_percent, canary.mirror, canary.progress_deadline_seconds) == (
        0,
        False,
        600,
    )
    assert canary.replicas is None and canary.analysis is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", None), ("infra/shared", ("infra", "shared")), ("a/gw.example", ("a", "gw.example"))],
)
def test_gateway_setting(value: str, expected: tuple[str, str] | None) -> None:
    assert parse_gateway(value) == expected
    assert OperatorConfig.from_env({"KUBESERVE_GATEWAY": value}).gateway == expected


@pytest.mark.parametrize("value", ["shared", "Infra/x", "a/b/c", "/x", "a/"])
def test_gateway_setting_refuses_what_is_not_namespace_slash_name(value: str) -> None:
    with pytest.raises(ValueError, match="KUBESERVE_GATEWAY"):
        parse_gateway(value)
