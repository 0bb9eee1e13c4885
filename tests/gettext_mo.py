"""Write minimal GNU gettext .mo catalogs: test fixtures for `wolofmrl.curation.offline_sources.read_mo`."""
import struct
from pathlib import Path


def write_mo(path: str | Path, catalog: dict[str, str]) -> None:
    """Write `catalog` ({msgid: msgstr}, "" for the header) as a little-endian .mo file at `path`."""
    keys = sorted(catalog)
    ids = b"".join(k.encode() + b"\0" for k in keys)
    strs = b"".join(catalog[k].encode() + b"\0" for k in keys)
    n = len(keys)
    start = 28 + 16 * n
    otab, ttab, o, t = [], [], 0, 0
    for k in keys:
        b = k.encode()
        otab.append((len(b), start + o))
        o += len(b) + 1
    for k in keys:
        b = catalog[k].encode()
        ttab.append((len(b), start + len(ids) + t))
        t += len(b) + 1
    head = struct.pack("<7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, 0)
    body = b"".join(struct.pack("<2I", *x) for x in otab) + b"".join(struct.pack("<2I", *x) for x in ttab)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(head + body + ids + strs)
