"""Read an offline W&B run back: ``run-<id>.wandb`` is a LevelDB-format log (32 KiB blocks; records with a
7-byte header: CRC32, length, type FULL/FIRST/MIDDLE/LAST) of ``wandb_internal_pb2.Record`` messages.
wandb ships no Python reader any more (its Go core writes the file), hence these lines."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B run log"
    pos, pending = HEADER, b""  # file header: ':W&B', magic, version
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # block trailer too short for a header: zero padding
            pos += BLOCK - pos % BLOCK
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        payload = data[pos + HEADER:pos + HEADER + length]
        assert zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc, f"{path}: bad CRC at byte {pos}"
        pos += HEADER + length
        pending = payload if kind in (FULL, FIRST) else pending + payload
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def inventory(path: Path) -> dict:
    """What the W&B project receives from this run: run metadata, config, summary, history keys, files."""
    out = {"config": {}, "summary": {}, "history_keys": set(), "history": [], "files": [], "run": None}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
            out["config"].update({_key(u): json.loads(u.value_json) for u in record.run.config.update})
        elif kind == "config":
            out["config"].update({_key(u): json.loads(u.value_json) for u in record.config.update})
        elif kind == "summary":
            for u in record.summary.update:
                out["summary"][_key(u)] = json.loads(u.value_json)
        elif kind == "history":
            row = {_key(i): json.loads(i.value_json) for i in record.history.item}
            out["history"].append(row)
            out["history_keys"] |= set(row)
        elif kind == "files":
            out["files"] += [f.path for f in record.files.files]
    return out


def _key(item):
    """``val/miou`` for a top-level key, ``("results", "path")`` for a nested one."""
    if item.key:
        return item.key
    return item.nested_key[0] if len(item.nested_key) == 1 else tuple(item.nested_key)
