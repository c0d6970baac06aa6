"""Hostile STOW-RS bodies: the multipart/related reader and the STOW endpoint behind it (hypothesis;
docs/security.md).

- ``parts`` reads any body with any boundary into parts or refuses it with ``MultipartError`` (400), never another
  exception; a body ``build`` made comes back as the parts it was made of; ``media_type_params`` reads any header.
- ``spool`` refuses a body over the limit with ``TooLarge`` (413) as soon as it passes it.
- the endpoint (a router in-process, over HTTP on loopback) answers any body with one of its documented statuses
  (200, 202, 400, 409, 413, 415), never a 500.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.app import Router
from router.config import parse_config
from router.listeners.http.multipart import MultipartError, TooLarge, build, media_type_params, parts, spool

from peers import make_instance, write_instances

BOUNDED = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
boundaries = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=70)


def read_all(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]] | None:
    """The parts, or None when the body is refused (MultipartError)."""
    try:
        return [(p.headers, p.body) for p in parts(io.BytesIO(body), boundary)]
    except MultipartError:
        return None


@BOUNDED
@given(body=st.binary(max_size=2048), boundary=st.text(max_size=80))
def test_any_body_is_read_or_refused(body: bytes, boundary: str) -> None:
    try:
        found = read_all(body, boundary)
    except UnicodeEncodeError:  # a boundary that is not Latin-1: the endpoint reads it from a Latin-1 header
        return
    assert found is None or all(len(b) <= len(body) for _h, b in found)


@BOUNDED
@given(
    boundary=boundaries,
    payloads=st.lists(st.binary(max_size=300), max_size=5),
    prefix=st.binary(max_size=20),
    hostile=st.sampled_from([b"", b"\r\n--", b"--", b"\r\n\r\n", b"\r\n"]),
)
def test_bodies_built_from_parts_come_back_as_those_parts(
    boundary: str, payloads: list[bytes], prefix: bytes, hostile: bytes
) -> None:
    payloads = [p + hostile for p in payloads]
    delimiter = b"\r\n--" + boundary.encode()
    if any(delimiter in b"\r\n" + p for p in payloads) or (b"--" + boundary.encode()) in prefix:
        return  # a payload holding the delimiter is not a part of its own (RFC 2046): nothing to compare
    body = prefix + b"\r\n" + build([("application/dicom", p) for p in payloads], boundary) if payloads else b""
    found = read_all(body, boundary)
    if payloads:
        assert found is not None and [b for _h, b in found] == payloads


@BOUNDED
@given(header=st.text(max_size=200))
def test_any_content_type_header_is_read(header: str) -> None:
    media_type, params = media_type_params(header)
    assert isinstance(media_type, str) and isinstance(params, dict)


def test_a_body_over_the_limit_is_refused_as_soon_as_it_passes_it() -> None:
    taken: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for n in range(100):
            taken.append(n)
            yield b"x" * 1000

    with pytest.raises(TooLarge):
        asyncio.run(spool(chunks(), limit=10_500))
    assert len(taken) == 11


# -- the endpoint ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    workdir = tmp_path_factory.mktemp("fuzz-stow")
    (workdir / "rules").mkdir()
    config = {
        "data_dir": "var",
        "rules_dir": "rules",
        "dicom": {"host": "127.0.0.1", "port": 0},
        "hl7": {"host": "127.0.0.1", "port": 0},
        "http": {"host": "127.0.0.1", "port": 0, "max_upload_bytes": 200_000},
    }
    router = Router(parse_config(config, workdir))
    router.start()
    try:
        yield router
    finally:
        router.stop()


@st.composite
def stow_requests(draw: st.DrawFn, instance: bytes) -> tuple[str, bytes]:
    boundary = draw(boundaries.filter(lambda b: '"' not in b and ";" not in b))
    kinds = st.sampled_from(["application/dicom", "application/dicom+json", "text/plain", ""])
    items = draw(
        st.lists(st.tuples(kinds, st.sampled_from([instance, instance[:200], b"", b"\x00" * 300])), max_size=3)
    )
    body = build(items, boundary)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, max(0, len(body) - 1)))
        body = body[:at] + draw(st.binary(max_size=12)) + body[at + draw(st.integers(0, 12)) :]
    content_type = draw(
        st.sampled_from(
            [
                f'multipart/related; type="application/dicom"; boundary={boundary}',
                f'multipart/related; type="application/dicom"; boundary="{boundary}"',
                f"multipart/related; boundary={boundary}",
                'multipart/related; type="application/dicom"',
                "application/dicom",
                "",
            ]
        )
    )
    return content_type, body


def test_the_stow_endpoint_answers_every_body_with_a_documented_status(
    router: Router, tmp_path_factory: pytest.TempPathFactory
) -> None:
    instance = write_instances(tmp_path_factory.mktemp("stow-sample"), [make_instance()])[0].read_bytes()
    statuses: set[int] = set()
    url = f"http://127.0.0.1:{router.http_port}/dicomweb/studies"

    with httpx.Client(timeout=30) as client:

        @settings(BOUNDED, max_examples=150)
        @given(request=stow_requests(instance))
        def check(request: tuple[str, bytes]) -> None:
            content_type, body = request
            headers = {"Content-Type": content_type} if content_type else {}
            response = client.post(url, content=body, headers=headers)
            assert response.status_code in (200, 202, 400, 409, 413, 415), (response.status_code, response.text[:200])
            statuses.add(response.status_code)

        check()
    assert {200, 400, 415} <= statuses, f"the strategy reached only {sorted(statuses)}"


def test_a_part_whose_uid_has_an_unknown_vr_is_refused_not_a_500(router: Router, tmp_path: Path) -> None:
    """The example the fuzzing found (a STOW part whose Study Instance UID's VR reads 'Ul'): pydicom raises only
    when the element is first read, which answered 500; the part is now refused and the request answered."""
    data = bytearray(write_instances(tmp_path, [make_instance()])[0].read_bytes())
    at = data.find(b"\x20\x00\x0d\x00UI")
    assert at > 0
    data[at + 4 : at + 6] = b"Ul"
    body = build([("application/dicom", bytes(data))], "cut")
    url = f"http://127.0.0.1:{router.http_port}/dicomweb/studies"
    with httpx.Client(timeout=30) as client:
        response = client.post(
            url, content=body, headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=cut'}
        )
    assert response.status_code in (200, 202, 409), (response.status_code, response.text[:200])
