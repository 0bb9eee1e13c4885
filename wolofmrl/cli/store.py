"""An INDEX folder: a user's passages, their full-width embeddings in a funnel FAISS index, and a manifest.

    INDEX/.wolofmrl-index  marker: `wolofmrl index` created this folder and may write it (`wolofmrl.cli.folder`)
    INDEX/manifest.json    model folder + fingerprint, widths, index kind, arguments, the indexed files (size, mtime,
                           SHA-256), drop counts, and the size + SHA-256 of every file below (checked on open)
    INDEX/passages.jsonl   one {"id", "text", "source", "position"} per line, id = row of the index
    INDEX/funnel.json, coarse.faiss, full.npy     wolofmrl.retrieval.FunnelIndex
    INDEX/.staging-<key>/  embeddings of an unfinished `index` run (chunk files); a rerun with the same key resumes
                           from them. The key hashes everything that changes a vector or its row: the input files'
                           contents, --max-words, --chunk, --text-field, --dtype and the model's fingerprint.

Passages are embedded once, at full width, with the passage prefix (`wolofmrl.inference.encode_text`,
text_kind="passage"); queries at full width with the query prefix (text) or from speech (`embed_audio`: the
processor's one long-audio path, `processing_wolofmrl.audio_windows`). The coarse width (`--dim`) only decides the
shortlist index.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from modeling_wolofmrl import normalize_dim, pool_windows  # noqa: E402
from processing_wolofmrl import audio_windows  # noqa: E402
from wolofmrl.cli import folder as fs  # noqa: E402
from wolofmrl.cli.documents import DropStats, iter_document_files, read_passages  # noqa: E402
from wolofmrl.inference import auto_batches, encode_speech, encode_text, prepare_model  # noqa: E402
from wolofmrl.retrieval import FunnelIndex  # noqa: E402

MANIFEST, PASSAGES = fs.MANIFEST, fs.PASSAGES


# --------------------------------------------------------------------------- model
def model_fingerprint(path: str | Path) -> str:
    """SHA-256 (hex, 16 chars) of a model folder's config.json bytes and the name, size and mtime of its files: it
    changes when the folder is rebuilt or its weights are replaced."""
    path = Path(path)
    h = hashlib.sha256((path / "config.json").read_bytes())
    for f in sorted(p for p in path.iterdir() if p.is_file()):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def load_model(path: str | Path, device: str | None = None, dtype: str = "auto"):
    """(model, processor, torch dtype for autocast or None) of a built folder, in eval mode with SDPA on `device`
    (default: CUDA if available, else CPU). dtype: "auto" (bf16 on CUDA, fp32 on CPU), "float32", "bfloat16"."""
    from transformers import AutoModel, AutoProcessor

    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(f"--model {str(path)!r} is not a model folder (no config.json): build one with "
                                "`python -m wolofmrl.build --out checkpoints/wolofmrl-base`")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    choices = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in choices:
        raise ValueError(f"--dtype {dtype!r} is not one of auto, {', '.join(choices)}")
    model = AutoModel.from_pretrained(path, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    return prepare_model(model, device=device), processor, choices[dtype]


def embed_texts(model, processor, texts: list[str], kind: str, dim: int | None = None, dtype=None,
                batch_size: int | None = None, progress: bool = False) -> np.ndarray:
    """(N, dim or hidden) float32 L2-normalised embeddings of texts with the `kind` ("query"/"passage") prefix.
    `batch_size=None`: sized for the device (`wolofmrl.inference.auto_batches`)."""
    return encode_text(model, processor, texts, batch_size=batch_size, dim=dim, dtype=dtype, text_kind=kind,
                       progress=progress).numpy()


def embed_audio(model, processor, clips: list, dim: int | None = None, dtype=None, batch_size: int | None = None,
                sampling_rate: int | None = None, progress: bool = False) -> np.ndarray:
    """(N, dim or hidden) float32 L2-normalised embeddings of audio clips of any length.

    clips: file paths / bytes / dicts / arrays (arrays need `sampling_rate`). The processor's one long-audio path
    (`processing_wolofmrl.audio_windows`: decode, resample to 16 kHz, trim leading/trailing silence, THEN cut clips
    over `max_audio_seconds` into overlapping windows) gives the windows; they are embedded in length-sorted batches
    (progress per window) and pooled per clip as the model pools them (`pool_windows`, weighted by length), then
    re-normalised (full width first, then `dim`). Same result as `model.get_speech_embeddings(**processor(audio=...))`.
    """
    windows, owner = audio_windows(processor, clips, sampling_rate)
    emb = encode_speech(model, processor, windows, batch_size=batch_size, dim=None, dtype=dtype,
                        sampling_rate=processor.sampling_rate, progress=progress, prepared=True)
    weights = torch.tensor([len(w) for w in windows], dtype=torch.float32)
    pooled = pool_windows(emb, torch.tensor(owner), weights)
    return normalize_dim(pooled, dim, emb.shape[1], model.config.matryoshka_dims).numpy()


# --------------------------------------------------------------------------- the INDEX folder
def _fingerprint(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_atomic(path: Path, text: str):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class DocumentIndex:
    """An opened INDEX folder: `manifest` (dict), `funnel` (FunnelIndex), `passages` (list of dicts, by id)."""

    def __init__(self, folder: Path, manifest: dict, funnel: FunnelIndex, passages: list[dict]):
        self.folder, self.manifest, self.funnel, self.passages = folder, manifest, funnel, passages
        self._checked_all = False

    @classmethod
    def open(cls, folder: str | Path, mmap: bool = True, verify: bool = False) -> DocumentIndex:
        """Open an INDEX folder, checking it against its manifest (`wolofmrl.cli.folder`): sizes, small files' and
        passages.jsonl's SHA-256, full.npy's header and norms, passage ids; `verify=True` also hashes full.npy and
        coarse.faiss. Raises FileNotFoundError (not an index) or IndexDamaged (a ValueError naming the file)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"INDEX {str(folder)!r} is not a folder: create it with "
                                    f"`wolofmrl index DOCS --out {folder}`")
        manifest = fs.read_manifest(folder)
        fs.check_files(folder, manifest, verify)
        try:
            funnel = FunnelIndex.load(folder, mmap=mmap)
        except (ValueError, RuntimeError, KeyError, OSError) as err:  # faiss / numpy could not read a part
            raise fs.damaged(folder, "coarse.faiss, full.npy or funnel.json", str(err).splitlines()[0]) from None
        if manifest.get("passages_file"):  # --engine ray: passages.parquet, read lazily by row group
            from wolofmrl.cli.ray_index import ParquetPassages

            passages = ParquetPassages(folder / manifest["passages_file"])
            if len(passages) != len(funnel) or manifest["count"] != len(funnel):
                raise fs.damaged(folder, manifest["passages_file"], f"{len(passages)} passages, {len(funnel)} "
                                 f"vectors, manifest {manifest['count']}")
            index = cls(folder, manifest, funnel, passages)
            index._checked_all = True  # fp16 re-rank store: sizes + hashes above (full hash with verify)
            return index
        fs.check_vectors(folder, funnel.vectors, manifest)
        index = cls(folder, manifest, funnel, fs.read_passages_file(folder, manifest))
        index._checked_all = funnel.vectors.nbytes <= fs.NORM_CHECK_BYTES
        return index

    def search(self, queries: np.ndarray, k: int = 10, shortlist: int = 100) -> list[list[dict]]:
        """Funnel search for (Q, full_dim) query embeddings -> per query, k hits {"rank", "score", "margin", "id",
        "text", "source", "position"} best first. `margin` = the hit's score minus the next hit's (the (k+1)-th
        passage's for the last hit; None when there is none): a top hit far above the rest is a confident answer,
        one a hair above the next is a guess between them. Stored vectors of the hits are norm-checked (a damaged
        full.npy raises IndexDamaged)."""
        scores, ids = self.funnel.search(queries, k=k + 1, shortlist=max(shortlist, k + 1))
        if not self._checked_all:
            fs.check_vectors(self.folder, self.funnel.vectors, self.manifest, ids[ids >= 0])
        out = []
        for row_s, row_i in zip(scores, ids):
            valid = [(float(s), int(i)) for s, i in zip(row_s, row_i) if i >= 0]
            hits = []
            for r, (s, i) in enumerate(valid[:k]):
                margin = round(s - valid[r + 1][0], 4) if r + 1 < len(valid) else None
                hits.append({"rank": r + 1, "score": round(s, 4), "margin": margin, **self.passages[i]})
            out.append(hits)
        return out


def _new_files(files: list[Path], manifest: dict | None, stats: DropStats) -> list[Path]:
    """Files not yet in the index; a file indexed before and changed since is counted and skipped."""
    known = (manifest or {}).get("files", {})
    fresh = []
    for path in files:
        key = str(path.resolve())
        if key not in known:
            fresh.append(path)
        elif known[key]["size"] != _fingerprint(path)["size"] or fs.sha256_file(path) != known[key].get("sha256"):
            stats.dropped["file changed since indexed (re-index into a new INDEX to update it)"] += 1
        else:
            stats.dropped["file already indexed"] += 1
    return fresh


def _read_all(files: list[Path], stats: DropStats, max_words: int, text_field: str, progress: bool) -> list:
    """Passages of every file, in order, with a progress bar over the bytes read."""
    from tqdm.auto import tqdm

    passages = []
    with tqdm(total=sum(f.stat().st_size for f in files), desc="read", unit="B", unit_scale=True,
              disable=not progress, dynamic_ncols=True) as bar:
        for f in files:
            passages += read_passages(f, stats, max_words, text_field)
            bar.update(f.stat().st_size)
    return passages


def _stage(out: Path, key_parts: dict, log) -> Path:
    """The staging folder of this run's key; other runs' staging folders (other arguments, inputs or model) are
    discarded with a line (their chunks would attach vectors to the wrong passages)."""
    key = hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()[:16]
    stage = out / f".staging-{key}"
    for old in out.glob(".staging-*"):
        if old != stage:
            n = len(list(old.glob("[0-9]*.npy")))
            log(f"discarding {n} chunks of an interrupted run with other inputs or arguments ({old.name})")
            shutil.rmtree(old)
    stage.mkdir(parents=True, exist_ok=True)
    _write_atomic(stage / "key.json", json.dumps(key_parts, indent=1, ensure_ascii=False))
    return stage


def _embed_chunks(model, processor, passages, stage: Path, chunk: int, autocast, batch_size: int, progress: bool,
                  log) -> tuple[np.ndarray, int]:
    """Embed passages chunk by chunk into `stage` (a chunk file per `chunk` passages, written atomically), reusing
    finished chunks whose shape and norms are right. Returns (vectors (N, hidden), resumed chunk count)."""
    from tqdm.auto import tqdm

    hidden = int(model.config.embedding_dim)
    device = next(model.parameters()).device
    starts = range(0, len(passages), chunk)
    done = {}
    for n, s in enumerate(starts):
        part = stage / f"{n:06d}.npy"
        if part.is_file():
            try:
                emb = np.load(part)
            except (ValueError, OSError):
                continue
            rows = len(passages[s:s + chunk])
            if emb.shape == (rows, hidden) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-3):
                done[n] = emb
    if done:
        log(f"resuming an interrupted run: {len(done)} of {len(starts)} chunks already embedded in {stage}")
    parts = []
    with tqdm(total=len(passages), desc="index", unit="passage", disable=not progress, dynamic_ncols=True) as bar:
        for n, s in enumerate(starts):
            texts = [p.text for p in passages[s:s + chunk]]
            if n in done:
                parts.append(done[n])
                bar.update(len(texts))
                continue
            emb = np.zeros((len(texts), hidden), np.float32)
            order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # similar lengths batch together
            # with a progress bar: one call per batch the device takes (a bar that moves on CPU too), else per chunk
            step = (batch_size or auto_batches(device, "text")[0]) if progress else len(texts)
            for b in range(0, len(order), step):
                idx = order[b:b + step]
                emb[idx] = embed_texts(model, processor, [texts[i] for i in idx], "passage", None, autocast,
                                       batch_size)
                bar.update(len(idx))
            np.save(stage / f"{n:06d}.tmp.npy", emb)
            os.replace(stage / f"{n:06d}.tmp.npy", stage / f"{n:06d}.npy")  # a killed run never leaves a half chunk
            parts.append(emb)
    return np.concatenate(parts), len(done)


def index_documents(docs: str | Path, out: str | Path, model_path: str | Path | None = None, add: bool = False,
                    coarse_dim: int = 128, kind: str = "flat", max_words: int = 120, text_field: str = "text",
                    chunk: int = 2048, batch_size: int | None = None, device: str | None = None, dtype: str = "auto",
                    progress: bool = True, log=print) -> dict:
    """Create (or with `add`, extend) the INDEX folder `out` from the documents under `docs`. Resumable: embeddings
    are kept per chunk of `chunk` passages in a staging folder until the index is written; a rerun resumes only
    when inputs, arguments and model are the same (says so), else starts over. Returns a summary dict.

    Everything is checked before the model loads: `out` (`folder.check_out`: only a new/empty folder or one this
    command owns), the documents (UTF-8, fields), the arguments. Raises FileExistsError / ValueError naming --out,
    FileNotFoundError / ValueError for bad DOCS or model, ValueError for a `coarse_dim` outside 1..hidden.
    """
    out, docs = Path(out), Path(docs)
    bad_batch = batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1)
    if not isinstance(chunk, int) or chunk < 1 or bad_batch:
        raise ValueError(f"--chunk {chunk} / --batch-size {batch_size}: both must be integers >= 1 (--batch-size "
                         "may be left out: sized for the device)")
    state = fs.check_out(out, docs, add)
    manifest = DocumentIndex.open(out).manifest if state == "index" else None  # extend only an intact index
    model_path = str(Path(manifest["model"] if manifest else model_path).resolve())
    if not (Path(model_path) / "config.json").is_file():
        raise FileNotFoundError(f"--model {model_path!r} is not a model folder (no config.json): build one with "
                                "`python -m wolofmrl.build --out checkpoints/wolofmrl-base` or set WOLOFMRL_MODEL")
    fingerprint = model_fingerprint(model_path)
    if manifest is not None and manifest.get("model_fingerprint") != fingerprint:
        raise ValueError(f"--add: the model folder {model_path} changed since INDEX {out} was built (other weights "
                         "would embed the new passages differently): rebuild the index into a new folder")
    if manifest is not None:
        max_words, text_field = manifest.get("max_words", max_words), manifest.get("text_field", text_field)
    stats = DropStats()
    files = _new_files(iter_document_files(docs), manifest, stats)
    passages = _read_all(files, stats, max_words, text_field, progress)
    summary = {"files_new": len(files), "passages_new": len(passages), "resumed_chunks": 0}
    if not passages:
        summary.update(count=manifest["count"] if manifest else 0, dropped=dict(stats.dropped))
        log(f"nothing to add: {stats.summary()}")
        return summary
    hashes = {str(f.resolve()): fs.sha256_file(f) for f in files}
    fs.claim(out)
    stage = _stage(out, {"files": hashes, "max_words": max_words, "text_field": text_field, "chunk": chunk,
                         "dtype": dtype, "model": fingerprint, "first_id": manifest["count"] if manifest else 0}, log)

    model, processor, autocast = load_model(model_path, device, dtype)
    hidden = int(model.config.embedding_dim)
    if manifest is None:
        if isinstance(coarse_dim, bool) or not isinstance(coarse_dim, int) or not 1 <= coarse_dim <= hidden:
            raise ValueError(f"--dim {coarse_dim}: the shortlist width must be in 1..{hidden} (this model's "
                             f"width; trained Matryoshka dims {model.config.matryoshka_dims})")
        funnel = FunnelIndex(hidden, coarse_dim, kind)  # validates coarse_dim / kind before any embedding
        manifest = {"format": fs.FORMAT, "model": model_path, "model_fingerprint": fingerprint, "full_dim": hidden,
                    "coarse_dim": coarse_dim, "kind": kind, "passage_prefix": model.config.passage_prefix,
                    "query_prefix": model.config.query_prefix, "max_words": max_words, "text_field": text_field,
                    "count": 0, "files": {}, "dropped": {}, "checksums": {}}
    else:
        funnel = FunnelIndex.load(out)
    emb, summary["resumed_chunks"] = _embed_chunks(model, processor, passages, stage, chunk, autocast, batch_size,
                                                   progress, log)
    _commit(out, funnel, manifest, files, hashes, passages, emb, stats)
    shutil.rmtree(stage)
    summary.update(count=manifest["count"], dropped=dict(stats.dropped))
    log(f"indexed {len(passages)} passages from {len(files)} files into {out} ({manifest['count']} in all)"
        + (f", resumed {summary['resumed_chunks']} chunks" if summary["resumed_chunks"] else "")
        + f"; {stats.summary()}")
    return summary


def _commit(out: Path, funnel: FunnelIndex, manifest: dict, files, hashes: dict, passages, emb: np.ndarray,
            stats: DropStats):
    """Append passages + vectors and write the index; manifest (with every file's size and SHA-256) last: a killed
    commit leaves files that disagree with the manifest, which opening reports."""
    from collections import Counter

    first = len(funnel)
    funnel.add(emb)
    tmp = out / (PASSAGES + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        if first:
            with (out / PASSAGES).open(encoding="utf-8", newline="") as old:
                shutil.copyfileobj(old, f)
        for i, p in enumerate(passages):
            f.write(json.dumps({"id": first + i, "text": p.text, "source": p.source, "position": p.position},
                               ensure_ascii=False) + "\n")
    funnel.save(out)
    os.replace(tmp, out / PASSAGES)
    manifest["count"] = len(funnel)
    per_file = Counter(p.source.split("#")[0] for p in passages)
    for path in files:
        key = str(path.resolve())
        manifest["files"][key] = {**_fingerprint(path), "sha256": hashes[key], "passages": per_file[str(path)]}
    for reason, n in stats.dropped.items():
        manifest["dropped"][reason] = manifest["dropped"].get(reason, 0) + n
    manifest["checksums"] = fs.checksums(out)
    _write_atomic(out / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False))
