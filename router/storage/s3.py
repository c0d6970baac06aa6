"""The S3 store: objects in an S3-compatible bucket (AWS S3, SeaweedFS, MinIO, Ceph RGW ...), through ``minio``.

``commit`` PUTs the local temp file (one request up to ``part_size``, a multipart upload above it, read from disk a
part at a time) and returns when the server answered 200 for it (for a multipart upload: for the completion);
then the temp file goes. Reads fetch an object into a bounded per-process read cache (``ReadCache``). An S3 server
that does not answer (refused, timed out, 5xx after two retries) raises ``StorageUnavailable``; a missing key
raises ``FileNotFoundError``. Keys are ``prefix + relpath`` (the folder store's relative paths)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

from router.config.s3 import S3Settings
from router.storage.base import Placer, StorageUnavailable
from router.storage.cache import ReadCache
from router.store import files

if TYPE_CHECKING:
    from minio import Minio

log = logging.getLogger(__name__)
MISSING = ("NoSuchKey", "NoSuchObject", "NotFound")
RETRIES = 2


def make_client(settings: S3Settings) -> Minio:
    """The client (imported here: a router without S3 never loads it)."""
    import urllib3
    from minio import Minio
    from minio.credentials import AWSConfigProvider, ChainedProvider, EnvAWSProvider, Provider, StaticProvider

    parts = urlsplit(settings.endpoint_url)
    timeout = urllib3.Timeout(connect=min(settings.timeout, 10.0), read=settings.timeout)
    retries = urllib3.Retry(total=RETRIES, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504))
    tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": str(settings.ca_file)} if settings.ca_file else {}
    http = urllib3.PoolManager(timeout=timeout, retries=retries, maxsize=16, **tls)  # type: ignore[arg-type]
    credentials: Provider
    if settings.access_key_id and settings.secret_access_key:
        credentials = StaticProvider(settings.access_key_id, settings.secret_access_key.get_secret_value())
    else:
        shared = str(settings.credentials_file) if settings.credentials_file else None
        credentials = ChainedProvider([EnvAWSProvider(), AWSConfigProvider(shared)])
    return Minio(
        parts.netloc,
        secure=parts.scheme == "https",
        region=settings.region,
        http_client=http,
        credentials=credentials,
    )


@contextlib.contextmanager
def _answers(what: str, key: str) -> Iterator[None]:
    """S3 errors as the router's: a missing key is FileNotFoundError, anything else StorageUnavailable."""
    from minio.error import MinioException, S3Error

    try:
        yield
    except S3Error as exc:
        if exc.code in MISSING:
            raise FileNotFoundError(f"s3: no object {key}") from None
        raise StorageUnavailable(f"s3 {what} {key}: {exc.code}") from exc
    except (MinioException, OSError, ValueError) as exc:  # urllib3's errors are OSErrors or ValueErrors
        if isinstance(exc, FileNotFoundError | StorageUnavailable):
            raise
        raise StorageUnavailable(f"s3 {what} {key}: {type(exc).__name__}") from exc
    except Exception as exc:  # urllib3.exceptions.HTTPError and friends
        raise StorageUnavailable(f"s3 {what} {key}: {type(exc).__name__}") from exc


class S3Storage:
    kind = "s3"

    def __init__(self, settings: S3Settings, cache_parent: Path) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.cache = ReadCache(cache_parent, settings.cache_bytes)
        self._client: Minio | None = None

    @property
    def client(self) -> Minio:
        if self._client is None:
            self._client = make_client(self.settings)
        return self._client

    def key(self, relpath: str) -> str:
        return self.settings.prefix + relpath

    def commit(self, tmp: Path, relpath: str) -> None:
        key = self.key(relpath)
        with _answers("PUT", key):
            self.client.fput_object(self.bucket, key, str(tmp), part_size=self.settings.part_size,
                                    num_parallel_uploads=1)  # fmt: skip
        self.cache.drop(relpath)  # an overwritten key must not be read from an older copy
        files.remove_quietly(tmp)

    def commit_in(self, batch: Placer, tmp: Path, relpath: str, lazy: bool = False) -> None:
        self.commit(tmp, relpath)  # durable when the server answers: nothing left for the batch's commit

    def local_path(self, relpath: str) -> Path:
        key = self.key(relpath)
        return self.cache.get(relpath, lambda dest: self._fetch(key, dest))

    def _fetch(self, key: str, dest: Path) -> None:
        with _answers("GET", key):
            response: Any = self.client.get_object(self.bucket, key)
            try:
                with dest.open("wb") as out:
                    for chunk in response.stream(1024 * 1024):
                        out.write(chunk)
            finally:
                response.close()
                response.release_conn()

    def open(self, relpath: str) -> BinaryIO:
        return self.local_path(relpath).open("rb")

    def read_bytes(self, relpath: str) -> bytes:
        return self.local_path(relpath).read_bytes()

    def exists(self, relpath: str) -> bool:
        try:
            self.size(relpath)
        except FileNotFoundError:
            return False
        return True

    def size(self, relpath: str) -> int:
        key = self.key(relpath)
        with _answers("HEAD", key):
            return int(self.client.stat_object(self.bucket, key).size or 0)

    def delete(self, relpath: str) -> None:
        self.cache.drop(relpath)
        key = self.key(relpath)
        try:
            with _answers("DELETE", key):
                self.client.remove_object(self.bucket, key)
        except OSError as exc:  # the key stays: an orphan in the bucket costs space, not correctness
            log.warning("%s", exc)

    def check(self) -> None:
        with _answers("HEAD", self.bucket):
            found = self.client.bucket_exists(self.bucket)
        if not found:
            raise StorageUnavailable("s3: no such bucket")
