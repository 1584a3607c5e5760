"""Scalars from TensorBoard event files, without TensorFlow or TensorBoard.

An event file (``events.out.tfevents.*``) is a TFRecord stream: each record is a little-endian
uint64 length, the masked CRC-32C of those 8 bytes, the payload, and the payload's masked CRC-32C.
Each payload is an ``Event`` protocol buffer (tensorflow/core/util/event.proto): ``wall_time``
(field 1, double), ``step`` (2, int64) and ``summary`` (5), whose repeated ``value`` (1) holds a
``tag`` (1) and either ``simple_value`` (2, float32: what ``SummaryWriter.add_scalar`` writes) or
a ``tensor`` (8, a TensorProto: ``dtype`` 1, ``tensor_content`` 4, ``float_val`` 5,
``double_val`` 6, ``int_val`` 7, ``int64_val`` 10). Only those fields are decoded; everything
else is skipped by its wire type.

``read_scalars(path)`` uses TensorBoard's own reader when ``tensorboard`` is installed
and this module's otherwise (both give the same rows, tests/test_import.py); ``scalars(paths)``
merges several files (a resumed run writes a new one), the last write of a (tag, step) winning.
Here a record whose CRC does not match, or a file cut inside a record, is
:class:`EventFileError` naming the file and the byte offset (TensorBoard's reader stops quietly
at a cut record, as a file still being written has one). ``encode_record`` / ``masked_crc32c``
are the inverse, for writers (tests).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

__all__ = ["Scalar", "EventFileError", "read_scalars", "scalars", "event_files", "crc32c", "masked_crc32c",
           "encode_record", "records"]


@dataclass(frozen=True)
class Scalar:
    tag: str
    step: int
    value: float
    wall_time: float


class EventFileError(ValueError):
    """An event file that cannot be read to its end: one sentence naming the file and where."""


# --------------------------------------------------------------------------- CRC-32C


def _table() -> list[int]:
    out = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        out.append(c)
    return out


_T = _table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord uses."""
    c = 0xFFFFFFFF
    t = _T
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def encode_record(payload: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, the payload, its masked CRC."""
    n = struct.pack("<Q", len(payload))
    return n + struct.pack("<I", masked_crc32c(n)) + payload + struct.pack("<I", masked_crc32c(payload))


def records(path: str | Path) -> Iterator[bytes]:
    """The payloads of a TFRecord file, each CRC checked."""
    p = Path(path)
    data = p.read_bytes()
    i, end = 0, len(data)
    while i < end:
        if end - i < 12:
            raise EventFileError(f"{p} is cut short at byte {i} (a record header needs 12 bytes, {end - i} left)")
        head = data[i:i + 8]
        (n,) = struct.unpack("<Q", head)
        (crc,) = struct.unpack("<I", data[i + 8:i + 12])
        if crc != masked_crc32c(head):
            raise EventFileError(f"{p} is damaged at byte {i}: the record length fails its CRC (not an event file?)")
        if i + 12 + n + 4 > end:
            raise EventFileError(f"{p} is cut short at byte {i}: a record of {n} bytes runs past the end of the file")
        payload = data[i + 12:i + 12 + n]
        (crc,) = struct.unpack("<I", data[i + 12 + n:i + 16 + n])
        if crc != masked_crc32c(payload):
            raise EventFileError(f"{p} is damaged at byte {i}: the record's payload fails its CRC")
        yield payload
        i += 16 + n


# --------------------------------------------------------------------------- protobuf


def _varint(b: bytes, i: int) -> tuple[int, int]:
    shift = out = 0
    while True:
        if i >= len(b):
            raise ValueError("truncated varint")
        c = b[i]
        i += 1
        out |= (c & 0x7F) << shift
        if not c & 0x80:
            return out, i
        shift += 7


def _fields(b: bytes) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of one message: int for varints, bytes for the rest."""
    i, end = 0, len(b)
    while i < end:
        key, i = _varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(b, i)
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 2:
            n, i = _varint(b, i)
            v, i = b[i:i + n], i + n
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wt} is not decoded")
        if i > end:
            raise ValueError("truncated field")
        yield num, wt, v


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


_DT = {1: ("<f", 4), 2: ("<d", 8), 3: ("<i", 4), 9: ("<q", 8), 19: ("<e", 2)}  # float, double, int32, int64, half


def _tensor_value(b: bytes) -> float | None:
    """The first element of a scalar TensorProto (None: not a number type)."""
    dtype, content, vals = 0, None, []
    for num, wt, v in _fields(b):
        if num == 1 and wt == 0:
            dtype = v
        elif num == 4 and wt == 2:
            content = v
        elif num in (5, 6) and wt == 2:  # packed float / double
            fmt, k = ("<f", 4) if num == 5 else ("<d", 8)
            vals += [struct.unpack(fmt, v[j:j + k])[0] for j in range(0, len(v), k)]
        elif num == 5 and wt == 5:
            vals.append(struct.unpack("<f", v)[0])
        elif num == 6 and wt == 1:
            vals.append(struct.unpack("<d", v)[0])
        elif num in (7, 10) and wt == 0:
            vals.append(_signed64(v))
        elif num in (7, 10) and wt == 2:
            j = 0
            while j < len(v):
                x, j = _varint(v, j)
                vals.append(_signed64(x))
    if vals:
        return float(vals[0])
    if content and dtype in _DT:
        fmt, k = _DT[dtype]
        return float(struct.unpack(fmt, content[:k])[0]) if len(content) >= k else None
    return None


def _event_scalars(payload: bytes) -> Iterator[Scalar]:
    wall, step, summary = 0.0, 0, None
    for num, wt, v in _fields(payload):
        if num == 1 and wt == 1:
            wall = struct.unpack("<d", v)[0]
        elif num == 2 and wt == 0:
            step = _signed64(v)
        elif num == 5 and wt == 2:
            summary = v
    if summary is None:
        return
    for num, wt, v in _fields(summary):
        if num != 1 or wt != 2:
            continue
        tag, value = None, None
        for n2, w2, v2 in _fields(v):
            if n2 == 1 and w2 == 2:
                tag = v2.decode("utf-8", "replace")
            elif n2 == 2 and w2 == 5:
                value = float(struct.unpack("<f", v2)[0])
            elif n2 == 8 and w2 == 2 and value is None:
                value = _tensor_value(v2)
        if tag is not None and value is not None:
            yield Scalar(tag, int(step), value, float(wall))


def _read_own(p: Path) -> list[Scalar]:
    out = []
    for k, payload in enumerate(records(p)):
        try:
            out.extend(_event_scalars(payload))
        except (ValueError, struct.error) as e:
            raise EventFileError(f"{p}: record {k + 1} is not an Event protocol buffer ({e})") from None
    return out


def _read_tensorboard(p: Path) -> list[Scalar]:
    """TensorBoard's own reader (records and Event protos); like TensorBoard, it stops quietly
    at a record cut short by a writer that is still running."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    from tensorboard.util import tensor_util

    out = []
    for ev in LegacyEventFileLoader(str(p)).Load():
        if not ev.HasField("summary"):
            continue
        for v in ev.summary.value:
            kind = v.WhichOneof("value")
            if kind == "simple_value":
                out.append(Scalar(v.tag, int(ev.step), float(v.simple_value), float(ev.wall_time)))
            elif kind == "tensor":
                a = tensor_util.make_ndarray(v.tensor)
                if a.size and a.dtype.kind in "fiu":
                    out.append(Scalar(v.tag, int(ev.step), float(a.reshape(-1)[0]), float(ev.wall_time)))
    return out


def read_scalars(path: str | Path, engine: str = "auto") -> list[Scalar]:
    """Every scalar of one event file, in file order. ``engine``: "auto" (TensorBoard's reader
    when ``tensorboard`` is installed, else this module's), "tensorboard" or "own"."""
    p = Path(path)
    if engine == "auto":
        import importlib.util

        engine = "tensorboard" if importlib.util.find_spec("tensorboard") is not None else "own"
    return _read_tensorboard(p) if engine == "tensorboard" else _read_own(p)


def event_files(path: str | Path) -> list[Path]:
    """``path`` itself when it is a file, else every ``*tfevents*`` file under it, sorted."""
    p = Path(path)
    if p.is_file():
        return [p]
    return sorted(f for f in p.rglob("*tfevents*") if f.is_file() and not f.name.startswith("."))


def scalars(paths: Iterable[str | Path], tags: Iterable[str] | None = None) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} over several event files (a later file's or record's value for the
    same tag and step wins, by wall time then order); ``tags`` keeps only those."""
    keep = None if tags is None else set(tags)
    best: dict[tuple[str, int], tuple[float, int, float]] = {}
    order = 0
    for f in paths:
        for s in read_scalars(f):
            if keep is not None and s.tag not in keep:
                continue
            order += 1
            key = (s.tag, s.step)
            if key not in best or (s.wall_time, order) >= best[key][:2]:
                best[key] = (s.wall_time, order, s.value)
    out: dict[str, dict[int, float]] = {}
    for (tag, step), (_, _, v) in sorted(best.items()):
        out.setdefault(tag, {})[step] = v
    return out
