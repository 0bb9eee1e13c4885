"""A user's French documents -> passages: read .txt / .md / .jsonl / .csv / .parquet, split into bounded passages.

    from wolofmrl.cli.documents import iter_document_files, read_passages
    stats = DropStats()
    for path in iter_document_files("docs/"):
        for p in read_passages(path, stats): ...      # Passage(text, source, position)

Splitting: paragraphs (blank-line separated; for .md, headings and list items are paragraphs too); a paragraph
longer than `max_words` is cut at sentence ends into pieces of at most `max_words` words (a single longer sentence
is cut at `max_words`); linear in the text's length however long a paragraph is. .jsonl: one JSON object per line, its `text_field` (default "text") is one document;
.csv / .parquet: one row per document, column `text_field`. Every dropped item (empty text, bad JSON line, missing field) is
counted by reason in `DropStats`, never lost silently. Files must be UTF-8 (a byte-order mark is allowed); any other
encoding stops with a ValueError naming the file, the first bad byte's line and the fix (re-save as UTF-8). Folders
holding a wolofmrl INDEX (its marker file `INDEX_MARKER`) are skipped: an index never reads its own output.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("wolofmrl.cli")

SUFFIXES = (".txt", ".md", ".jsonl", ".csv", ".parquet")
INDEX_MARKER = ".wolofmrl-index"  # written first into every INDEX folder `wolofmrl index` creates (it owns it)
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+(?=[«\"'(\[A-ZÀ-ÖØ-Þ0-9])")
_MD_BLOCK = re.compile(r"\n\s*\n|\n(?=#{1,6}\s)|\n(?=\s*[-*+]\s)|\n(?=\s*\d+[.)]\s)")


@dataclass
class Passage:
    """One passage: `text` (str), `source` (file path, plus `#line` / `#row` for .jsonl / .csv), `position`
    (0-based passage number within its source)."""

    text: str
    source: str
    position: int


@dataclass
class DropStats:
    """Counts of what reading dropped, by reason; `kept` passages."""

    dropped: Counter = field(default_factory=Counter)
    kept: int = 0

    def summary(self) -> str:
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped.items()))
        return f"{self.kept} passages kept" + (f"; dropped: {parts}" if parts else "")


def _index_output(path: Path, folder: Path) -> bool:
    """Whether `path` is a file that `wolofmrl index` wrote into the INDEX `folder` (`folder.OWN_NAMES` at its top,
    or anything in its `.staging-*` folders)."""
    from wolofmrl.cli.folder import OWN_NAMES

    rel = path.relative_to(folder).parts
    return (len(rel) == 1 and rel[0] in OWN_NAMES) or rel[0].startswith(".staging-")


def iter_document_files(docs: str | Path) -> list[Path]:
    """The document files under `docs` (a folder, searched recursively, or one file), sorted.

    Files of a wolofmrl INDEX are never documents: an INDEX folder under `docs` is skipped whole (with a warning),
    and when `docs` itself is an INDEX's folder (`wolofmrl index notes --out notes`) the files that index wrote are
    left out. Raises FileNotFoundError if `docs` does not exist, ValueError if it holds no
    .txt/.md/.jsonl/.csv/.parquet file (or only an INDEX's own files).
    """
    docs = Path(docs)
    if not docs.exists():
        raise FileNotFoundError(f"DOCS {str(docs)!r} does not exist: pass a folder or a {'/'.join(SUFFIXES)} file")
    kinds = "/".join(SUFFIXES)
    if docs.is_file() and docs.suffix.lower() not in SUFFIXES:
        raise ValueError(f"DOCS {str(docs)!r}: unsupported file type {docs.suffix or '(none)'!r}; convert it to "
                         f"one of {kinds} (e.g. plain text) first")
    files = [docs] if docs.is_file() else sorted(p for p in docs.rglob("*") if p.is_file())
    if docs.is_dir() and (docs / INDEX_MARKER).is_file():  # an INDEX sharing DOCS' folder: its own files are output
        files = [p for p in files if not _index_output(p, docs)]
        if not any(p.suffix.lower() in SUFFIXES for p in files):
            raise ValueError(f"DOCS {str(docs)!r} is a wolofmrl INDEX folder with no documents besides the index's "
                             "own files: pass the folder of your documents instead")
    indexes = {m.parent for m in files if m.name == INDEX_MARKER}
    own = [p for p in files if indexes.intersection(p.parents)]
    if own:  # another INDEX under DOCS: its passages.jsonl is output, not a document
        logger.warning("skipped %d file(s) inside wolofmrl INDEX folders under %s (%s): an index is not a document",
                       len(own), docs, ", ".join(sorted(str(i) for i in indexes)))
        files = [p for p in files if not indexes.intersection(p.parents)]
    found = [p for p in files if p.suffix.lower() in SUFFIXES]
    skipped = Counter(p.suffix.lower() or "(none)" for p in files if p.suffix.lower() not in SUFFIXES)
    if skipped:  # never drop a user's file silently
        logger.warning("skipped %d file(s) of unsupported types (%s) under %s: convert them to %s to index them",
                       sum(skipped.values()), ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items())), docs, kinds)
    if not found:
        raise ValueError(f"no {kinds} file in {str(docs)!r}")
    return found


def split_passages(text: str, max_words: int = 120, markdown: bool = False) -> list[str]:
    """Split one document into passages of at most `max_words` words (whitespace-normalised, non-empty)."""
    if max_words < 1:
        raise ValueError(f"max_words must be >= 1, got {max_words}")
    text = text.replace("\r\n", "\n")
    blocks = (_MD_BLOCK if markdown else re.compile(r"\n\s*\n")).split(text)
    out = []
    for block in blocks:
        block = " ".join(block.split())
        if markdown:
            block = re.sub(r"^(#{1,6}|[-*+]|\d+[.)])\s+", "", block)
        if not block:
            continue
        piece: list[str] = []
        for sentence in _SENTENCE_END.split(block):
            words = sentence.split()
            start = 0
            while len(words) - start > max_words:  # one sentence longer than a passage: cut it (no copy of the rest)
                if piece:
                    out.append(" ".join(piece))
                    piece = []
                out.append(" ".join(words[start:start + max_words]))
                start += max_words
            words = words[start:]
            if len(piece) + len(words) > max_words and piece:
                out.append(" ".join(piece))
                piece = []
            piece += words
        if piece:
            out.append(" ".join(piece))
    return out


def read_utf8(path: Path) -> str:
    """The text of a UTF-8 file (a leading byte-order mark dropped). Raises ValueError naming the file, the line of
    the first byte that is not UTF-8 and the fix."""
    data = path.read_bytes()
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ValueError(f"{path} is not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}; saved as Latin-1 / "
                         f"Windows-1252?): re-save it as UTF-8, e.g. `iconv -f windows-1252 -t utf-8 {path} > "
                         f"{path.stem}.utf8{path.suffix}`") from None


def _records(path: Path, text_field: str, stats: DropStats) -> Iterator[tuple[str, str]]:
    """(text, source) per document of a .jsonl, .csv or .parquet file."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        file = pq.ParquetFile(path)
        if text_field not in file.schema_arrow.names:
            raise ValueError(f"{path} has no {text_field!r} column (columns: {file.schema_arrow.names}); "
                             "pass --text-field COLUMN")
        row_no = 0
        for batch in file.iter_batches(columns=[text_field], batch_size=4096):
            for text in batch.column(0).to_pylist():
                row_no += 1
                if not isinstance(text, str):
                    stats.dropped[f"no {text_field!r} string field"] += 1
                    continue
                yield text, f"{path}#row{row_no}"
        return
    content = read_utf8(path)
    if path.suffix.lower() == ".jsonl":
        for line_no, line in enumerate(content.split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                stats.dropped["bad JSON line"] += 1
                continue
            text = row.get(text_field) if isinstance(row, dict) else None
            if not isinstance(text, str):
                stats.dropped[f"no {text_field!r} string field"] += 1
                continue
            yield text, f"{path}#line{line_no}"
        return
    with io.StringIO(content, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or text_field not in reader.fieldnames:
            raise ValueError(f"{path} has no {text_field!r} column (columns: {reader.fieldnames}); "
                             "pass --text-field COLUMN")
        for row_no, row in enumerate(reader, 2):
            yield row.get(text_field) or "", f"{path}#row{row_no}"


def read_passages(path: str | Path, stats: DropStats | None = None, max_words: int = 120,
                  text_field: str = "text") -> Iterator[Passage]:
    """Passages of one document file, in order. Raises ValueError for an unsupported suffix, a file that is not
    UTF-8 (`read_utf8`) or a .csv without the text column; counts drops in `stats`."""
    path = Path(path)
    stats = stats if stats is not None else DropStats()
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use {', '.join(SUFFIXES)}")
    if suffix in (".txt", ".md"):
        docs = [(read_utf8(path), str(path))]
    else:
        docs = _records(path, text_field, stats)
    for text, source in docs:
        passages = split_passages(text, max_words, markdown=suffix == ".md")
        if not passages:
            stats.dropped["empty document"] += 1
        for i, passage in enumerate(passages):
            stats.kept += 1
            yield Passage(passage, source, i)
