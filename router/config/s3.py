"""``storage.s3``: keep objects in an S3-compatible bucket instead of the ``data_dir`` folder (docs/storage.md)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from router.config.base import Strict

MIB = 2**20


class S3Settings(Strict):
    endpoint_url: str = Field(description="http(s)://host[:port] of the S3 service (no path)")
    bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]+[a-z0-9]$")
    region: str = Field("us-east-1", min_length=1)
    prefix: str = Field("", description="put before every key, e.g. 'router/' (no leading slash)")
    access_key_id: str | None = Field(None, description="null: AWS_ACCESS_KEY_ID, else credentials_file")
    secret_access_key: SecretStr | None = Field(None, description="null: AWS_SECRET_ACCESS_KEY, else credentials_file")
    credentials_file: Path | None = Field(None, description="an AWS credentials file (its [default] profile)")
    ca_file: Path | None = Field(None, description="https: CA certificates to check the server with (PEM)")
    timeout: float = Field(30.0, gt=0, description="seconds to connect and between bytes read, per request")
    part_size: int = Field(16 * MIB, ge=5 * MIB, description="bytes per part of a multipart upload (above: multipart)")
    cache_bytes: int = Field(1024 * MIB, ge=0, description="read cache of each process of a node, bytes (LRU)")

    @field_validator("endpoint_url")
    @classmethod
    def _an_origin(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ValueError("an origin: http://host:port or https://host[:port], without a path")
        return value

    @field_validator("prefix")
    @classmethod
    def _relative(cls, value: str) -> str:
        if value.startswith("/"):
            raise ValueError("a key prefix does not start with '/'")
        return value
