"""The matry index file format, version 1, written down independently of the C++ code.

Tests use it to craft files that pass every size and checksum check but break an invariant:
``V1File.parse`` splits a saved index into its header fields and payload arrays, a test edits
them, and ``encode`` lays them out again with the sizes and both CRCs recomputed. Integers are in
the host's byte order (the endianness tag says which), as matry writes them.

The layout (cpp/io.hpp): a 128-byte header, the metadata JSON and its CRC-32, the payload, and a
CRC-32 of every byte before it.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

MAGIC = b"MATRYIDX"
HEADER_BYTES = 128
HEADER_CRC_AT = 124

# (offset, struct code, name) of every header field between the magic and the header CRC.
HEADER_FIELDS = (
    (8, "I", "format_version"),
    (12, "I", "endian_tag"),
    (16, "I", "header_bytes"),
    (20, "I", "metric"),
    (24, "Q", "dim"),
    (32, "Q", "node_count"),
    (40, "Q", "live_count"),
    (48, "I", "M"),
    (52, "I", "ef_construction"),
    (56, "Q", "seed"),
    (64, "Q", "ef"),
    (72, "Q", "prefix_dim"),
    (80, "Q", "next_label"),
    (88, "I", "entry_point"),
    (92, "i", "max_level"),
    (96, "Q", "metadata_bytes"),
    (104, "Q", "rotation_floats"),
    (112, "Q", "payload_bytes"),
    (120, "I", "flags"),
)

METRIC_CODES = {"cosine": 0, "ip": 1, "l2": 2}


def _crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass
class V1File:
    header: dict[str, int]
    metadata: bytes
    vectors: np.ndarray  # float32 [nodes, dim]
    labels: np.ndarray  # int64 [nodes]
    deleted: np.ndarray  # uint8 [nodes]
    levels: np.ndarray  # uint8 [nodes]
    level0: np.ndarray  # uint32 [nodes, 1 + 2M]: count, then neighbours
    upper: list[np.ndarray]  # per node: uint32 [level, 1 + M]
    rotation: np.ndarray  # float32 [rotation_floats]

    @classmethod
    def parse(cls, data: bytes) -> V1File:
        if data[:8] != MAGIC:
            raise ValueError("not a matry index file")
        header = {
            name: struct.unpack_from(f"={code}", data, at)[0] for at, code, name in HEADER_FIELDS
        }
        nodes, dim, M = header["node_count"], header["dim"], header["M"]
        offset = HEADER_BYTES
        metadata = data[offset : offset + header["metadata_bytes"]]
        offset += header["metadata_bytes"] + 4

        def take(dtype: Any, count: int) -> np.ndarray:
            nonlocal offset
            array = np.frombuffer(data, dtype=dtype, count=count, offset=offset).copy()
            offset += array.nbytes
            return array

        vectors = take(np.float32, nodes * dim).reshape(nodes, dim)
        labels = take(np.int64, nodes)
        deleted = take(np.uint8, nodes)
        levels = take(np.uint8, nodes)
        level0 = take(np.uint32, nodes * (1 + 2 * M)).reshape(nodes, 1 + 2 * M)
        upper = [
            take(np.uint32, int(level) * (1 + M)).reshape(int(level), 1 + M) for level in levels
        ]
        rotation = take(np.float32, header["rotation_floats"])
        if offset != len(data) - 4:
            raise ValueError("payload layout does not match the file size")
        return cls(header, metadata, vectors, labels, deleted, levels, level0, upper, rotation)

    def encode(self) -> bytes:
        """The file bytes: metadata and payload sizes and both CRCs recomputed, every other
        header field exactly as in ``header``."""
        payload = b"".join(
            [
                np.ascontiguousarray(self.vectors, dtype=np.float32).tobytes(),
                np.ascontiguousarray(self.labels, dtype=np.int64).tobytes(),
                np.ascontiguousarray(self.deleted, dtype=np.uint8).tobytes(),
                np.ascontiguousarray(self.levels, dtype=np.uint8).tobytes(),
                np.ascontiguousarray(self.level0, dtype=np.uint32).tobytes(),
                *(np.ascontiguousarray(rows, dtype=np.uint32).tobytes() for rows in self.upper),
                np.ascontiguousarray(self.rotation, dtype=np.float32).tobytes(),
            ]
        )
        fields = dict(self.header, metadata_bytes=len(self.metadata), payload_bytes=len(payload))
        header = bytearray(HEADER_BYTES)
        header[:8] = MAGIC
        for at, code, name in HEADER_FIELDS:
            struct.pack_into(f"={code}", header, at, fields[name])
        struct.pack_into("=I", header, HEADER_CRC_AT, _crc(bytes(header[:HEADER_CRC_AT])))
        body = bytes(header) + self.metadata + struct.pack("=I", _crc(self.metadata)) + payload
        return body + struct.pack("=I", _crc(body))
