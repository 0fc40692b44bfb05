"""Credentials for the model source, from environment variables or a mounted Secret.

A Secret is mounted at ``$KUBESERVE_CREDENTIALS_DIR`` (default
``/var/run/secrets/kubeserve/storage``), one file per key, with the same names as the
environment variables (``service-account.json`` is also accepted for the GCS key).

Precedence: an environment variable beats the file of the same name. Env vars are set
explicitly on the container, so they are the more specific choice, as in the AWS SDKs' chain
(env before shared files). The AWS key pair is taken as a whole from one source, so a key id
from env is never paired with a secret from a file; the session token goes with the pair.

Values are wrapped in ``Secret``, whose repr and str never show the value, and
``Credentials.secret_values()`` feeds the log scrubber.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

DEFAULT_DIR = "/var/run/secrets/kubeserve/storage"
DIR_ENV = "KUBESERVE_CREDENTIALS_DIR"

AWS_ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
AWS_SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"
AWS_SESSION_TOKEN = "AWS_SESSION_TOKEN"
AWS_REGION = "AWS_REGION"
AWS_DEFAULT_REGION = "AWS_DEFAULT_REGION"
AWS_ENDPOINT_URL = "AWS_ENDPOINT_URL"
GOOGLE_JSON = "GOOGLE_APPLICATION_CREDENTIALS_JSON"
GOOGLE_JSON_FILE = "service-account.json"
HTTPS_BEARER_TOKEN = "HTTPS_BEARER_TOKEN"

KEYS = (
    AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY,
    AWS_SESSION_TOKEN,
    AWS_REGION,
    AWS_DEFAULT_REGION,
    AWS_ENDPOINT_URL,
    GOOGLE_JSON,
    HTTPS_BEARER_TOKEN,
)


class Secret:
    """A string that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Credentials:
    aws_access_key_id: Secret | None = None
    aws_secret_access_key: Secret | None = None
    aws_session_token: Secret | None = None
    aws_region: str | None = None
    aws_endpoint_url: str | None = None
    google_service_account_json: Secret | None = None
    https_bearer_token: Secret | None = None
    # Where each key came from ("env" or "file"), for a log line without values.
    sources: tuple[tuple[str, str], ...] = ()

    def secret_values(self) -> list[str]:
        """Every secret value, for scrubbing logs and error messages."""
        secrets = [
            self.aws_access_key_id,
            self.aws_secret_access_key,
            self.aws_session_token,
            self.google_service_account_json,
            self.https_bearer_token,
        ]
        return [s.reveal() for s in secrets if s is not None and s.reveal()]

    def describe(self) -> str:
        """E.g. 'AWS_ACCESS_KEY_ID (file), AWS_ENDPOINT_URL (env)': names, never values."""
        return ", ".join(f"{key} ({source})" for key, source in self.sources) or "none"


def load(
    environ: Mapping[str, str] | None = None, directory: str | os.PathLike[str] | None = None
) -> Credentials:
    env = os.environ if environ is None else environ
    files = _read_dir(Path(directory or env.get(DIR_ENV) or DEFAULT_DIR))
    env_values = {key: env[key] for key in KEYS if env.get(key)}
    sources: dict[str, str] = {}

    def pick(key: str, *aliases: str) -> str | None:
        for name in (key, *aliases):
            if name in env_values:
                sources[key] = "env"
                return env_values[name]
        for name in (key, *aliases):
            if name in files:
                sources[key] = "file"
                return files[name]
        return None

    # The AWS key pair and its session token come from one source as a whole.
    pair_source = env_values if AWS_ACCESS_KEY_ID in env_values else files
    pair_name = "env" if pair_source is env_values else "file"
    key_id = pair_source.get(AWS_ACCESS_KEY_ID)
    secret = pair_source.get(AWS_SECRET_ACCESS_KEY) if key_id else None
    token = pair_source.get(AWS_SESSION_TOKEN) if key_id else None
    for name, value in (
        (AWS_ACCESS_KEY_ID, key_id),
        (AWS_SECRET_ACCESS_KEY, secret),
        (AWS_SESSION_TOKEN, token),
    ):
        if value:
            sources[name] = pair_name

    region = pick(AWS_REGION, AWS_DEFAULT_REGION)
    endpoint = pick(AWS_ENDPOINT_URL)
    google = pick(GOOGLE_JSON, GOOGLE_JSON_FILE)
    bearer = pick(HTTPS_BEARER_TOKEN)
    return Credentials(
        aws_access_key_id=_secret(key_id),
        aws_secret_access_key=_secret(secret),
        aws_session_token=_secret(token),
        aws_region=region,
        aws_endpoint_url=endpoint,
        google_service_account_json=_secret(google),
        https_bearer_token=_secret(bearer),
        sources=tuple(sorted(sources.items())),
    )


def _secret(value: str | None) -> Secret | None:
    return Secret(value) if value else None


def _read_dir(directory: Path) -> dict[str, str]:
    """Read the known key files; a missing directory just means no mounted Secret."""
    values: dict[str, str] = {}
    for name in (*KEYS, GOOGLE_JSON_FILE):
        path = directory / name
        try:
            # Secret files written by `kubectl create secret --from-file` often end in a newline.
            text = path.read_text(encoding="utf-8").strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            continue
        except PermissionError as exc:
            # A Secret mounted with a defaultMode the container's user cannot read.
            raise UsageError(f"cannot read credentials file {path}: permission denied") from exc
        if text:
            values[name] = text
    return values
