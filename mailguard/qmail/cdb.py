"""D. J. Bernstein's constant database (cdb), pure Python: a reader and a writer.

Format (cdb.txt from cdb-0.75): a 2048-byte header of 256 (position, slot count) pairs,
little-endian uint32; then records (key length, data length, key, data); then the 256 hash
tables of (hash, record position) slots. hash = 5381; hash = ((hash << 5) + hash) ^ byte,
mod 2**32. Table = hash & 255; first slot = (hash >> 8) % slots; linear probing; an empty
slot has position 0. A key may appear more than once.

Used for control/morercpthosts.cdb (written by qmail-newmrh) and tcprules-style files.
"""

from __future__ import annotations

import os
import struct

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy honours the name)
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

_HEADER = 2048
_PAIR = struct.Struct("<II")
_MAX = 0xFFFFFFFF


class CdbError(ValueError):
    """The file is not a well-formed cdb (or would be over 4 GiB when writing)."""


def cdb_hash(key: bytes) -> int:
    """The cdb hash of `key` (32-bit)."""
    h = 5381
    for c in key:
        h = (((h << 5) + h) & _MAX) ^ c
    return h


class CdbReader:
    """Lookups and iteration over a cdb held in memory (the bytes of the whole file)."""

    __slots__ = ("_data", "_eod")

    def __init__(self, data: bytes) -> None:
        if len(data) < _HEADER:
            raise CdbError(f"cdb shorter than its {_HEADER}-byte header")
        self._data = data
        positions = [_PAIR.unpack_from(data, 8 * i)[0] for i in range(256)]
        # Records run from the header to the first hash table.
        self._eod = min(positions)
        if not _HEADER <= self._eod <= len(data):
            raise CdbError("cdb header points outside the file")

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> CdbReader:
        with open(path, "rb") as f:
            return cls(f.read())

    def _pair(self, pos: int) -> tuple[int, int]:
        if pos + 8 > len(self._data):
            raise CdbError(f"cdb truncated at {pos}")
        a, b = _PAIR.unpack_from(self._data, pos)
        return a, b

    def get_all(self, key: bytes) -> Iterator[bytes]:
        """Every value stored under `key`, in insertion order (cdb_findnext)."""
        h = cdb_hash(key)
        tpos, slots = self._pair(8 * (h & 255))
        if not slots:
            return
        slot = (h >> 8) % slots
        for _ in range(slots):
            sh, rpos = self._pair(tpos + 8 * slot)
            if rpos == 0:
                return
            if sh == h:
                klen, dlen = self._pair(rpos)
                start = rpos + 8
                if start + klen + dlen > len(self._data):
                    raise CdbError(f"cdb record at {rpos} runs past the end")
                if self._data[start : start + klen] == key:
                    yield self._data[start + klen : start + klen + dlen]
            slot = (slot + 1) % slots

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        """The first value stored under `key`, or `default`."""
        return next(self.get_all(key), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and next(self.get_all(key), None) is not None

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) record in file order, duplicates included."""
        pos = _HEADER
        while pos < self._eod:
            klen, dlen = self._pair(pos)
            start = pos + 8
            end = start + klen + dlen
            if end > self._eod:
                raise CdbError(f"cdb record at {pos} runs into the hash tables")
            yield self._data[start : start + klen], self._data[start + klen : end]
            pos = end

    def __iter__(self) -> Iterator[bytes]:
        return (k for k, _ in self.items())


def build_cdb(items: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The bytes of a cdb holding `items` (cdbmake's layout: records, then tables 0..255)."""
    records = bytearray()
    buckets: list[list[tuple[int, int]]] = [[] for _ in range(256)]
    for key, value in items:
        h = cdb_hash(key)
        buckets[h & 255].append((h, _HEADER + len(records)))
        records += _PAIR.pack(len(key), len(value)) + key + value
    header = bytearray()
    tables = bytearray()
    base = _HEADER + len(records)
    for bucket in buckets:
        slots = 2 * len(bucket)
        header += _PAIR.pack(base + len(tables), slots)
        table = [(0, 0)] * slots
        for h, rpos in bucket:
            i = (h >> 8) % slots
            while table[i][1]:
                i = (i + 1) % slots
            table[i] = (h, rpos)
        for h, rpos in table:
            tables += _PAIR.pack(h, rpos)
    if base + len(tables) > _MAX:
        raise CdbError("cdb would exceed 4 GiB")
    return bytes(header + records + tables)


def write_cdb(path: str | os.PathLike[str], items: Iterable[tuple[bytes, bytes]]) -> None:
    """Write a cdb atomically: a temporary file beside `path`, fsync, rename (qmail-newmrh)."""
    target = os.fspath(path)
    tmp = f"{target}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(build_cdb(items))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
