"""The INDEX folder's ownership and integrity: which folders `wolofmrl index` may write, and checks of what it reads.

Ownership: `wolofmrl index` writes only into a folder it created or found empty, and marks it first with
`INDEX_MARKER` (`.wolofmrl-index`). Anything else given as --out is refused before any work (`check_out`): an existing
file, a non-empty folder without the marker (a user's own files, e.g. their passages.jsonl), a folder inside DOCS or
a folder holding DOCS. One exception: --out may be the DOCS folder itself (`wolofmrl index notes --out notes`) when
none of the names the index writes (`OWN_NAMES`) is taken there; the folder is then marked, and
`documents.iter_document_files` never reads those names back as documents (nothing of the user's is overwritten, no
passage is read twice).

Integrity: when an index is written, the manifest records every data file's size and SHA-256 (`checksums`). Opening
an index (`check_files`) compares sizes, re-hashes the small files (funnel.json; passages.jsonl is hashed as it is
read), checks full.npy's header against the manifest and, up to `NORM_CHECK_BYTES`, that every stored vector has
unit norm; `verify=True` (`wolofmrl search --verify`) also re-hashes the large files (full.npy, coarse.faiss). Any
mismatch raises `IndexDamaged` (a ValueError) with one line naming the file and the fix: rebuild the index.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from wolofmrl.cli.documents import INDEX_MARKER

MANIFEST = "manifest.json"
PASSAGES = "passages.jsonl"
DATA_FILES = ("passages.jsonl", "full.npy", "coarse.faiss", "funnel.json")
OWN_NAMES = (INDEX_MARKER, MANIFEST, *DATA_FILES)  # every file a local INDEX writes at its top (+ .staging-* folders)
LARGE_FILES = ("full.npy", "coarse.faiss")  # hashed only with verify=True
FORMAT = 2  # 1: no marker and no checksums (refused: rebuild)
HASH_ON_OPEN_BYTES = 256 * 2**20  # larger files are hashed with verify=True only (sizes always checked)
NORM_CHECK_BYTES = 512 * 2**20  # full.npy up to this size has every row's norm checked on open
NORM_TOLERANCE = 1e-3


class IndexDamaged(ValueError):
    """A file of an INDEX folder does not match what was written: the message names the file and says to rebuild."""


def rebuild_hint(folder: Path) -> str:
    return f"rebuild the index (`wolofmrl index DOCS --out NEW_FOLDER`; {folder} cannot be repaired)"


def damaged(folder: Path, name: str, what: str) -> IndexDamaged:
    return IndexDamaged(f"INDEX file {folder / name} is damaged: {what}; {rebuild_hint(folder)}")


# --------------------------------------------------------------------------- ownership
def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_out(out: str | Path, docs: str | Path, add: bool) -> str:
    """Decide whether `wolofmrl index DOCS --out OUT [--add]` may write OUT, before anything is read or written.

    Returns "new" (absent or empty folder; or DOCS itself, when none of `OWN_NAMES` is there), "resume" (an INDEX
    folder of an interrupted first run) or "index" (a finished INDEX; only with `add`). Raises ValueError (OUT is a
    file, inside DOCS, or holds DOCS) or FileExistsError (a non-empty folder that is not an INDEX; DOCS holding a
    file the index would overwrite; an INDEX without `add`), each naming --out and the fix.
    """
    out, docs = Path(out), Path(docs)
    out_r, docs_r = out.resolve(), docs.resolve()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is an existing file, not a folder: give a new folder name for the INDEX")
    owned, finished = (out / INDEX_MARKER).is_file(), (out / MANIFEST).is_file()
    if docs.is_dir() and out_r == docs_r:  # the INDEX shares its documents' folder if nothing there is overwritten
        if not owned:
            _refuse_overwrite(out)
            return "new"
    elif docs.is_dir() and _inside(out_r, docs_r):
        raise ValueError(f"--out {str(out)!r} is inside DOCS {str(docs)!r}: the index would read its own files as "
                         "documents; put the INDEX folder outside DOCS")
    elif _inside(docs_r, out_r):
        raise ValueError(f"--out {str(out)!r} holds DOCS {str(docs)!r}: writing the index there would overwrite or "
                         "mix with your files; give a new folder outside DOCS")
    if not out.exists() or not any(out.iterdir()):
        return "new"
    if not owned:
        what = ("an INDEX written by an older wolofmrl (no checksums): rebuild it into a new folder" if finished else
                "a folder that is not a wolofmrl INDEX and is not empty: wolofmrl writes only into folders it created;"
                " give a new or empty folder")
        raise FileExistsError(f"--out {str(out)!r} is {what}")
    if finished and not add:
        raise FileExistsError(f"--out {str(out)!r} is already an INDEX: pass --add to add documents to it, or give "
                              "another --out")
    return "index" if finished else "resume"


def _refuse_overwrite(out: Path) -> None:
    """--out == DOCS, not yet an INDEX: raise FileExistsError if a name the index writes (`OWN_NAMES`, `.staging-*`)
    is taken there by the user's own file."""
    taken = [name for name in OWN_NAMES if (out / name).exists()] + sorted(p.name for p in out.glob(".staging-*"))
    if taken:
        raise FileExistsError(f"--out {str(out)!r} is DOCS and already holds {', '.join(taken)} (not written by "
                              "wolofmrl index): the index would overwrite them; give a new folder outside DOCS")


def claim(out: Path) -> None:
    """Create `out` (if needed) and mark it as an INDEX folder (before any other file is written)."""
    out.mkdir(parents=True, exist_ok=True)
    marker = out / INDEX_MARKER
    if not marker.is_file():
        marker.write_text("This folder is a wolofmrl INDEX, written by `wolofmrl index`; its files are replaced "
                          "when the index is rebuilt or extended.\n", encoding="utf-8")


# --------------------------------------------------------------------------- checksums
def sha256_file(path: Path, block: int = 2**22) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def checksums(folder: Path) -> dict[str, dict]:
    """{file name: {"size", "sha256"}} of the INDEX's data files that exist (recorded in the manifest at write)."""
    return {name: {"size": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
            for name in DATA_FILES if (folder / name).is_file()}


def read_manifest(folder: Path) -> dict:
    """The manifest of an INDEX folder. Raises FileNotFoundError (not an INDEX) or IndexDamaged."""
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"INDEX {str(folder)!r} has no {MANIFEST}: create it with "
                                f"`wolofmrl index DOCS --out {folder}`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise damaged(folder, MANIFEST, f"not valid JSON ({err})") from None
    if not isinstance(manifest, dict):
        raise damaged(folder, MANIFEST, "not a JSON object")
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("checksums"), dict):
        raise IndexDamaged(f"INDEX {folder} was written by an older wolofmrl (format {manifest.get('format')}, no "
                           f"checksums): {rebuild_hint(folder)}")
    missing = [k for k in ("model", "full_dim", "coarse_dim", "count", "files") if k not in manifest]
    if missing:
        raise damaged(folder, MANIFEST, f"keys {missing} missing")
    return manifest


def check_files(folder: Path, manifest: dict, verify: bool = False) -> None:
    """Sizes of every data file against the manifest, hashes of the small ones (all with `verify`), full.npy's
    header. Raises IndexDamaged naming the first bad file."""
    for name, want in manifest["checksums"].items():
        path = folder / name
        if not path.is_file():
            raise damaged(folder, name, "missing")
        size = path.stat().st_size
        if size != want["size"]:
            raise damaged(folder, name, f"{size} bytes, {want['size']} when written")
        small = name not in LARGE_FILES and want["size"] <= HASH_ON_OPEN_BYTES
        if name != PASSAGES and (verify or small) and sha256_file(path) != want["sha256"]:
            raise damaged(folder, name, "its SHA-256 differs from the one recorded when it was written")
    required = () if manifest.get("engine") == "ray" else DATA_FILES  # ray: its own files, all listed
    for name in required:
        if name not in manifest["checksums"] and name != "coarse.faiss":
            raise damaged(folder, MANIFEST, f"no checksum for {name}")


def check_vectors(folder: Path, vectors, manifest: dict, rows=None) -> None:
    """full.npy's shape against the manifest and the unit norm of its rows (all rows, or the (n,) int array `rows`).
    vectors: (N, D) float32 numpy array (memory-mapped or not)."""
    import numpy as np  # not at module level: `check_out` runs before any heavy import
    shape = (manifest["count"], manifest["full_dim"])
    if vectors.shape != shape or vectors.dtype != np.float32:
        raise damaged(folder, "full.npy", f"shape {vectors.shape} {vectors.dtype}, the manifest says {shape} float32")
    if rows is None and vectors.nbytes > NORM_CHECK_BYTES:
        return  # too large to read on every open: rows are checked as search uses them
    step = 65536
    for s in range(0, len(vectors) if rows is None else len(rows), step):
        block = np.asarray(vectors[s:s + step] if rows is None else vectors[np.sort(rows[s:s + step])])
        norms = np.linalg.norm(block.astype(np.float64), axis=1)
        bad = ~(np.abs(norms - 1) <= NORM_TOLERANCE)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            row = s + i if rows is None else int(np.sort(rows[s:s + step])[i])
            raise damaged(folder, "full.npy", f"row {row} has norm {norms[i]:.4g}, every stored vector has norm 1")


def read_passages_file(folder: Path, manifest: dict) -> list[dict]:
    """passages.jsonl as a list of dicts, hashed as it is read; each line's "id" must equal its row."""
    path = folder / PASSAGES
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest["checksums"][PASSAGES]["sha256"]:
        raise damaged(folder, PASSAGES, "its SHA-256 differs from the one recorded when it was written (edited, "
                                        "reordered or truncated)")
    passages = []
    lines = data.split(b"\n")  # not str.splitlines: U+2028 / U+0085 inside a passage's text are not line ends
    for row, line in enumerate(lines[:-1] if lines and not lines[-1] else lines):
        try:
            item = json.loads(line)
        except ValueError:
            raise damaged(folder, PASSAGES, f"line {row + 1} is not JSON") from None
        if not isinstance(item, dict) or item.get("id") != row:
            raise damaged(folder, PASSAGES, f"line {row + 1} holds id {item.get('id') if isinstance(item, dict) else '?'}"
                                            f", not {row}")
        passages.append(item)
    if len(passages) != manifest["count"]:
        raise damaged(folder, PASSAGES, f"{len(passages)} passages, the manifest says {manifest['count']}")
    return passages
