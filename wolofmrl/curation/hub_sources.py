"""Real Wolof corpora on the Hugging Face Hub, read with `datasets.load_dataset`.

Readers yield ``("seg", segment)`` and ``("audio", item)`` events (the protocol of `sources`;
``limit`` is applied there). Audio columns are
cast to ``Audio(decode=False)`` so the original encoded bytes pass through untouched
(no torchcodec needed); the voice stage decodes and resamples them.

Every spec may carry ``local: {builder, data_files}`` — the same code then reads a
small local fixture in the exact Hub schema instead of the Hub (tests, offline).
Schemas of FLEURS, MAFAND and galsenai/french-wolof-translation are the published
ones; the ASR corpora's column names are config (``columns:``) because their
schemas differ and could not be checked offline.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from .store import Drops

SPLIT_NAMES = {"train": "train", "validation": "dev", "dev": "dev", "valid": "dev", "test": "test"}


def load_hub(spec: dict, split: str, config: str | None = None):
    """`datasets.load_dataset` for a spec, or its local fixture override."""
    import datasets

    local = spec.get("local")
    streaming = bool(spec.get("streaming", False))
    if local:
        files = local["data_files"]
        if isinstance(files, dict):
            if config is not None and config in files and isinstance(files[config], dict):
                files = files[config]
            files = {split: files[split]}
        else:
            files = {split: files}
        ds = datasets.load_dataset(local.get("builder", "parquet"), data_files=files, split=split, streaming=streaming)
    else:
        ds = datasets.load_dataset(spec["path"], config if config is not None else spec.get("config"), split=split,
                                   streaming=streaming, revision=spec.get("revision"))
    audio_col = spec.get("columns", {}).get("audio", "audio")
    feats = getattr(ds, "features", None) or {}
    if audio_col in feats:
        ds = ds.cast_column(audio_col, datasets.Audio(decode=False))
    return ds


def _seg(spec, group, key, lang, text, split, en=""):
    return {"source": spec["name"], "group": group, "key": key, "lang": lang, "text": text or "", "en": en,
            "license": spec.get("license", "see dataset card"), "source_split": SPLIT_NAMES.get(split, split)}


def _audio(spec, group, key, value, speaker, split, audio_id):
    value = value or {}
    return {"source": spec["name"], "group": group, "key": key, "audio_id": audio_id,
            "bytes": value.get("bytes"), "path": value.get("path") or "", "speaker": speaker or "",
            "source_split": SPLIT_NAMES.get(split, split)}


def iter_fleurs(spec: dict, drops: Drops, reserved: set) -> Iterator[tuple[str, dict]]:
    """google/fleurs: Wolof (wo_sn) speech + transcript, French (fr_fr) text, joined by `id`.

    FLEURS has no speaker ids: the voice is the recording (its `path`), and the
    source's own split is kept (`split_from_source`)."""
    wo_cfg, fr_cfg = spec.get("wo_config", "wo_sn"), spec.get("fr_config", "fr_fr")
    text_col = spec.get("text_column", "raw_transcription")
    for split in spec.get("splits", ["train", "validation", "test"]):
        n = 0
        for row in load_hub(spec, split, wo_cfg):
            n += 1
            key = str(row["id"])
            yield "seg", _seg(spec, wo_cfg, key, "wo", row.get(text_col), split)
            stem = Path(row.get("path") or "").stem or f"{split}-{n}"
            yield "audio", _audio(spec, wo_cfg, key, row.get("audio"), f"fleurs-{stem}", split, f"{split}/{stem}")
        for row in load_hub(spec, split, fr_cfg):
            yield "seg", _seg(spec, wo_cfg, str(row["id"]), "fr", row.get(text_col), split)


def iter_asr(spec: dict, drops: Drops, reserved: set) -> Iterator[tuple[str, dict]]:
    """A Wolof ASR corpus (ALFFA, Kallaama, Waxal, galsenai...): speech + Wolof transcript.
    The French side comes from the MT step of the pair stage (`mt: true`)."""
    cols = {"audio": "audio", "text": "sentence", "speaker": None, "id": None, **spec.get("columns", {})}
    for split in spec.get("splits", ["train"]):
        for i, row in enumerate(load_hub(spec, split, spec.get("config"))):
            rid = str(row[cols["id"]]) if cols["id"] and cols["id"] in row else f"{i:07d}"
            key = f"{split}/{rid}"
            if cols["text"] not in row:
                drops.drop("missing_column", f"{key}:{cols['text']}")
                continue
            speaker = str(row[cols["speaker"]]) if cols["speaker"] and row.get(cols["speaker"]) is not None else ""
            yield "seg", _seg(spec, "asr", key, "wo", row[cols["text"]], split)
            yield "audio", _audio(spec, "asr", key, row.get(cols["audio"]),
                                  f"{spec['name']}-{speaker}" if speaker else "", split, key)


def iter_translation(spec: dict, drops: Drops, reserved: set) -> Iterator[tuple[str, dict]]:
    """French–Wolof text pairs stored as ``translation: {fr: ..., wo|wol: ...}``
    (masakhane/mafand fr-wol, galsenai/french-wolof-translation)."""
    col = spec.get("translation_column", "translation")
    fr_key, wo_key = spec.get("fr_key", "fr"), spec.get("wo_key", "wo")
    for split in spec.get("splits", ["train", "validation", "test"]):
        for i, row in enumerate(load_hub(spec, split, spec.get("config"))):
            key = f"{split}/{i:07d}"
            tr = row.get(col) or {}
            if wo_key not in tr or fr_key not in tr:
                drops.drop("mismatched_pair", key)
                continue
            yield "seg", _seg(spec, spec.get("config") or "default", key, "wo", tr[wo_key], split)
            yield "seg", _seg(spec, spec.get("config") or "default", key, "fr", tr[fr_key], split)


READERS = {"fleurs": iter_fleurs, "asr": iter_asr, "translation": iter_translation}
AUDIO_TYPES = {"fleurs", "asr"}


# --------------------------------------------------------------------------- machine translation
class LookupTranslator:
    """wo → fr from a JSON file {wo_text: fr_text} (precomputed MT, or a test fixture)."""

    name = "lookup"

    def __init__(self, path: str):
        self.table = json.loads(Path(path).read_text(encoding="utf-8"))

    def translate(self, texts: list[str]) -> list[str | None]:
        return [self.table.get(t) for t in texts]


class NLLBTranslator:
    """NLLB-200 through `transformers` (wol_Latn → fra_Latn)."""

    def __init__(self, model: str = "facebook/nllb-200-distilled-600M", device: str | None = None, batch_size: int = 16):
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.name = f"nllb:{model}"
        self.tok = AutoTokenizer.from_pretrained(model, src_lang="wol_Latn")
        self.model = AutoModelForSeq2SeqLM.from_pretrained(model).eval()
        if device:
            self.model.to(device)
        self.batch_size = batch_size

    def translate(self, texts: list[str]) -> list[str | None]:
        import torch

        out: list[str | None] = []
        bos = self.tok.convert_tokens_to_ids("fra_Latn")
        for i in range(0, len(texts), self.batch_size):
            batch = self.tok(texts[i:i + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                             max_length=256).to(self.model.device)
            with torch.inference_mode():
                gen = self.model.generate(**batch, forced_bos_token_id=bos, max_new_tokens=256, num_beams=4)
            out.extend(self.tok.batch_decode(gen, skip_special_tokens=True))
        return out


def get_translator(mt_cfg: dict):
    """The configured MT backend, or (None, reason) when none can run here."""
    backend = (mt_cfg or {}).get("backend", "none")
    if backend in (None, "none"):
        return None, "no MT backend configured"
    try:
        if backend == "lookup":
            return LookupTranslator(mt_cfg["path"]), None
        if backend == "nllb":
            return NLLBTranslator(mt_cfg.get("model", "facebook/nllb-200-distilled-600M"), mt_cfg.get("device")), None
    except Exception as e:  # no weights offline, no transformers...
        return None, f"{backend} unavailable: {type(e).__name__}: {str(e)[:200]}"
    return None, f"unknown MT backend {backend!r}"
