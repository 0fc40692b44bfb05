"""spec.model.uri: traversal, odd schemes, embedded credentials, very long values.

Three layers must agree on every URI: the CRD (what kubectl apply admits), the operator
(api.ModelSource) and the storage initializer that fetches it in the pod
(kubeserve.dataplane.storage.uri). A URI the first two admit but the third refuses would make
a pod that crash-loops forever; a URI with credentials would put them in the pod spec.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from crd_validator import crd_errors
from hypothesis import event, given
from hypothesis import strategies as st
from rel_settings import count, fuzz
from rel_strategies import model_uris

from kubeserve.api import MAX_URI_LENGTH, InvalidSpec, ModelDeployment
from kubeserve.dataplane.storage import uri as storage_uri
from kubeserve.dataplane.storage.errors import UsageError

OK = "ok"
CREDENTIALS = "put them in a Secret and set model.credentialsSecret"
DOTS = "'.' or '..' path segments"
FORM = "must be s3://bucket/key"
TOO_LONG = f"at most {MAX_URI_LENGTH} characters"

TABLE: dict[str, tuple[str, str]] = {
    # Accepted
    "s3-prefix": ("s3://models/resnet/1/", OK),
    "s3-bucket-only": ("s3://models", OK),
    "gs-file": ("gs://bucket/m.onnx", OK),
    "https-file": ("https://models.example.com/mnist/model.onnx", OK),
    "https-port-query": ("https://models.example.com:8443/m.tar.gz?version=3", OK),
    "https-ipv6": ("https://[fd00::1]/m.onnx", OK),
    "pvc-claim": ("pvc://models", OK),
    "pvc-subpath": ("pvc://models/onnx/resnet", OK),
    "unicode-key": ("s3://models/模型/m.onnx", OK),
    "longest": ("s3://models/" + "p" * (MAX_URI_LENGTH - len("s3://models/")), OK),
    # Traversal
    "dotdot": ("s3://models/a/../b", DOTS),
    "dotdot-end": ("s3://models/..", DOTS),
    "dot": ("s3://models/./m", DOTS),
    "encoded-dotdot": ("https://host.example/a/%2e%2e/etc/passwd", DOTS),
    "encoded-upper": ("s3://models/%2E%2E/x", DOTS),
    "mixed": ("gs://bucket/.%2e/x", DOTS),
    "pvc-escape": ("pvc://models/../../etc", DOTS),
    # Odd schemes and forms
    "ftp": ("ftp://host.example/m", FORM),
    "file": ("file:///etc/passwd", FORM),
    "local-path": ("/models/m.onnx", FORM),
    "http": ("http://host.example/m.onnx", FORM),
    "uppercase-scheme": ("S3://models/m", FORM),
    "hdfs": ("hdfs://namenode/m", FORM),
    "javascript": ("javascript:alert(1)", FORM),
    "data": ("data:text/plain;base64,aGk=", FORM),
    "one-slash": ("s3:/models/m", FORM),
    "no-slash": ("s3:models/m", FORM),
    "no-bucket": ("s3:///m", FORM),
    "one-char-bucket": ("s3://b/m", FORM),
    "two-char-bucket": ("gs://ab/m", FORM),
    "uppercase-bucket": ("s3://Models/m", FORM),
    "s3-query": ("s3://models/m?versionId=3", FORM),
    "s3-fragment": ("s3://models/m#x", FORM),
    "https-directory": ("https://host.example/models/", FORM),
    "https-no-path": ("https://host.example", FORM),
    "https-bad-port": ("https://host.example:99999/m.onnx", FORM),
    "space": ("s3://models/my model", FORM),
    "leading-space": (" s3://models/m", FORM),
    "newline": ("s3://models/m\nx", FORM),
    "nul": ("s3://models/m\x00", FORM),
    "pvc-bad-claim": ("pvc://Models/x", FORM),
    "empty": ("", FORM),
    # Embedded credentials
    "userinfo": ("https://user:hunter2@host.example/m.onnx", CREDENTIALS),
    "s3-keys": ("s3://AKIAXXXX:secret@models/m", CREDENTIALS),
    "token-user": ("https://ghp_token@host.example/m.onnx", CREDENTIALS),
    "uppercase-scheme-userinfo": ("HTTPS://u:p@host.example/m", CREDENTIALS),
    "presigned-s3": (
        "https://models.s3.amazonaws.com/m.onnx?X-Amz-Credential=AKIA&X-Amz-Signature=abc",
        CREDENTIALS,
    ),
    "presigned-gcs": ("https://storage.googleapis.com/b/m?X-Goog-Signature=abc", CREDENTIALS),
    "azure-sas": ("https://acct.blob.core.windows.net/c/m.onnx?sv=2022&sig=abc", CREDENTIALS),
    "token-query": ("https://host.example/m.onnx?token=abc", CREDENTIALS),
    # Very long
    "too-long": ("s3://models/" + "p" * MAX_URI_LENGTH, TOO_LONG),
}


def md(uri: Any, **model: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubeserve.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "namespace": "ml"},
        "spec": {"runtime": "onnxruntime", "model": {"uri": uri, **model}},
    }


def fetchable(uri: str) -> bool:
    """Whether the pod could use it: the storage initializer, or a pvc volume mount."""
    if uri.startswith("pvc://"):
        sub_path = uri.removeprefix("pvc://").partition("/")[2].strip("/")
        return ".." not in sub_path.split("/")
    try:
        storage_uri.parse(uri)
    except UsageError:
        return False
    return True


@pytest.mark.parametrize("case", sorted(TABLE))
def test_model_uri_table(case: str) -> None:
    uri, expected = TABLE[case]
    obj = md(uri)
    crd = crd_errors(copy.deepcopy(obj))
    if expected == OK:
        model = ModelDeployment.parse(obj).spec.model
        assert model.uri == uri
        assert crd == [], crd
        assert fetchable(uri), "admitted, so the pod must be able to fetch it"
        return
    with pytest.raises(InvalidSpec) as caught:
        ModelDeployment.parse(obj)
    assert caught.value.field == "spec.model.uri", str(caught.value)
    assert expected in caught.value.message, caught.value.message
    assert crd, "kubectl apply must refuse it too"
    # A secret in the URI is never repeated by the operator (its message lands in the status
    # and in Events). The API server's own pattern error quotes the value back to the client
    # that sent it; that is between kubectl and the API server.
    for secret in ("hunter2", "secret", "ghp_token", "abc"):
        if secret in uri:
            assert secret not in str(caught.value)


def test_credentials_advice_names_credentials_secret() -> None:
    with pytest.raises(InvalidSpec) as caught:
        ModelDeployment.parse(md("https://user:pw@host.example/m.onnx"))
    assert "credentialsSecret" in str(caught.value)


def test_credentials_secret_is_refused_with_pvc() -> None:
    with pytest.raises(InvalidSpec, match="credentialsSecret is not used with pvc"):
        ModelDeployment.parse(md("pvc://models/m", credentialsSecret="s3-creds"))


def test_short_bucket_names_are_refused() -> None:
    with pytest.raises(InvalidSpec):
        ModelDeployment.parse(md("s3://ab/m"))


def both_admit(uri: str) -> bool:
    """Whether both the CRD and the operator admit it (they must agree)."""
    obj = md(uri)
    crd = crd_errors(copy.deepcopy(obj))
    try:
        ModelDeployment.parse(obj)
    except InvalidSpec:
        assert crd, (uri, "the operator refused it but the CRD admitted it")
        return False
    assert crd == [], (uri, crd)
    return True


BUCKETS: dict[str, bool] = {
    "m": False,
    "mm": False,
    "mmm": True,
    "m" * 63: True,  # S3's longest
    "m" * 64: True,  # GCS: up to 222 with dots; the initializer does not count components
    "m" * 222: True,
    "m" * 223: False,
    "a.b": True,
    "a-b": True,
    "a_b": True,  # GCS allows underscores
    "my.bucket.example.com": True,
    "-ab": False,
    "ab-": False,
    ".ab": False,
    "ab.": False,
    "_ab": False,
    "ab_": False,
    "aBc": False,
    "a%2": False,
}


@pytest.mark.parametrize("scheme", ["s3", "gs"])
@pytest.mark.parametrize(
    "bucket", list(BUCKETS), ids=lambda b: b if len(b) < 10 else f"{len(b)}-chars"
)
def test_the_api_and_the_storage_initializer_agree_on_bucket_names(
    scheme: str, bucket: str
) -> None:
    uri = f"{scheme}://{bucket}/m.onnx"
    assert both_admit(uri) == BUCKETS[bucket], uri
    assert fetchable(uri) == BUCKETS[bucket], uri


SEGMENT = st.from_regex(r"\A[A-Za-z0-9_][-A-Za-z0-9_.~]{0,12}\Z").filter(
    lambda part: part not in (".", "..")
)
PATH = st.lists(SEGMENT, max_size=4).map("/".join)
VALID_CLUSTER_URIS = st.one_of(
    st.builds(
        "{}://{}/{}".format,
        st.sampled_from(["s3", "gs"]),
        st.from_regex(r"\A[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]\Z").filter(lambda b: ".." not in b),
        PATH,
    ),
    st.builds(
        "https://{}{}/{}{}".format,
        st.sampled_from(["models.example.com", "h", "10.0.0.1", "[::1]"]),
        st.sampled_from(["", ":443", ":8080", ":65535"]),
        st.builds("{}/{}".format, PATH, SEGMENT).map(lambda p: p.lstrip("/")),
        st.sampled_from(["", "?v=1", "#f", "?a=b&c=d"]),
    ),
    st.builds("pvc://{}/{}".format, st.sampled_from(["models", "a.b", "c-1"]), PATH),
)


@fuzz(400)
@given(uri=st.one_of(VALID_CLUSTER_URIS, model_uris()))
def test_the_crd_the_operator_and_the_pod_agree_on_uris(uri: str) -> None:
    count("examples: model URIs")
    obj = md(uri)
    crd = crd_errors(copy.deepcopy(obj))
    try:
        ModelDeployment.parse(obj)
        admitted = True
    except InvalidSpec as exc:
        admitted = False
        assert exc.field == "spec.model.uri"
    event("admitted" if admitted else "refused")
    assert (crd == []) == admitted, (uri, crd)
    if admitted:
        assert fetchable(uri), uri
