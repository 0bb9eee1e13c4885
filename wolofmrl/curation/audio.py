"""Audio bytes in and out, deterministically, plus the quality measures the filter uses."""
from __future__ import annotations

import io
import zlib

import numpy as np
import soundfile as sf

from processing_wolofmrl import decode_audio

from .voice import SAMPLE_RATE, to_16k


def _ogg_crc_table():
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_OGG_CRC = _ogg_crc_table()


def _ogg_crc(data: bytes) -> int:
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[((crc >> 24) & 0xFF) ^ b]
    return crc


def fix_ogg_serial(data: bytes, serial: int) -> bytes:
    """libsndfile picks a random Ogg stream serial; set it (and each page CRC) so that the
    same audio always encodes to the same bytes."""
    out = bytearray(data)
    pos = 0
    while pos + 27 <= len(out) and out[pos:pos + 4] == b"OggS":
        nseg = out[pos + 26]
        size = 27 + nseg + sum(out[pos + 27: pos + 27 + nseg])
        out[pos + 14: pos + 18] = serial.to_bytes(4, "little")
        out[pos + 22: pos + 26] = b"\0\0\0\0"
        out[pos + 22: pos + 26] = _ogg_crc(bytes(out[pos: pos + size])).to_bytes(4, "little")
        pos += size
    return bytes(out)


def encode(x: np.ndarray, fmt: str = "flac", sr: int = SAMPLE_RATE) -> tuple[bytes, str]:
    """float32 mono → (bytes, file extension)."""
    buf = io.BytesIO()
    if fmt == "flac":
        sf.write(buf, x, sr, format="FLAC", subtype="PCM_16")
        return buf.getvalue(), "flac"
    if fmt == "opus":
        sf.write(buf, x, sr, format="OGG", subtype="OPUS")
        return fix_ogg_serial(buf.getvalue(), zlib.crc32(b"wolofmrl")), "opus"
    raise ValueError(f"audio_format must be flac or opus, not {fmt!r}")


def load_16k(data: bytes) -> tuple[np.ndarray, int]:
    """Decode and resample to 16 kHz mono; returns (wave, original sample rate)."""
    x, sr = decode_audio(bytes(data))  # the project's one audio decoder
    return to_16k(x, sr), sr


def measures(x: np.ndarray) -> dict:
    if x.size == 0:
        return {"duration_s": 0.0, "rms": 0.0, "peak": 0.0, "clip_fraction": 0.0, "finite": True}
    finite = bool(np.isfinite(x).all())
    y = np.nan_to_num(x)
    return {
        "duration_s": round(x.size / SAMPLE_RATE, 4),
        "rms": round(float(np.sqrt(np.mean(y.astype(np.float64) ** 2))), 6),
        "peak": round(float(np.max(np.abs(y))), 6),
        "clip_fraction": round(float(np.mean(np.abs(y) >= 0.999)), 6),
        "finite": finite,
    }
