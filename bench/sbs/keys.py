"""Well-formed Portcullis keys that no store knows (for the unknown-key
flood), and keys with a wrong checksum: the format of
crates/portcullis-core/src/key.rs, `pc_<env>_<43 base62>_<6 base62 CRC32>`."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _base62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(ALPHABET[r])
    return "".join(reversed(out))


def well_formed(env: str = "live") -> str:
    body = f"pc_{env}_{_base62(int.from_bytes(os.urandom(32), 'big'), 43)}"
    return f"{body}_{_base62(zlib.crc32(body.encode()), 6)}"


def bad_checksum(env: str = "live") -> str:
    k = well_formed(env)
    last = k[-1]
    return k[:-1] + ("1" if last != "1" else "2")


def write(path: Path, n: int, make) -> Path:
    with open(path, "w") as f:
        for _ in range(n):
            f.write(make())
            f.write("\n")
    return path
