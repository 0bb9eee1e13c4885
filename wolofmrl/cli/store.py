"""An INDEX folder: a user's passages, their full-width embeddings in a funnel FAISS index, and a manifest.

    INDEX/manifest.json    model folder, widths, index kind, the indexed files (size, mtime), drop counts
    INDEX/passages.jsonl   one {"id", "text", "source", "position"} per line, id = row of the index
    INDEX/funnel.json, coarse.faiss, full.npy     wolofmrl.retrieval.FunnelIndex
    INDEX/.staging-*/      embeddings of an unfinished `index` run (chunk files); a rerun resumes from them

Passages are embedded once, at full width, with the passage prefix (`wolofmrl.inference.encode_text`,
text_kind="passage"); queries at full width with the query prefix (text) or from speech. The coarse width (`--dim`)
only decides the shortlist index.
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

from processing_wolofmrl import load_audio  # noqa: E402
from wolofmrl.cli.documents import DropStats, iter_document_files, read_passages  # noqa: E402
from wolofmrl.inference import encode_speech, encode_text, prepare_model  # noqa: E402
from wolofmrl.retrieval import FunnelIndex  # noqa: E402

MANIFEST = "manifest.json"
PASSAGES = "passages.jsonl"


# --------------------------------------------------------------------------- model
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
                batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """(N, dim or hidden) float32 L2-normalised embeddings of texts with the `kind` ("query"/"passage") prefix."""
    return encode_text(model, processor, texts, batch_size=batch_size, dim=dim, dtype=dtype, text_kind=kind,
                       progress=progress).numpy()


def embed_audio(model, processor, clips: list, dim: int | None = None, dtype=None, batch_size: int = 16,
                sampling_rate: int | None = None, progress: bool = False) -> np.ndarray:
    """(N, dim or hidden) float32 L2-normalised embeddings of audio clips of any length.

    clips: file paths / bytes / dicts / arrays (arrays need `sampling_rate`), decoded by the processor's one
    decoder (`processing_wolofmrl.load_audio`) to 16 kHz mono. A clip longer than the model's window
    (`config.max_audio_seconds`, 30 s) is cut into equal windows of at most that length, each embedded, and the
    window embeddings averaged and re-normalised (full width first, then `dim`).
    """
    from modeling_wolofmrl import normalize_dim

    rate = processor.sampling_rate
    limit = int(model.config.max_audio_seconds * rate)
    waves = [load_audio(c, sampling_rate, rate) for c in clips]
    windows, owner = [], []
    for i, wave in enumerate(waves):
        n = max(1, -(-len(wave) // limit))
        step = -(-len(wave) // n)
        for s in range(0, len(wave), step):
            windows.append(wave[s:s + step])
            owner.append(i)
    emb = encode_speech(model, processor, windows, batch_size=batch_size, dim=None, dtype=dtype,
                        sampling_rate=rate, progress=progress)
    pooled = torch.zeros(len(waves), emb.shape[1]).index_add_(0, torch.tensor(owner), emb)
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

    @classmethod
    def open(cls, folder: str | Path, mmap: bool = True) -> DocumentIndex:
        """Open an INDEX folder. Raises FileNotFoundError (not an index) or ValueError (inconsistent parts)."""
        folder = Path(folder)
        if not (folder / MANIFEST).is_file():
            raise FileNotFoundError(f"INDEX {str(folder)!r} has no {MANIFEST}: create it with "
                                    f"`wolofmrl index DOCS --out {folder}`")
        manifest = json.loads((folder / MANIFEST).read_text())
        funnel = FunnelIndex.load(folder, mmap=mmap)
        if manifest.get("passages_file"):  # --engine ray: passages.parquet, read lazily by row group
            from wolofmrl.cli.ray_index import ParquetPassages

            passages = ParquetPassages(folder / manifest["passages_file"])
        else:
            with (folder / PASSAGES).open(encoding="utf-8") as f:
                passages = [json.loads(line) for line in f]
        if len(passages) != len(funnel) or manifest["count"] != len(funnel):
            raise ValueError(f"INDEX {folder} is inconsistent ({len(passages)} passages, {len(funnel)} vectors, "
                             f"manifest {manifest['count']}): rebuild it")
        return cls(folder, manifest, funnel, passages)

    def search(self, queries: np.ndarray, k: int = 10, shortlist: int = 100) -> list[list[dict]]:
        """Funnel search for (Q, full_dim) query embeddings -> per query, k hits {"rank", "score", "id", "text",
        "source", "position"} best first."""
        scores, ids = self.funnel.search(queries, k=k, shortlist=shortlist)
        return [[{"rank": r + 1, "score": round(float(s), 4), **self.passages[int(i)]}
                 for r, (s, i) in enumerate(zip(row_s, row_i)) if i >= 0] for row_s, row_i in zip(scores, ids)]


def _new_files(files: list[Path], manifest: dict | None, stats: DropStats) -> list[Path]:
    """Files not yet in the index; a file indexed before and changed since is counted and skipped."""
    known = (manifest or {}).get("files", {})
    fresh = []
    for path in files:
        key = str(path.resolve())
        if key not in known:
            fresh.append(path)
        elif known[key]["size"] != _fingerprint(path)["size"] or known[key]["mtime_ns"] != _fingerprint(
                path)["mtime_ns"]:
            stats.dropped["file changed since indexed (re-index into a new INDEX to update it)"] += 1
        else:
            stats.dropped["file already indexed"] += 1
    return fresh


def index_documents(docs: str | Path, out: str | Path, model_path: str | Path | None = None, add: bool = False,
                    coarse_dim: int = 128, kind: str = "flat", max_words: int = 120, text_field: str = "text",
                    chunk: int = 2048, batch_size: int = 64, device: str | None = None, dtype: str = "auto",
                    progress: bool = True, log=print) -> dict:
    """Create (or with `add`, extend) the INDEX folder `out` from the documents under `docs`. Resumable: embeddings
    are kept per chunk of `chunk` passages in a staging folder until the index is written. Returns a summary dict.

    Raises FileExistsError when `out` is an index and `add` is False, FileNotFoundError / ValueError for bad DOCS,
    ValueError for a `coarse_dim` outside 1..hidden.
    """
    out = Path(out)
    manifest = json.loads((out / MANIFEST).read_text()) if (out / MANIFEST).is_file() else None
    if manifest and not add:
        raise FileExistsError(f"{out} is already an index: pass --add to add documents to it, or another --out")
    if add and manifest is None and out.exists() and any(out.iterdir()) and not any(out.glob(".staging-*")):
        raise FileExistsError(f"--add: {out} is not an index (no {MANIFEST}) and not empty")
    model_path = str(Path(manifest["model"] if manifest else model_path).resolve())
    stats = DropStats()
    files = _new_files(iter_document_files(docs), manifest, stats)
    passages = [p for f in files for p in read_passages(f, stats, max_words, text_field)]
    summary = {"files_new": len(files), "passages_new": len(passages), "resumed_chunks": 0}
    if not passages:
        summary.update(count=manifest["count"] if manifest else 0, dropped=dict(stats.dropped))
        log(f"nothing to add: {stats.summary()}")
        return summary

    model, processor, autocast = load_model(model_path, device, dtype)
    hidden = int(model.config.embedding_dim)
    if manifest is None:
        if isinstance(coarse_dim, bool) or not isinstance(coarse_dim, int) or not 1 <= coarse_dim <= hidden:
            raise ValueError(f"--dim {coarse_dim}: the shortlist width must be in 1..{hidden} (this model's "
                             f"width; trained Matryoshka dims {model.config.matryoshka_dims})")
        funnel = FunnelIndex(hidden, coarse_dim, kind)  # validates coarse_dim / kind before any embedding
        manifest = {"format": 1, "model": model_path, "full_dim": hidden, "coarse_dim": coarse_dim, "kind": kind,
                    "passage_prefix": model.config.passage_prefix, "query_prefix": model.config.query_prefix,
                    "max_words": max_words, "count": 0, "files": {}, "dropped": {}}
    else:
        funnel = FunnelIndex.load(out)
    stage_key = hashlib.sha256("\n".join(f"{f.resolve()}:{_fingerprint(f)}" for f in files).encode()).hexdigest()
    stage = out / f".staging-{stage_key[:12]}"
    stage.mkdir(parents=True, exist_ok=True)
    parts = []
    starts = range(0, len(passages), chunk)
    from tqdm.auto import tqdm

    for n, s in enumerate(tqdm(starts, desc="index", unit="chunk", disable=not progress, dynamic_ncols=True)):
        part = stage / f"{n:06d}.npy"
        if part.is_file():
            summary["resumed_chunks"] += 1
        else:
            emb = embed_texts(model, processor, [p.text for p in passages[s:s + chunk]], "passage", None, autocast,
                              batch_size)
            np.save(stage / f"{n:06d}.tmp.npy", emb)
            os.replace(stage / f"{n:06d}.tmp.npy", part)  # a killed run never leaves a half chunk
        parts.append(np.load(part))
    _commit(out, funnel, manifest, files, passages, np.concatenate(parts), stats)
    shutil.rmtree(stage)
    summary.update(count=manifest["count"], dropped=dict(stats.dropped))
    log(f"indexed {len(passages)} passages from {len(files)} files into {out} ({manifest['count']} in all); "
        f"{stats.summary()}")
    return summary


def _commit(out: Path, funnel: FunnelIndex, manifest: dict, files, passages, emb: np.ndarray, stats: DropStats):
    """Append passages + vectors and write the index; manifest last (a killed commit fails the count check)."""
    from collections import Counter

    first = len(funnel)
    funnel.add(emb)
    tmp = out / (PASSAGES + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        if first:
            with (out / PASSAGES).open(encoding="utf-8") as old:
                shutil.copyfileobj(old, f)
        for i, p in enumerate(passages):
            f.write(json.dumps({"id": first + i, "text": p.text, "source": p.source, "position": p.position},
                               ensure_ascii=False) + "\n")
    funnel.save(out)
    os.replace(tmp, out / PASSAGES)
    manifest["count"] = len(funnel)
    per_file = Counter(p.source.split("#")[0] for p in passages)
    for path in files:
        manifest["files"][str(path.resolve())] = {**_fingerprint(path), "passages": per_file[str(path)]}
    for reason, n in stats.dropped.items():
        manifest["dropped"][reason] = manifest["dropped"].get(reason, 0) + n
    _write_atomic(out / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False))
