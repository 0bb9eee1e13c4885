"""Whisper ASR for the evaluation: the cascade baseline's transcripts (strategy tables, recorded words).

`whisper_transcribe` is Whisper's greedy transcription of decoded clips; `cached_transcripts` keeps transcripts on
disk keyed by Whisper folder + language and by each clip's content, so a rerun transcribes nothing twice.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

EVAL_DIR = Path(__file__).resolve().parent
ROOT = EVAL_DIR.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from processing_wolofmrl import load_audio  # noqa: E402


def whisper_transcribe(whisper_dir: str | Path, clips: list[dict], language: str | None = None,
                       batch_size: int = 8, max_new_tokens: int = 96) -> list[str]:
    """Greedy Whisper transcripts (list of str, in order) of clips in any form `processing_wolofmrl.load_audio`
    takes ({"array", "sampling_rate"}, paths, bytes), decoded and resampled to 16 kHz by the project's one path.
    `language` None lets Whisper detect it (it has no Wolof)."""
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    proc = WhisperProcessor.from_pretrained(str(whisper_dir))
    model = WhisperForConditionalGeneration.from_pretrained(str(whisper_dir)).eval()
    waves = [load_audio(c) for c in clips]
    out = []
    with torch.inference_mode():
        for i in range(0, len(waves), batch_size):
            feats = proc(waves[i:i + batch_size], sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
            gen = model.generate(feats.input_features, attention_mask=feats.attention_mask, num_beams=1,
                                 do_sample=False, max_new_tokens=max_new_tokens, task="transcribe",
                                 **({"language": language} if language else {}))
            out += [t.strip() for t in proc.batch_decode(gen, skip_special_tokens=True)]
    return out


def cached_transcripts(path: Path, clips: list[dict], whisper_dir, language) -> list[str]:
    """Transcripts of decoded {"array", "sampling_rate"} clips, cached in the JSON file `path` by Whisper folder +
    language, then by the clip's content hash (not its id)."""
    from wolofmrl_mteb import audio_key

    cache = json.loads(path.read_text()) if path.is_file() else {}
    have = cache.setdefault(f"{Path(whisper_dir).resolve()}|{language}", {})
    keys = [audio_key(c) for c in clips]
    todo = [(k, c) for k, c in zip(keys, clips) if k not in have]
    if todo:
        t = time.time()
        for (k, _), text in zip(todo, whisper_transcribe(whisper_dir, [c for _, c in todo], language)):
            have[k] = text
        print(f"transcribed {len(todo)} clips with {whisper_dir} in {time.time() - t:.0f} s")
        path.write_text(json.dumps(cache, ensure_ascii=False, indent=0))
    return [have[k] for k in keys]
