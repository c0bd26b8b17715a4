"""The GCS rules model itself: each rule GCS enforces, as the proxy answers it on the wire.

Requests here are raw HTTP (aiohttp), so what is checked is the model's answer, not the
client's handling of it (that is ``test_gcs_rules_objectstore.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from faultproxy import GCSRulesProxy, gcs_hash
from waiting import wait_until

from omniq_console.demo.emulator import Emulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def upload(
    http: aiohttp.ClientSession,
    proxy: GCSRulesProxy,
    name: str,
    data: bytes = b"{}",
    *,
    if_generation_match: int | None = None,
    resource: Mapping[str, object] | None = None,
) -> tuple[int, dict[str, Any]]:
    """A multipart upload as GCS clients send it (``resource``: more JSON fields, such as
    ``metadata`` or ``md5Hash``); returns status and JSON answer."""
    boundary = "b0undary"
    meta = json.dumps({"name": name, **(resource or {})})
    body = (
        (
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{meta}\r\n"
            f"--{boundary}\r\nContent-Type: application/json\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--".encode()
    )
    params = {"uploadType": "multipart"}
    if if_generation_match is not None:
        params["ifGenerationMatch"] = str(if_generation_match)
    async with http.post(
        f"{proxy.url}/upload/storage/v1/b/{proxy.bucket}/o",
        params=params,
        data=body,
        headers={"Content-Type": f'multipart/related; boundary="{boundary}"'},
    ) as response:
        return response.status, await response.json(content_type=None)


async def delete(http: aiohttp.ClientSession, proxy: GCSRulesProxy, name: str) -> int:
    async with http.delete(
        f"{proxy.url}/storage/v1/b/{proxy.bucket}/o/{quote(name, safe='')}"
    ) as response:
        return response.status


async def status_of(http: aiohttp.ClientSession, method: str, url: str) -> int:
    async with http.request(method, url) as response:
        await response.read()
        return response.status


def reason(answer: dict[str, Any]) -> str:
    return str(answer["error"]["errors"][0]["reason"])


async def test_second_mutation_of_a_name_within_a_second_gets_429(
    gcs_rules: GCSRulesProxy, http: aiohttp.ClientSession
) -> None:
    assert (await upload(http, gcs_rules, "a.json"))[0] == 200
    status, answer = await upload(http, gcs_rules, "a.json", b'{"v":2}')
    assert status == 429 and reason(answer) == "rateLimitExceeded"
    assert "rate limit for object mutation" in answer["error"]["message"]
    # Another name is not affected; a delete is a mutation too.
    assert (await upload(http, gcs_rules, "b.json"))[0] == 200
    assert await delete(http, gcs_rules, "b.json") == 429
    assert gcs_rules.mutation_counts() == {"a.json": 1, "b.json": 1}
    assert gcs_rules.rate_limited == 2 and gcs_rules.writes == 4
    assert gcs_rules.max_mutations_per_second() == 1
    # The emulator never saw the refused requests.
    assert [r.outcome for r in gcs_rules.records] == [
        "forwarded",
        "model-429",
        "forwarded",
        "model-429",
    ]


async def test_a_precondition_failure_is_412_and_not_a_mutation(
    gcs_rules: GCSRulesProxy, http: aiohttp.ClientSession
) -> None:
    status, created = await upload(http, gcs_rules, "c.json", if_generation_match=0)
    assert status == 200
    # A create-only write of a name the model knows exists: 412 at once, not 429.
    status, answer = await upload(http, gcs_rules, "c.json", if_generation_match=0)
    assert status == 412 and reason(answer) == "conditionNotMet"
    # So is a compare-and-swap on a generation that is not the current one.
    stale = int(created["generation"]) - 1
    assert (await upload(http, gcs_rules, "c.json", if_generation_match=stale))[0] == 412
    # The right generation while the name is hot: 429 (GCS would take it a second later).
    current = int(created["generation"])
    assert (await upload(http, gcs_rules, "c.json", if_generation_match=current))[0] == 429
    assert gcs_rules.mutation_counts() == {"c.json": 1}
    assert gcs_rules.rate_limited == 1


async def test_a_412_from_the_emulator_is_not_a_mutation(
    gcs_rules: GCSRulesProxy, emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """A name the model has never seen (written around it): the emulator decides."""
    direct = GCSRulesProxy(emulator.url, role="owner", bucket=gcs_rules.bucket)
    with direct:
        assert (await upload(http, direct, "d.json"))[0] == 200
    status, _ = await upload(http, gcs_rules, "d.json", if_generation_match=0)
    assert status == 412
    assert [r.outcome for r in gcs_rules.records] == ["forwarded"]
    assert gcs_rules.mutation_counts() == {}
    # Not hot: the next create-only of a fresh name, and a plain rewrite, go through.
    assert (await upload(http, gcs_rules, "d.json", b'{"v":3}'))[0] == 200


@pytest.mark.parametrize("role", ["objectAdmin", "objectViewer"])
async def test_object_roles_may_not_read_bucket_metadata(
    gcs_rules: GCSRulesProxy, http: aiohttp.ClientSession, role: str
) -> None:
    gcs_rules.role = role
    bucket_url = f"{gcs_rules.url}/storage/v1/b/{gcs_rules.bucket}"
    async with http.get(bucket_url) as response:
        answer = await response.json(content_type=None)
        assert response.status == 403
    assert "storage.buckets.get" in answer["error"]["message"]
    assert await status_of(http, "PATCH", bucket_url) == 403
    async with http.get(f"{gcs_rules.url}/storage/v1/b?project=p") as response:
        assert response.status == 403
        assert "storage.buckets.list" in (await response.json())["error"]["message"]
    assert await status_of(http, "GET", f"{bucket_url}/o?maxResults=1") == 200
    writes = (await upload(http, gcs_rules, "r.json"))[0]
    assert writes == (403 if role == "objectViewer" else 200)


async def test_a_viewer_may_read_but_not_write_or_delete(
    gcs_rules: GCSRulesProxy, http: aiohttp.ClientSession
) -> None:
    assert (await upload(http, gcs_rules, "v.json", b'{"x":1}'))[0] == 200
    gcs_rules.role = "objectViewer"
    object_url = f"{gcs_rules.url}/storage/v1/b/{gcs_rules.bucket}/o/v.json"
    assert await status_of(http, "GET", object_url + "?alt=media") == 200
    status, answer = await upload(http, gcs_rules, "w.json")
    assert status == 403 and "storage.objects.create" in answer["error"]["message"]
    assert await delete(http, gcs_rules, "v.json") == 403
    assert await status_of(http, "PATCH", object_url) == 403
    gcs_rules.role = "owner"
    assert await status_of(http, "GET", f"{gcs_rules.url}/storage/v1/b/{gcs_rules.bucket}") == 200


async def test_custom_metadata_over_8_kib_of_utf8_is_refused(
    gcs_rules: GCSRulesProxy, http: aiohttp.ClientSession
) -> None:
    # 8,192 bytes exactly is allowed: key "k" + 8,191 bytes.
    assert (await upload(http, gcs_rules, "m1.json", resource={"metadata": {"k": "x" * 8191}}))[
        0
    ] == 200
    # Counted in UTF-8 bytes, not characters: 4,096 two-byte characters plus a key.
    status, answer = await upload(
        http, gcs_rules, "m2.json", resource={"metadata": {"k": "é" * 4096}}
    )
    assert status == 400 and "8193 bytes" in answer["error"]["message"]
    assert gcs_rules.mutation_counts() == {"m1.json": 1}


@pytest.mark.parametrize("field", ["md5Hash", "crc32c"])
async def test_an_upload_whose_hash_does_not_match_its_body_is_refused(
    gcs_rules: GCSRulesProxy, http: aiohttp.ClientSession, field: str
) -> None:
    algorithm = "md5" if field == "md5Hash" else "crc32c"
    body = b'{"a":1}'
    wrong = gcs_hash(algorithm, b"something else")
    status, answer = await upload(http, gcs_rules, "h.json", body, resource={field: wrong})
    assert status == 400 and "doesn't match calculated" in answer["error"]["message"]
    right = gcs_hash(algorithm, body)
    assert (await upload(http, gcs_rules, "h.json", body, resource={field: right}))[0] == 200


async def test_an_outage_answers_503_to_everything_for_its_duration(
    gcs_rules: GCSRulesProxy, http: aiohttp.ClientSession
) -> None:
    list_url = f"{gcs_rules.url}/storage/v1/b/{gcs_rules.bucket}/o"
    started = time.monotonic()
    gcs_rules.outage(seconds=0.5)
    assert await status_of(http, "GET", list_url) == 503
    assert (await upload(http, gcs_rules, "o.json"))[0] == 503

    async def answers() -> bool:
        return await status_of(http, "GET", list_url) == 200

    await wait_until(answers, "the end of the 0.5 s outage")
    assert time.monotonic() - started >= 0.5
    assert (await upload(http, gcs_rules, "o.json"))[0] == 200


async def test_split_hash_headers_and_corrupted_downloads(
    gcs_rules: GCSRulesProxy, http: aiohttp.ClientSession
) -> None:
    assert (await upload(http, gcs_rules, "s.json", b'{"s":1}'))[0] == 200
    url = f"{gcs_rules.url}/storage/v1/b/{gcs_rules.bucket}/o/s.json?alt=media"
    gcs_rules.split_hash_headers = True
    gcs_rules.corrupt(times=1, path="alt=media")
    async with http.get(url) as response:
        hashes = response.headers.getall("x-goog-hash")
        body = await response.read()
    assert sorted(h.split("=", 1)[0] for h in hashes) == ["crc32c", "md5"]
    assert body != b'{"s":1}' and len(body) == len(b'{"s":1}')
    async with http.get(url) as response:
        assert await response.read() == b'{"s":1}'


def test_max_mutations_per_second_counts_any_one_second_window(emulator: Emulator) -> None:
    proxy = GCSRulesProxy(emulator.url)
    proxy.mutations = {"a": [10.0, 10.5, 10.99, 12.0], "b": [1.0, 2.0, 3.0]}
    assert proxy.max_mutations_per_second() == 3
    proxy.mutations = {"b": [1.0, 2.0, 3.0]}
    assert proxy.max_mutations_per_second() == 1
    with pytest.raises(ValueError, match="role must be one of"):
        proxy.role = "storageAdmin"


async def delete_if(
    http: aiohttp.ClientSession, proxy: GCSRulesProxy, name: str, generation: int
) -> int:
    async with http.delete(
        f"{proxy.url}/storage/v1/b/{proxy.bucket}/o/{quote(name, safe='')}",
        params={"ifGenerationMatch": str(generation)},
    ) as response:
        return response.status


async def test_a_delete_naming_another_generation_gets_412_at_any_time(
    gcs_rules: GCSRulesProxy, http: aiohttp.ClientSession
) -> None:
    gcs_rules.hot_seconds = 0.0  # the precondition itself, not the per-name rate
    status, first = await upload(http, gcs_rules, "g.json")
    assert status == 200
    status, second = await upload(http, gcs_rules, "g.json", b'{"v":2}')
    assert status == 200
    # The generation seen before the overwrite: GCS refuses (the emulator would delete).
    assert await delete_if(http, gcs_rules, "g.json", int(first["generation"])) == 412
    assert gcs_rules.records[-1].outcome == "model-412"
    assert await delete_if(http, gcs_rules, "g.json", int(second["generation"])) in (200, 204)
    # Gone: a conditioned delete of a missing object is the emulator's 404.
    assert await delete_if(http, gcs_rules, "g.json", int(second["generation"])) == 404


async def test_an_object_creator_may_create_but_not_overwrite_list_read_or_delete(
    gcs_rules: GCSRulesProxy, http: aiohttp.ClientSession
) -> None:
    gcs_rules.hot_seconds = 0.0
    gcs_rules.role = "objectCreator"
    assert (await upload(http, gcs_rules, "c.json"))[0] == 200
    status, answer = await upload(http, gcs_rules, "c.json", b'{"v":2}')
    assert status == 403 and "storage.objects.delete" in answer["error"]["message"]
    base = f"{gcs_rules.url}/storage/v1/b/{gcs_rules.bucket}/o"
    assert await status_of(http, "GET", f"{base}?maxResults=1") == 403
    assert await status_of(http, "GET", f"{base}/c.json?alt=media") == 403
    assert await delete(http, gcs_rules, "c.json") == 403


async def test_an_object_user_may_list_read_overwrite_and_delete_but_not_touch_the_bucket(
    gcs_rules: GCSRulesProxy, http: aiohttp.ClientSession
) -> None:
    gcs_rules.hot_seconds = 0.0
    gcs_rules.role = "objectUser"
    assert (await upload(http, gcs_rules, "u.json"))[0] == 200
    assert (await upload(http, gcs_rules, "u.json", b'{"v":2}'))[0] == 200
    base = f"{gcs_rules.url}/storage/v1/b/{gcs_rules.bucket}"
    assert await status_of(http, "GET", f"{base}/o?maxResults=1") == 200
    assert await status_of(http, "GET", f"{base}/o/u.json?alt=media") == 200
    assert await delete(http, gcs_rules, "u.json") in (200, 204)
    assert await status_of(http, "GET", base) == 403


async def test_a_read_only_scope_reads_but_cannot_write(
    gcs_rules: GCSRulesProxy, http: aiohttp.ClientSession
) -> None:
    assert (await upload(http, gcs_rules, "s.json"))[0] == 200
    gcs_rules.scope = "read-only"
    base = f"{gcs_rules.url}/storage/v1/b/{gcs_rules.bucket}/o"
    assert await status_of(http, "GET", f"{base}?maxResults=1") == 200
    assert await status_of(http, "GET", f"{base}/s.json?alt=media") == 200
    status, answer = await upload(http, gcs_rules, "t.json")
    assert status == 403 and "scope" in answer["error"]["message"]
    assert await delete(http, gcs_rules, "s.json") == 403
    with pytest.raises(ValueError, match="scope must be one of"):
        gcs_rules.scope = "devstorage.full_control"
