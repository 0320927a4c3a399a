"""Image stores: round trips, the byte budget and LRU order, unknown ids, several processes and servers."""

from __future__ import annotations

import multiprocessing
import shutil
import socket
import subprocess
import sys
import threading
import time
import tempfile
import traceback
import uuid
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from segdeploy.errors import BadInputError, MissingDependencyError
from segdeploy.serving import image_store
from segdeploy.serving.image_store import (
    MemoryImageStore,
    RedisImageStore,
    SharedImageStore,
    UnknownImageError,
    content_id,
    open_image_store,
    parse_size,
)

MiB = 2**20
SAM1 = {"image_embeddings": (256, 64, 64)}  # 4 MiB
SAM2 = {**SAM1, "high_res_feats_0": (32, 256, 256), "high_res_feats_1": (64, 128, 128)}  # 16 MiB
LOGITS = (1, 256, 256)  # 256 KiB


def draw(rng: np.random.Generator, shapes: dict) -> dict[str, np.ndarray]:
    return {name: rng.standard_normal(shape, dtype=np.float32) for name, shape in shapes.items()}


def nbytes(arrays: dict[str, np.ndarray]) -> int:
    return sum(array.nbytes for array in arrays.values())


def stored_bytes(store, image_id: str) -> int:
    """An entry's size as the test sees it: its arrays and its logits, if any."""
    logits = store.get_logits(image_id)
    return nbytes(store.get(image_id)) + (0 if logits is None else logits.nbytes)


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape, name
        np.testing.assert_array_equal(got[name], want[name])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis(log: Path) -> tuple[subprocess.Popen, str]:
    """A real redis-server on a free port (no persistence) that answers PING, and its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed; the Redis image store tests need it: apt-get install redis-server")
    import redis

    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with open(log, "wb") as out:
        server = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    url, deadline = f"redis://127.0.0.1:{port}/0", time.monotonic() + 20
    while True:
        try:
            if redis.Redis.from_url(url).ping():
                return server, url
        except redis.ConnectionError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            stop(server)
            pytest.fail(f"redis-server did not answer PING on port {port}: {log.read_text()[-2000:]}")
        time.sleep(0.05)


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """One redis-server for the session, stopped at its end."""
    server, url = start_redis(tmp_path_factory.mktemp("redis") / "redis.log")
    yield url
    stop(server)


def test_a_missing_redis_server_fails_and_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="apt-get install redis-server"):
        start_redis(tmp_path / "redis.log")


@pytest.fixture(params=["memory", "shared", "redis"])
def make_store(request, tmp_path):
    """make(max_bytes): a store of the kind; for shared and redis each call is one more client of the same store."""
    kind, made, prefix = request.param, [], f"test:{uuid.uuid4().hex}:"

    def make(max_bytes: int):
        if kind == "memory":
            store = MemoryImageStore(max_bytes)
        elif kind == "shared":
            store = SharedImageStore(tmp_path / "store.sqlite", max_bytes)
        else:
            store = RedisImageStore(request.getfixturevalue("redis_url"), max_bytes, prefix=prefix)
        made.append(store)
        return store

    make.kind = kind
    yield make
    for store in made:
        store.close()
    if kind == "redis":
        clear_redis(request.getfixturevalue("redis_url"), prefix)


def clear_redis(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_round_trip_with_logits(make_store, rng):
    store = make_store(64 * MiB)
    sam1, sam2 = draw(rng, SAM1), draw(rng, SAM2)
    assert store.put("sam1", sam1) == nbytes(sam1) == 4 * MiB
    assert store.put("sam2", sam2) == nbytes(sam2) == 16 * MiB
    want = {name: array.copy() for name, array in sam2.items()}
    sam2["image_embeddings"][:] = 0  # the store kept its own copy
    assert_same(store.get("sam1"), sam1)
    got = store.get("sam2")
    assert_same(got, want)
    assert not any(array.flags.writeable for array in got.values())

    assert store.get_logits("sam2") is None
    logits = draw(rng, {"logits": LOGITS})["logits"]
    store.put_logits("sam2", logits)
    np.testing.assert_array_equal(store.get_logits("sam2"), logits)
    assert store.stats()["bytes"] == nbytes(sam1) + nbytes(want) + logits.nbytes
    store.put("sam2", want)  # a new registration starts without logits
    assert store.get_logits("sam2") is None
    assert store.stats() == {"entries": 2, "bytes": 20 * MiB, "max_bytes": 64 * MiB, "evictions": 0}


def test_budget_and_lru_order_over_4x_the_budget(make_store, rng):
    """Mixed SAM 1 / SAM 2 puts, gets and logits (alternating between two clients where shared) against a model LRU."""
    max_bytes = 40 * MiB
    stores = [make_store(max_bytes), make_store(max_bytes)] if make_store.kind != "memory" else [make_store(max_bytes)]
    model: OrderedDict[str, int] = OrderedDict()  # id -> entry size, least recently used first
    arrays_size: dict[str, int] = {}
    ids: list[str] = []
    put_total, step = 0, 0

    def settle(keep: str) -> None:
        for old in [k for k in model if k != keep]:
            if sum(model.values()) <= max_bytes:
                break
            del model[old]

    while put_total < 4 * max_bytes:
        store = stores[step % len(stores)]
        step += 1
        action = rng.choice(["put", "put", "get", "logits"]) if model else "put"
        if action == "put":
            image_id = f"img{len(ids)}"
            arrays = draw(rng, SAM2 if rng.random() < 0.5 else SAM1)
            assert store.put(image_id, arrays) == nbytes(arrays)
            model[image_id] = arrays_size[image_id] = nbytes(arrays)
            settle(image_id)
            ids.append(image_id)
            put_total += nbytes(arrays)
        else:
            image_id = str(rng.choice(list(model)))  # often an old one: touching keeps it
            if action == "get":
                assert store.get(image_id).keys() == (SAM2 if arrays_size[image_id] > 4 * MiB else SAM1).keys()
                model.move_to_end(image_id)
            else:
                store.put_logits(image_id, draw(rng, {"logits": LOGITS})["logits"])
                model.move_to_end(image_id)
                model[image_id] = arrays_size[image_id] + 256 * 1024
                settle(image_id)
        present = [k for k in ids if k in store]
        stats = store.stats()
        assert present == [k for k in ids if k in model], f"step {step} ({action}): not the least recently used entries were evicted"
        assert stats["bytes"] == sum(model.values()) <= max_bytes
        assert stats["entries"] == len(model)
    assert stats["evictions"] == len(ids) - len(model) > 0


def test_touching_an_old_entry_keeps_it(make_store, rng):
    store = make_store(3 * 4 * MiB + 256 * 1024)  # three SAM 1 entries and one logits
    for image_id in "abc":
        store.put(image_id, draw(rng, SAM1))
    store.get("a")
    store.put("d", draw(rng, SAM1))
    assert ("a" in store, "b" in store, "c" in store, "d" in store) == (True, False, True, True)
    store.put_logits("c", draw(rng, {"logits": LOGITS})["logits"])  # logits count as use too
    store.put("e", draw(rng, SAM1))
    assert [k in store for k in "acde"] == [False, True, True, True]
    assert store.stats()["evictions"] == 2


def test_unknown_and_evicted_ids(make_store, rng):
    store = make_store(4 * MiB)
    for call in (store.get, store.get_logits, lambda image_id: store.put_logits(image_id, np.zeros(LOGITS, np.float32))):
        with pytest.raises(UnknownImageError) as caught:
            call("never-sent")
        message = str(caught.value)
        assert "'never-sent'" in message and "register it again" in message and "\n" not in message
        assert isinstance(caught.value, BadInputError) and caught.value.exit_code == 2
    store.put("first", draw(rng, SAM1))
    store.put("second", draw(rng, SAM1))
    with pytest.raises(UnknownImageError, match="'first'.*register it again"):
        store.get("first")


def test_an_entry_larger_than_the_budget_is_refused(make_store, rng):
    store = make_store(4 * MiB + 128 * 1024)
    kept = draw(rng, SAM1)
    store.put("kept", kept)
    with pytest.raises(BadInputError, match="'big' needs 16777216 bytes, more than the image store's whole budget"):
        store.put("big", draw(rng, SAM2))
    with pytest.raises(BadInputError, match="'kept' needs .* more than the image store's whole budget"):
        store.put_logits("kept", np.zeros(LOGITS, np.float32))
    assert "big" not in store and store.get_logits("kept") is None
    assert_same(store.get("kept"), kept)
    assert store.stats()["bytes"] == 4 * MiB and store.stats()["evictions"] == 0


def test_content_id(rng):
    arrays = draw(rng, SAM2)
    same = {name: arrays[name].copy() for name in reversed(list(arrays))}
    assert content_id(arrays) == content_id(same)
    assert len(content_id(arrays)) == 32 and int(content_id(arrays), 16) >= 0
    flipped = {**same, "high_res_feats_1": same["high_res_feats_1"].copy()}
    flipped["high_res_feats_1"].flat[rng.integers(flipped["high_res_feats_1"].size)] += 1
    renamed = {("x" if name == "image_embeddings" else name): array for name, array in arrays.items()}
    reshaped = {**arrays, "image_embeddings": arrays["image_embeddings"].reshape(64, 256, 64)}
    retyped = {**arrays, "image_embeddings": arrays["image_embeddings"].view(np.int32)}
    ids = {content_id(a) for a in (arrays, flipped, renamed, reshaped, retyped)}
    assert len(ids) == 5


@pytest.mark.parametrize("text,size", [("1000", 1000), ("512MB", 512 * 10**6), ("2GiB", 2 * 2**30), ("1.5 kib", 1536), ("64mib", 64 * MiB), ("3B", 3)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "x", "-1", "0", "2 GiBs", "1e9", "0.1B"])
def test_parse_size_refuses(text):
    with pytest.raises(BadInputError, match="bad size") as caught:
        parse_size(text)
    assert "\n" not in str(caught.value)


def test_open_image_store(tmp_path, monkeypatch):
    assert isinstance(open_image_store("memory", 10), MemoryImageStore)
    with open_image_store(f"shared:{tmp_path / 'a.sqlite'}", 10) as store:
        assert isinstance(store, SharedImageStore) and store.path == tmp_path / "a.sqlite" and store.max_bytes == 10
    monkeypatch.setattr(image_store, "default_shared_path", lambda: tmp_path / "default.sqlite")
    with open_image_store("shared", 10) as store:
        assert store.path == tmp_path / "default.sqlite"
    with pytest.raises(BadInputError, match="unknown image store 'disk'.*'memory', 'shared', 'shared:PATH' or 'redis://"):
        open_image_store("disk", 10)
    with pytest.raises(BadInputError, match="no folder"):
        open_image_store(f"shared:{tmp_path / 'missing' / 'a.sqlite'}", 10)
    with pytest.raises(BadInputError, match="positive number of bytes"):
        open_image_store("memory", 0)


def test_default_shared_path_is_in_ram_where_there_is_some():
    ram = Path("/dev/shm")
    assert image_store.default_shared_path().parent == (ram if ram.is_dir() else Path(tempfile.gettempdir()))


def test_redis_errors_are_one_line(monkeypatch):
    url = f"redis://user:secret@127.0.0.1:{free_port()}/0"
    with pytest.raises(BadInputError, match=r"cannot reach Redis at redis://user:\*\*\*@127\.0\.0\.1") as caught:
        open_image_store(url, 10)
    assert "secret" not in str(caught.value) and "\n" not in str(caught.value)
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'segdeploy\[serve\]'"):
        open_image_store("redis://127.0.0.1:6379/0", 10)


def test_two_redis_servers_share_entries_and_one_budget(redis_url, rng):
    prefix = f"test:{uuid.uuid4().hex}:"
    first, second = (RedisImageStore(redis_url, 12 * MiB, prefix=prefix) for _ in range(2))
    try:
        arrays = draw(rng, SAM1)
        first.put("a", arrays)
        assert_same(second.get("a"), arrays)
        second.put_logits("a", np.ones(LOGITS, np.float32))
        assert first.get_logits("a").sum() == 256 * 256
        for image_id in "bcde":  # c's put evicts a (4 MiB and its logits), e's put evicts b
            second.put(image_id, draw(rng, SAM1))
            assert first.stats()["bytes"] <= 12 * MiB
        assert [image_id in first for image_id in "abcde"] == [False, False, True, True, True]
        assert first.stats() == second.stats() == {"entries": 3, "bytes": 12 * MiB, "max_bytes": 12 * MiB, "evictions": 2}
    finally:
        first.close()
        second.close()
        clear_redis(redis_url, prefix)


def _worker(path, max_bytes, index, seeds, rounds, barrier, results) -> None:
    """One process of the shared-store test; reports 'ok' (or a traceback) and the ids it put."""
    ids = [f"first{index}"]
    try:
        store = SharedImageStore(path, max_bytes)
        store.put(f"first{index}", draw(np.random.default_rng(seeds[index]), SAM1))
        barrier.wait(60)
        assert_same(store.get(f"first{1 - index}"), draw(np.random.default_rng(seeds[1 - index]), SAM1))
        rng = np.random.default_rng(seeds[index] + 1)
        entries = [draw(rng, SAM2 if rng.random() < 0.3 else SAM1) for _ in range(rounds)]
        logits = draw(rng, {"logits": LOGITS})["logits"]
        barrier.wait(60)  # then both put back to back
        for arrays in entries:
            image_id = content_id(arrays)
            ids.append(image_id)
            store.put(image_id, arrays)
            assert store.stats()["bytes"] <= max_bytes
            try:
                store.put_logits(image_id, logits)
                assert content_id(store.get(image_id)) == image_id
            except UnknownImageError:
                pass  # the other process may have evicted it already
            assert store.stats()["bytes"] <= max_bytes
        barrier.wait(60)
        results.put((index, "ok", ids))
    except BaseException:
        results.put((index, traceback.format_exc(), ids))


def test_shared_store_across_processes(tmp_path, rng):
    """Two spawned processes put and get concurrently: each sees the other's entries, one budget holds."""
    path, max_bytes = tmp_path / "shared.sqlite", 24 * MiB
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    seeds = [int(s) for s in rng.integers(0, 2**31, size=2)]
    workers = [context.Process(target=_worker, args=(str(path), max_bytes, i, seeds, 16, barrier, results)) for i in range(2)]
    for worker in workers:
        worker.start()
    reports = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(30)
    assert [report[1] for report in sorted(reports)] == ["ok", "ok"], reports
    ids = reports[0][2] + reports[1][2]
    assert len(set(ids)) == 2 + 2 * 16
    with SharedImageStore(path, max_bytes) as store:
        stats = store.stats()
        present = [image_id for image_id in ids if image_id in store]
        sizes = sum(stored_bytes(store, image_id) for image_id in present)
    assert stats["bytes"] == sizes <= max_bytes and stats["entries"] == len(present) > 0
    assert stats["evictions"] == len(ids) - len(present)


@pytest.mark.parametrize("kind", ["memory", "shared"])
def test_threads_keep_the_budget(kind, tmp_path, rng):
    max_bytes = 10 * 64 * 1024
    store = MemoryImageStore(max_bytes) if kind == "memory" else SharedImageStore(tmp_path / "t.sqlite", max_bytes)
    arrays = draw(rng, {"image_embeddings": (16, 32, 32)})  # 64 KiB
    errors = []

    def work(index: int) -> None:
        try:
            for step in range(40):
                store.put(f"{index}-{step}", arrays)
                assert store.stats()["bytes"] <= max_bytes
                try:
                    store.get(f"{index}-{(step + 1) // 2}")
                except UnknownImageError:
                    pass  # evicted by another thread
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert store.stats()["bytes"] == store.stats()["entries"] * 64 * 1024 == max_bytes
    store.close()


def _open_store(path, barrier, results) -> None:
    barrier.wait(60)
    try:
        SharedImageStore(path, 1 << 20).close()
        results.put("ok")
    except BaseException as error:  # noqa: BLE001 - reported to the test
        results.put(f"{type(error).__name__}: {error}")


def test_processes_creating_one_shared_store_at_once(tmp_path):
    """Serving instances starting together open one fresh store file at once. Fault: without the
    retry in SharedImageStore._open, sqlite's "database is locked" (switching a new file to WAL) hit
    9 of 180 openers here, so some of these 30 rounds of 3 fail."""
    context = multiprocessing.get_context("fork")
    failures = []
    for round_ in range(30):
        barrier, results = context.Barrier(3), context.Queue()
        openers = [context.Process(target=_open_store, args=(str(tmp_path / f"s{round_}.sqlite"), barrier, results)) for _ in range(3)]
        for opener in openers:
            opener.start()
        failures += [answer for answer in (results.get(timeout=120) for _ in openers) if answer != "ok"]
        for opener in openers:
            opener.join(30)
    assert not failures, failures[:3]
