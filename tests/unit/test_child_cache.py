"""ChildCache: what the operator remembers about children between reconciles."""

from __future__ import annotations

from kubeserve.reconcile import ChildCache


def test_forgetting_a_model_deployment_drops_only_its_children() -> None:
    cache = ChildCache(
        owners={
            ("Deployment", "ml", "a"): "uid-a",
            ("Service", "ml", "a"): "uid-a",
            ("Deployment", "ml", "b"): "uid-b",
        },
        visited={"uid-a", "uid-b"},
    )
    cache.forget("uid-a")
    assert cache.owners == {("Deployment", "ml", "b"): "uid-b"}
    assert cache.visited == {"uid-b"}
    assert cache.controls(("Deployment", "ml", "b"), "uid-b")
    assert not cache.controls(("Deployment", "ml", "a"), "uid-a")
