"""Image stores: one image's decoder inputs kept under an id, so a click sends prompts only.

An entry is a dict name -> array (SAM 1: image_embeddings; SAM 2: plus high_res_feats_0/1) and an
optional slot for the last low-res logits. Stores are byte-bounded and evict the least recently used
entry (put, get and their logits forms count as use); an entry's size is the nbytes of its arrays and
logits. Arrays come back read-only. Memory: one process. Shared: sqlite on /dev/shm, several processes
of one machine (Triton's model instances). Redis: several machines, the budget kept in Redis.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import sqlite3
import struct
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Iterator, Mapping
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from segdeploy.errors import BadInputError, MissingDependencyError

Arrays = dict[str, np.ndarray]

SPECS = "'memory', 'shared', 'shared:PATH' or 'redis://HOST:PORT/DB'"
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


class UnknownImageError(BadInputError):
    """A request names an image id the store does not hold (never put, or evicted)."""

    def __init__(self, image_id: str):
        self.image_id = image_id
        super().__init__(f"image {image_id!r} is not in the server's image store (never registered, or evicted); register it again (add_image: its embedding or image), then click by its id")


def content_id(arrays: Mapping[str, np.ndarray]) -> str:
    """An id for these arrays from their names, dtypes, shapes and bytes (sha256, 32 hex chars)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(json.dumps([name, array.dtype.str, list(array.shape)]).encode())
        digest.update(array.reshape(-1).view(np.uint8))
    return digest.hexdigest()[:32]


def parse_size(text: str) -> int:
    """Bytes from "1000", "512MB" or "2GiB" (KB, MB, GB, TB are powers of 1000; KiB... of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if unit not in _UNITS:
        raise BadInputError(f"bad size {text!r}: write bytes with an optional unit, e.g. 1000, 512MB or 2GiB")
    size = int(Decimal(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise BadInputError(f"bad size {text!r}: at least 1 byte")
    return size


class ImageStore(ABC):
    """The contract: put/get an image's arrays by id, its last logits, LRU eviction within max_bytes."""

    def __init__(self, max_bytes: int):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes <= 0:
            raise BadInputError(f"the image store's size must be a positive number of bytes, got {max_bytes!r}")
        self.max_bytes = int(max_bytes)

    def put(self, image_id: str, arrays: Mapping[str, np.ndarray]) -> int:
        """Store (or replace, dropping its logits) an image's arrays; returns the bytes they take."""
        checked = {name: _checked_array(image_id, name, array) for name, array in _checked_arrays(image_id, arrays)}
        nbytes = sum(array.nbytes for array in checked.values())
        self._check_fits(image_id, nbytes)
        self._put(image_id, checked, nbytes)
        return nbytes

    def get(self, image_id: str) -> Arrays:
        """The arrays put under image_id (read-only); UnknownImageError when absent."""
        return self._get(_checked_id(image_id))

    def put_logits(self, image_id: str, array: np.ndarray) -> None:
        """Keep the last low-res logits of a stored image (replacing earlier ones)."""
        self._put_logits(image_id, _checked_array(image_id, "logits", array))

    def get_logits(self, image_id: str) -> np.ndarray | None:
        """The last logits put for a stored image, or None; UnknownImageError when the image is absent."""
        return self._get_logits(_checked_id(image_id))

    def _check_fits(self, image_id: str, nbytes: int) -> None:
        if nbytes > self.max_bytes:
            raise BadInputError(f"image {image_id!r} needs {nbytes} bytes, more than the image store's whole budget of {self.max_bytes}; give the store more room")

    @abstractmethod
    def _put(self, image_id: str, arrays: Arrays, nbytes: int) -> None: ...

    @abstractmethod
    def _get(self, image_id: str) -> Arrays: ...

    @abstractmethod
    def _put_logits(self, image_id: str, array: np.ndarray) -> None: ...

    @abstractmethod
    def _get_logits(self, image_id: str) -> np.ndarray | None: ...

    @abstractmethod
    def __contains__(self, image_id: object) -> bool: ...

    @abstractmethod
    def stats(self) -> dict[str, int]:
        """entries, bytes, max_bytes, evictions."""

    def close(self) -> None:
        """Release connections; the store's content stays where it is shared."""

    def __enter__(self) -> ImageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MemoryImageStore(ImageStore):
    """Entries in this process (an OrderedDict in LRU order), thread-safe."""

    def __init__(self, max_bytes: int):
        super().__init__(max_bytes)
        self._entries: OrderedDict[str, tuple[Arrays, np.ndarray | None]] = OrderedDict()
        self._bytes = self._evictions = 0
        self._lock = threading.Lock()

    def _put(self, image_id: str, arrays: Arrays, nbytes: int) -> None:
        frozen = {name: _frozen_copy(array) for name, array in arrays.items()}
        with self._lock:
            self._take(image_id)
            self._make_room(nbytes)
            self._entries[image_id] = (frozen, None)
            self._bytes += nbytes

    def _get(self, image_id: str) -> Arrays:
        with self._lock:
            return dict(self._touch(image_id)[0])

    def _put_logits(self, image_id: str, array: np.ndarray) -> None:
        logits = _frozen_copy(array)
        with self._lock:
            arrays, _ = self._touch(image_id)
            nbytes = _nbytes(arrays) + logits.nbytes
            self._check_fits(image_id, nbytes)
            self._take(image_id)
            self._make_room(nbytes)
            self._entries[image_id] = (arrays, logits)
            self._bytes += nbytes

    def _get_logits(self, image_id: str) -> np.ndarray | None:
        with self._lock:
            return self._touch(image_id)[1]

    def __contains__(self, image_id: object) -> bool:
        with self._lock:
            return isinstance(image_id, str) and image_id in self._entries

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"entries": len(self._entries), "bytes": self._bytes, "max_bytes": self.max_bytes, "evictions": self._evictions}

    def _touch(self, image_id: str) -> tuple[Arrays, np.ndarray | None]:
        if image_id not in self._entries:
            raise UnknownImageError(image_id)
        self._entries.move_to_end(image_id)
        return self._entries[image_id]

    def _take(self, image_id: str) -> None:
        entry = self._entries.pop(image_id, None)
        if entry is not None:
            self._bytes -= _nbytes(*entry)

    def _make_room(self, nbytes: int) -> None:
        while self._entries and self._bytes + nbytes > self.max_bytes:
            _, entry = self._entries.popitem(last=False)
            self._bytes -= _nbytes(*entry)
            self._evictions += 1


def default_shared_path() -> Path:
    """Where 'shared' keeps its database: /dev/shm (RAM) when there is one, else the temp folder."""
    folder = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    return folder / "segdeploy-image-store.sqlite"


# LRU bookkeeping and blobs in separate tables: touching an entry must not rewrite its megabytes.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (id TEXT PRIMARY KEY, bytes INTEGER NOT NULL,
    logits_bytes INTEGER NOT NULL, used INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS images_used ON images (used);
CREATE TABLE IF NOT EXISTS blobs (id TEXT NOT NULL, kind TEXT NOT NULL, data BLOB NOT NULL, PRIMARY KEY (id, kind));
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters VALUES ('evictions', 0);
"""
_INHERITED: list[sqlite3.Connection] = []
_TOUCH = "UPDATE images SET used = (SELECT MAX(used) + 1 FROM images) WHERE id = ?"
_BLOB = "SELECT b.data FROM images i LEFT JOIN blobs b ON b.id = i.id AND b.kind = ?2 WHERE i.id = ?1"


class SharedImageStore(ImageStore):
    """Entries in one sqlite file (WAL) that every process of a machine opening `path` shares.

    Each change runs in one BEGIN IMMEDIATE transaction, so concurrent processes keep one budget.
    The file can exceed max_bytes by sqlite's free pages and write-ahead log; the entries cannot.
    """

    def __init__(self, path: str | Path | None, max_bytes: int):
        super().__init__(max_bytes)
        self.path = Path(path) if path else default_shared_path()
        if not self.path.parent.is_dir():
            raise BadInputError(f"no folder {self.path.parent} for the shared image store; create it or pick another path")
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        with self._use():
            pass  # open (and create) now, so a bad path fails here

    def _put(self, image_id: str, arrays: Arrays, nbytes: int) -> None:
        blob = _pack(arrays)
        with self._transaction() as db:
            self._drop(db, image_id)
            self._make_room(db, nbytes, image_id)
            db.execute("INSERT INTO images VALUES (?, ?, 0, (SELECT COALESCE(MAX(used), 0) + 1 FROM images))", (image_id, nbytes))
            db.execute("INSERT INTO blobs VALUES (?, 'arrays', ?)", (image_id, blob))

    def _get(self, image_id: str) -> Arrays:
        return _unpack(self._read_blob(image_id, "arrays"))

    def _put_logits(self, image_id: str, array: np.ndarray) -> None:
        blob = _pack({"logits": array})
        with self._transaction() as db:
            row = db.execute("SELECT bytes - logits_bytes FROM images WHERE id = ?", (image_id,)).fetchone()
            if row is None:
                raise UnknownImageError(image_id)
            nbytes = row[0] + array.nbytes
            self._check_fits(image_id, nbytes)
            self._make_room(db, nbytes, image_id)
            db.execute(_TOUCH, (image_id,))
            db.execute("UPDATE images SET bytes = ?, logits_bytes = ? WHERE id = ?", (nbytes, array.nbytes, image_id))
            db.execute("INSERT OR REPLACE INTO blobs VALUES (?, 'logits', ?)", (image_id, blob))

    def _get_logits(self, image_id: str) -> np.ndarray | None:
        blob = self._read_blob(image_id, "logits")
        return None if blob is None else _unpack(blob)["logits"]

    def __contains__(self, image_id: object) -> bool:
        if not isinstance(image_id, str):
            return False
        with self._use() as db:
            return db.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is not None

    def stats(self) -> dict[str, int]:
        with self._use() as db:
            row = db.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0), (SELECT value FROM counters WHERE name = 'evictions') FROM images").fetchone()
        return {"entries": row[0], "bytes": row[1], "max_bytes": self.max_bytes, "evictions": row[2]}

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def _read_blob(self, image_id: str, kind: str) -> bytes | None:
        """One blob of an entry (None: no such blob), then the entry marked as used; no write lock while reading."""
        with self._use() as db:
            row = db.execute(_BLOB, (image_id, kind)).fetchone()
            if row is None:
                raise UnknownImageError(image_id)
            db.execute(_TOUCH, (image_id,))  # a no-op if another process evicted it meanwhile
        return row[0]

    def _make_room(self, db: sqlite3.Connection, nbytes: int, keep: str) -> None:
        """Evict the least recently used entries other than `keep` until they and nbytes fit."""
        (total,) = db.execute("SELECT COALESCE(SUM(bytes), 0) FROM images WHERE id != ?", (keep,)).fetchone()
        evicted = 0
        while total + nbytes > self.max_bytes:
            oldest = db.execute("SELECT id, bytes FROM images WHERE id != ? ORDER BY used LIMIT 1", (keep,)).fetchone()
            if oldest is None:
                break
            self._drop(db, oldest[0])
            total -= oldest[1]
            evicted += 1
        if evicted:
            db.execute("UPDATE counters SET value = value + ? WHERE name = 'evictions'", (evicted,))

    @staticmethod
    def _drop(db: sqlite3.Connection, image_id: str) -> None:
        db.execute("DELETE FROM images WHERE id = ?", (image_id,))
        db.execute("DELETE FROM blobs WHERE id = ?", (image_id,))

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid != os.getpid():
            _INHERITED.append(self._conn)  # a parent's connection: sqlite forbids using or closing it after fork
            self._conn = None
        if self._conn is None:
            self._conn = self._open()
            self._pid = os.getpid()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        """A set-up connection. Processes creating the file at once can find it locked while another
        switches it to WAL, which sqlite reports at once rather than waiting: retried for a minute."""
        deadline = time.monotonic() + 60.0
        while True:
            connection = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            try:
                connection.execute("PRAGMA page_size = 65536")  # before WAL; bigger pages suit big blobs
                connection.execute("PRAGMA journal_mode = WAL")
                connection.execute("PRAGMA synchronous = NORMAL")
                connection.execute("PRAGMA journal_size_limit = 67108864")
                connection.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
                return connection
            except sqlite3.OperationalError as error:
                connection.close()
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.005 + 0.02 * random.random())

    @contextmanager
    def _use(self) -> Iterator[sqlite3.Connection]:
        """This process's connection (autocommit: each statement its own transaction)."""
        with self._lock:
            try:
                yield self._connection()
            except sqlite3.OperationalError as error:
                if "full" in str(error) or "unable to open" in str(error):
                    raise BadInputError(f"the shared image store at {self.path} failed ({error}); give it a writable path with room (a bigger /dev/shm, or shared:PATH)") from None
                raise

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (BEGIN IMMEDIATE) so read-then-evict cannot race."""
        with self._use() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")


# Redis: KEYS are built in the scripts from ARGV[1] (the prefix), so one Redis, not a Redis Cluster.
_LUA_COMMON = """
local P = ARGV[1]
local function drop(id)
  local size = tonumber(redis.call('HGET', P .. 'size', id) or '0')
  redis.call('ZREM', P .. 'lru', id)
  redis.call('HDEL', P .. 'size', id)
  redis.call('HDEL', P .. 'lsize', id)
  redis.call('DEL', P .. 'data:' .. id, P .. 'logits:' .. id)
  redis.call('DECRBY', P .. 'total', size)
end
local function make_room(nbytes, max)
  local evicted = 0
  while tonumber(redis.call('GET', P .. 'total') or '0') + nbytes > max do
    local oldest = redis.call('ZRANGE', P .. 'lru', 0, 0)[1]
    if not oldest then break end
    drop(oldest)
    evicted = evicted + 1
  end
  redis.call('INCRBY', P .. 'evictions', evicted)
end
local function keep(id, nbytes)
  redis.call('ZADD', P .. 'lru', redis.call('INCR', P .. 'clock'), id)
  redis.call('HSET', P .. 'size', id, nbytes)
  redis.call('INCRBY', P .. 'total', nbytes)
end
local function touch(id)
  if redis.call('EXISTS', P .. 'data:' .. id) == 0 then
    drop(id)
    return false
  end
  redis.call('ZADD', P .. 'lru', redis.call('INCR', P .. 'clock'), id)
  return true
end
"""
# ARGV: prefix, id, blob, nbytes, max_bytes
_LUA_PUT = _LUA_COMMON + """
local id, nbytes = ARGV[2], tonumber(ARGV[4])
drop(id)
make_room(nbytes, tonumber(ARGV[5]))
redis.call('SET', P .. 'data:' .. id, ARGV[3])
keep(id, nbytes)
return nbytes
"""
# ARGV: prefix, id, blob, nbytes of the logits, max_bytes; -1: unknown id, -2: too big (size returned second)
_LUA_PUT_LOGITS = _LUA_COMMON + """
local id, nbytes, max = ARGV[2], tonumber(ARGV[4]), tonumber(ARGV[5])
if not touch(id) then return {-1, 0} end
local size = tonumber(redis.call('HGET', P .. 'size', id)) - tonumber(redis.call('HGET', P .. 'lsize', id) or '0') + nbytes
if size > max then return {-2, size} end
redis.call('ZREM', P .. 'lru', id)
redis.call('DECRBY', P .. 'total', redis.call('HGET', P .. 'size', id))
make_room(size, max)
redis.call('SET', P .. 'logits:' .. id, ARGV[3])
redis.call('HSET', P .. 'lsize', id, nbytes)
keep(id, size)
return {0, size}
"""
# ARGV: prefix, id, 'data' or 'logits'; -1: unknown id, nil: no logits
_LUA_GET = _LUA_COMMON + """
if not touch(ARGV[2]) then return -1 end
return redis.call('GET', P .. ARGV[3] .. ':' .. ARGV[2])
"""


class RedisImageStore(ImageStore):
    """Entries in one Redis (redis://HOST:PORT/DB) that several servers share, with one budget.

    The LRU order (a sorted set), the sizes (a hash) and the total live in Redis under `prefix`;
    each put evicts and stores in one Lua script. Give Redis no maxmemory eviction of its own.
    """

    def __init__(self, url: str, max_bytes: int, *, prefix: str = "segdeploy:img:"):
        super().__init__(max_bytes)
        try:
            import redis
        except ImportError:
            raise MissingDependencyError("a Redis image store needs the redis package: pip install 'segdeploy[serve]'") from None
        self.url, self.prefix = url, prefix
        try:
            self._redis = redis.Redis.from_url(url, socket_connect_timeout=5)
            self._redis.ping()
        except (ValueError, redis.RedisError) as error:
            raise BadInputError(f"cannot reach Redis at {_redacted(url)} ({error}); start it or fix the image store URL") from None
        self._put_script = self._redis.register_script(_LUA_PUT)
        self._put_logits_script = self._redis.register_script(_LUA_PUT_LOGITS)
        self._get_script = self._redis.register_script(_LUA_GET)

    def _put(self, image_id: str, arrays: Arrays, nbytes: int) -> None:
        self._put_script(args=[self.prefix, image_id, _pack(arrays), nbytes, self.max_bytes])

    def _get(self, image_id: str) -> Arrays:
        return _unpack(self._fetch(image_id, "data"))

    def _put_logits(self, image_id: str, array: np.ndarray) -> None:
        status, nbytes = self._put_logits_script(args=[self.prefix, image_id, _pack({"logits": array}), array.nbytes, self.max_bytes])
        if status == -1:
            raise UnknownImageError(image_id)
        if status == -2:
            self._check_fits(image_id, nbytes)

    def _get_logits(self, image_id: str) -> np.ndarray | None:
        blob = self._fetch(image_id, "logits")
        return None if blob is None else _unpack(blob)["logits"]

    def __contains__(self, image_id: object) -> bool:
        return isinstance(image_id, str) and bool(self._redis.exists(f"{self.prefix}data:{image_id}"))

    def stats(self) -> dict[str, int]:
        entries, total, evictions = self._redis.pipeline().zcard(f"{self.prefix}lru").get(f"{self.prefix}total").get(f"{self.prefix}evictions").execute()
        return {"entries": entries, "bytes": int(total or 0), "max_bytes": self.max_bytes, "evictions": int(evictions or 0)}

    def close(self) -> None:
        self._redis.close()

    def _fetch(self, image_id: str, kind: str) -> bytes | None:
        blob = self._get_script(args=[self.prefix, image_id, kind])
        if blob == -1:
            raise UnknownImageError(image_id)
        return blob


def open_image_store(spec: str, max_bytes: int) -> ImageStore:
    """The store a CLI option names: 'memory', 'shared', 'shared:PATH' or 'redis://HOST:PORT/DB'."""
    spec = str(spec)
    if spec == "memory":
        return MemoryImageStore(max_bytes)
    if spec == "shared" or spec.startswith("shared:"):
        return SharedImageStore(spec.partition(":")[2] or None, max_bytes)
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisImageStore(spec, max_bytes)
    raise BadInputError(f"unknown image store {spec!r}: use {SPECS}")


def _checked_id(image_id: object) -> str:
    if not isinstance(image_id, str) or not image_id:
        raise BadInputError(f"an image id must be a non-empty string, got {image_id!r}")
    return image_id


def _checked_arrays(image_id: str, arrays: object) -> list[tuple[str, object]]:
    _checked_id(image_id)
    if not isinstance(arrays, Mapping) or not arrays or not all(isinstance(name, str) for name in arrays):
        raise BadInputError(f"image {image_id!r}: store a non-empty dict of name -> array, got {type(arrays).__name__}")
    return list(arrays.items())


def _checked_array(image_id: str, name: str, array: object) -> np.ndarray:
    _checked_id(image_id)
    array = np.ascontiguousarray(array)
    if array.dtype.kind not in "biufc":
        raise BadInputError(f"image {image_id!r}: {name} must be a numeric array, got dtype {array.dtype}")
    return array


def _nbytes(arrays: Arrays, logits: np.ndarray | None = None) -> int:
    return sum(array.nbytes for array in arrays.values()) + (0 if logits is None else logits.nbytes)


def _frozen_copy(array: np.ndarray) -> np.ndarray:
    copy = array.copy()
    copy.flags.writeable = False
    return copy


_MAGIC = b"SDA1"


def _pack(arrays: Arrays) -> bytes:
    """Arrays as one blob: magic, header length, JSON header (name, dtype, shape, offset), raw bytes."""
    header, chunks, offset = [], [], 0
    for name, array in arrays.items():
        header.append({"name": name, "dtype": array.dtype.str, "shape": list(array.shape), "offset": offset})
        padding = -array.nbytes % 64
        chunks += [array.reshape(-1).view(np.uint8), b"\0" * padding]
        offset += array.nbytes + padding
    head = json.dumps(header).encode()
    head += b" " * (-(len(head) + 8) % 64)  # data starts 64-byte aligned within the blob
    return b"".join([_MAGIC, struct.pack("<I", len(head)), head, *chunks])


def _unpack(blob: bytes) -> Arrays:
    """The read-only arrays of a _pack blob (views on it, no copy)."""
    if blob[:4] != _MAGIC:
        raise BadInputError("the image store holds an entry in an unknown format; clear the store")
    (length,) = struct.unpack_from("<I", blob, 4)
    start = 8 + length
    arrays = {}
    for item in json.loads(blob[8:start]):
        dtype, shape = np.dtype(item["dtype"]), tuple(item["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        arrays[item["name"]] = np.frombuffer(blob, dtype, count, start + item["offset"]).reshape(shape)
    return arrays


def _redacted(url: str) -> str:
    """The URL without its password, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
