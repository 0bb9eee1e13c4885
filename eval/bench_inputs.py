"""eval/bench.py's inputs: query pairs, French passages and Wolof utterances, built once and cached (npz), and
clips of set durations made from the utterances."""
from __future__ import annotations

import glob
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench_env import cpu_model, log  # noqa: E402
from processing_wolofmrl import load_audio  # noqa: E402

SR = 16000
GOLDEN = (math.sqrt(5) - 1) / 2


def read_mo_pairs() -> tuple[list[tuple[str, str]], list[str], str]:
    """(Wolof, French) pairs from the system's gettext catalogs with a Wolof twin, and French catalog sentences."""
    try:
        from wolofmrl.curation.offline_sources import read_mo
    except Exception:  # curation is optional here
        return [], [], "unavailable (wolofmrl.curation.offline_sources.read_mo did not import)"
    pairs, french = [], []
    wo_dir, fr_dir = Path("/usr/share/locale/wo/LC_MESSAGES"), Path("/usr/share/locale/fr/LC_MESSAGES")
    reserved = ("klavaro", "tuxpaint", "tuxtype")  # kept for an independent evaluation (ASSETS.md)
    for wo_file in sorted(wo_dir.glob("*.mo")):
        if any(r in wo_file.name for r in reserved) or not (fr_dir / wo_file.name).is_file():
            continue
        wo, fr = read_mo(wo_file), read_mo(fr_dir / wo_file.name)
        for key in sorted(set(wo) & set(fr)):
            a, b = wo[key][1].strip(), fr[key][1].strip()
            if key and a and b and a != wo[key][0]:
                pairs.append((a, b))
    for fr_file in sorted(fr_dir.glob("*.mo")):
        if any(r in fr_file.name for r in reserved):
            continue
        for key, (_, text) in sorted(read_mo(fr_file).items()):
            text = " ".join(text.split())
            words = text.split()
            if key and 6 <= len(words) <= 60 and not any(c in text for c in "%<>{}\\_|=$@") and text[-1] in ".!?":
                french.append(text)
    return pairs, sorted(set(french)), "gettext catalogs in /usr/share/locale/{wo,fr}/LC_MESSAGES (software UI)"

def curated_inputs(data_dir: str, limit: int = 400) -> dict | None:
    """Pairs + Wolof audio from the curated corpus (docs/CONTRACT.md), its test split if there is one."""
    import pyarrow.parquet as pq

    files = sorted(glob.glob(f"{data_dir}/test/*.parquet")) or sorted(glob.glob(f"{data_dir}/*/*.parquet"))
    if not files:
        return None
    pairs, utts, seen = [], [], set()
    for f in files:
        table = pq.read_table(f, columns=["wo_text", "fr_text", "speech_lang", "audio", "voice"]).to_pylist()
        for row in table:
            if (row["wo_text"], row["fr_text"]) not in seen:
                seen.add((row["wo_text"], row["fr_text"]))
                pairs.append((row["wo_text"], row["fr_text"]))
            audio = row.get("audio") or {}
            if row["speech_lang"] == "wo" and audio.get("bytes") and len(utts) < limit:
                utts.append((load_audio(audio["bytes"]), row["wo_text"], row["voice"]))
        if len(utts) >= limit and len(pairs) >= limit:
            break
    return {"pairs": pairs, "utterances": utts, "source": f"curated corpus {data_dir} ({len(files)} shards)"}

def synthesise_utterances(texts: list[str], kokoro: bool) -> tuple[list, str]:
    """Wolof TTS of each text in a few voices; [] when no synthesiser runs."""
    try:
        from wolofmrl.curation.voice import synthesize
    except Exception as err:
        return [], f"no synthesiser ({type(err).__name__}: {err})"
    voices = [f"espeak-wo-{v}-p{p}" for v, p in (("m1", 50), ("f2", 65), ("m3", 35), ("f4", 50), ("m7", 65))]
    if kokoro:
        voices += ["kokoro-jf_alpha", "kokoro-jm_kumo"]
    utts, errors = [], []
    for i, text in enumerate(texts):
        for voice in (voices[i % len(voices)], voices[(i + 2) % len(voices)]):
            try:
                wave = synthesize(text, "wo", voice)
            except Exception as err:  # e.g. espeak-ng or the Kokoro assets missing on this machine
                errors.append(f"{voice}: {type(err).__name__}")
                continue
            if 0.3 * SR <= len(wave) <= 29 * SR:
                utts.append((wave.astype(np.float32), text, voice))
    engines = sorted({v.split("-")[0] for _, _, v in utts})
    note = f"synthesised Wolof speech ({', '.join(engines) or 'none'}; {len({v for _, _, v in utts})} voices)"
    if errors:
        note += f"; {len(errors)} synthesis failures ({sorted(set(errors))[:3]})"
    return utts, note

def build_inputs(args) -> dict:
    """Texts (passages, query pairs) and base utterances; cached in args.inputs."""
    from wolof_nlp.lexicon.dictionary import DICTIONARY
    from wolof_nlp.lexicon.proverbs import PROVERBS

    curated = None
    if args.data and Path(args.data).is_dir():
        try:
            curated = curated_inputs(args.data)
        except Exception as err:  # a corpus in another layout: fall back to the packaged texts, and say so
            log(f"could not read {args.data} ({type(err).__name__}: {err}); using packaged texts")
    mo_pairs, mo_french, mo_note = read_mo_pairs()
    pairs = [(p.wolof, p.french) for p in PROVERBS]
    pairs += [(e.wolof, re.split(r"[/;,]", e.french)[0].strip()) for _, e in sorted(DICTIONARY.items())]  # 1st sense
    pair_source = "wolof-nlp 0.1.0 (15 proverbs + dictionary headwords, first French sense)"
    if mo_pairs:
        pairs += mo_pairs
        pair_source += f" + {len(mo_pairs)} Wolof/French {mo_note} pairs (mostly country names)"
    if curated:
        pairs = curated["pairs"] + pairs
        pair_source = curated["source"] + " + " + pair_source
    # French passages: the pairs' French sides and paragraphs of 3-6 consecutive catalog sentences
    rng = np.random.default_rng(args.seed)
    paragraphs = []
    i = 0
    while i < len(mo_french) and len(paragraphs) < 4000:
        n = int(rng.integers(3, 7))
        paragraphs.append(" ".join(mo_french[i:i + n]))
        i += n
    passage_source = (f"paragraphs of 3-6 consecutive French sentences from {mo_note}" if paragraphs
                      else "French sides of the pairs only (no French catalogs on this machine)")
    # base utterances to voice: sentences first (proverbs, longer catalog names), then the rest
    if curated and curated["utterances"]:
        utts, clip_note = curated["utterances"], curated["source"] + " (its synthetic TTS audio)"
    else:
        texts = [p.wolof for p in PROVERBS] + sorted({w for w, _ in mo_pairs if len(w.split()) >= 3})[:25]
        utts, clip_note = synthesise_utterances(texts, args.kokoro)
    return {"pairs": pairs, "pair_source": pair_source, "paragraphs": paragraphs, "passage_source": passage_source,
            "utterances": utts, "clip_source": clip_note, "built_on": cpu_model(), "built_at": time.ctime()}

def save_inputs(path: Path, inputs: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    utts = inputs["utterances"]
    pcm = (np.concatenate([u[0] for u in utts]) if utts else np.zeros(0)).clip(-1, 1)
    meta = {k: v for k, v in inputs.items() if k != "utterances"}
    meta["utterance_texts"] = [u[1] for u in utts]
    meta["utterance_voices"] = [u[2] for u in utts]
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, pcm=(pcm * 32767).astype(np.int16), lengths=np.array([len(u[0]) for u in utts]),
                        meta=np.frombuffer(json.dumps(meta, ensure_ascii=False).encode(), dtype=np.uint8))
    tmp.rename(path)

def load_inputs(path: Path) -> dict:
    with np.load(path) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        pcm = z["pcm"].astype(np.float32) / 32767
        ends = np.cumsum(z["lengths"])
    waves = np.split(pcm, ends[:-1]) if len(ends) else []
    meta["utterances"] = list(zip(waves, meta.pop("utterance_texts"), meta.pop("utterance_voices")))
    meta["pairs"] = [tuple(p) for p in meta["pairs"]]
    return meta

def stratified_durations(n: int, lo: float = 2.0, hi: float = 30.0) -> list[float]:
    """Durations spread over [lo, hi] so that every prefix of the list is spread too (golden-ratio sequence)."""
    return [round(lo + (hi - lo) * ((0.5 + i * GOLDEN) % 1.0), 2) for i in range(n)]

def make_clips(utts: list, durations: list[float], seed: int) -> tuple[list[np.ndarray], str]:
    """Clips of exactly the given durations: utterances joined with 0.2-0.6 s pauses, cut at the end."""
    rng = np.random.default_rng(seed)
    clips = []
    for dur in durations:
        need = int(dur * SR)
        if utts:
            parts, total = [], 0
            while total < need:
                wave = utts[int(rng.integers(len(utts)))][0]
                pause = np.zeros(int(rng.uniform(0.2, 0.6) * SR), np.float32)
                parts += [wave, pause]
                total += len(wave) + len(pause)
            clips.append(np.concatenate(parts)[:need].astype(np.float32))
        else:  # synthetic signals, labelled as such in the output
            t = np.arange(need) / SR
            f0 = rng.uniform(120, 300)
            wave = 0.3 * np.sin(2 * np.pi * f0 * t * (1 + 0.05 * np.sin(2 * np.pi * 0.5 * t)))
            envelope = (np.sin(2 * np.pi * rng.uniform(2, 5) * t) > -0.3).astype(np.float32)
            clips.append((wave * envelope + 0.02 * rng.standard_normal(need)).astype(np.float32))
    return clips, ("speech" if utts else "synthetic signals (tone chirps + noise, NOT speech)")
