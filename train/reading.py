"""The reading objective's data side: the restricted subword vocabulary of the CTC head (wolofmrl.losses.TiedCTCLoss),
the CTC targets of a batch, and the dev diagnostic of reading (greedy CTC transcripts and character error rate per
language).

Targets are the transcript's subwords by the text model's own tokenizer, without special tokens and without the
query/passage prefix: what the frozen text model would read for the spoken words.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from wolofmrl.losses import ctc_greedy


def ctc_vocabulary(tokenizer, texts: list[str], max_tokens: int = 128) -> torch.Tensor:
    """(V,) the sorted unique token ids (special tokens left out) of `texts` by `tokenizer`: the CTC classes 1..V.

    Raises:
        ValueError: no texts, or none with a token."""
    if not texts:
        raise ValueError("ctc_vocabulary needs the training transcripts: got no texts")
    ids = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=max_tokens)["input_ids"]
    vocab = sorted({i for row in ids for i in row} - set(tokenizer.all_special_ids))
    if not vocab:
        raise ValueError("the training transcripts hold no subword token: check the corpus' transcript column")
    return torch.tensor(vocab, dtype=torch.long)


class CTCTargets:
    """Texts -> CTC targets over a restricted vocabulary: (B, S) class indices (1..V, padded with 0) and (B,) lengths.

    A subword outside the vocabulary (a dev text; never a training text, which built the vocabulary) is dropped and
    counted in `missing`."""

    def __init__(self, tokenizer, vocab_ids: torch.Tensor, max_tokens: int = 128):
        self.tokenizer, self.max_tokens = tokenizer, max_tokens
        self.vocab_ids = vocab_ids.cpu()
        self.lookup = np.zeros(max(len(tokenizer), int(vocab_ids.max()) + 1), dtype=np.int64)
        self.lookup[self.vocab_ids.numpy()] = np.arange(1, len(vocab_ids) + 1)
        self.missing = 0

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self.tokenizer(list(texts), add_special_tokens=False, truncation=True,
                             max_length=self.max_tokens)["input_ids"]
        rows = []
        for row in ids:
            classes = self.lookup[np.asarray(row, dtype=np.int64)] if row else np.zeros(0, dtype=np.int64)
            self.missing += int((classes == 0).sum())
            rows.append(classes[classes > 0])
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        out = torch.zeros(len(rows), max(int(lengths.max()) if len(rows) else 0, 1), dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.from_numpy(r)
        return out, lengths

    def decode(self, classes: list[int]) -> str:
        """Class indices (1..V) -> text through the tokenizer."""
        return self.tokenizer.decode([int(self.vocab_ids[c - 1]) for c in classes], skip_special_tokens=True)


def cer(hypothesis: str, reference: str) -> tuple[int, int]:
    """(character edit distance, reference length) through torchaudio's Levenshtein distance."""
    from torchaudio.functional import edit_distance

    return edit_distance(list(reference), list(hypothesis)), len(reference)


class ReadingDev:
    """Dev clips per language (clean, 16 kHz waves, their transcripts) and the reading diagnostic on them."""

    def __init__(self, clips: list[dict], waves: list[np.ndarray], targets: CTCTargets, processor, batch_size: int):
        self.clips, self.waves, self.targets = clips, waves, targets
        self.processor, self.batch_size = processor, batch_size

    @torch.no_grad()
    def evaluate(self, model, ctc, device, dtype=None, samples: int = 3) -> tuple[dict, list[dict]]:
        """({"dev/cer_<lang>": CER, "dev/ctc_clips_<lang>": clips}, a few {lang, ref, hyp} per language)."""
        from train.speech_data import speech_features

        weight = model.text_model.get_input_embeddings().weight
        errors, totals, shown = defaultdict(int), defaultdict(int), []
        for start in range(0, len(self.waves), self.batch_size):
            rows = self.clips[start: start + self.batch_size]
            feats = speech_features(self.processor, self.waves[start: start + self.batch_size], device)
            with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None):
                tokens, mask = model.speech_tokens(input_features=feats.get("input_features"),
                                                   attention_mask=feats["speech_mask"],
                                                   input_values=feats.get("input_values"))
                tokens, mask = model.reading_tokens(tokens, mask)
            for row, best in zip(rows, ctc_greedy(ctc.logits(tokens, weight), mask)):
                hyp, lang = self.targets.decode(best), row["speech_lang"]
                dist, n = cer(hyp, row["transcript"])
                errors[lang] += dist
                totals[lang] += n
                if sum(s["lang"] == lang for s in shown) < samples:
                    shown.append({"lang": lang, "ref": row["transcript"], "hyp": hyp})
        metrics = {f"dev/cer_{lang}": round(errors[lang] / max(totals[lang], 1), 4) for lang in sorted(totals)}
        metrics.update({f"dev/ctc_clips_{lang}": sum(r["speech_lang"] == lang for r in self.clips) for lang in totals})
        return metrics, shown

    def report(self, model, ctc, device, dtype, log, step: int) -> dict:
        """`evaluate`, the greedy transcripts beside their references printed and logged (`ctc_samples`)."""
        metrics, shown = self.evaluate(model, ctc, device, dtype)
        log({"event": "ctc_samples", "step": step, "samples": shown}, echo=True)
        return metrics


def reading_clips(rows: list[dict], langs: list[str], per_lang: int) -> list[dict]:
    """Up to `per_lang` dev rows of each language in `langs` (sorted by id), each with its own transcript."""
    from train.speech_data import own_transcript

    out = []
    for lang in langs:
        mine = sorted((r for r in rows if r["speech_lang"] == lang and own_transcript(r)), key=lambda r: r["id"])
        out += [{**r, "transcript": own_transcript(r)} for r in mine[:per_lang]]
    return out


CTC_HEAD = "ctc_head.safetensors"  # beside a delta: the reading head's blank and scale (not used at inference)


def build_reading(cfg, model, processor, train_rows: list[dict], dev_rows: list[dict], workers: int, log,
                  main_process: bool):
    """(TiedCTCLoss, CTCTargets, ReadingDev or None) for a speech run with ctc_weight > 0: the vocabulary from the
    training transcripts, the head's blank and scale from `init_delta`'s ctc_head.safetensors when there is one,
    dev clips of every trained language (main process) for the diagnostic."""
    from train.speech_data import ClipWaves, in_workers
    from wolofmrl.losses import TiedCTCLoss

    tokenizer = processor.tokenizer
    vocab = ctc_vocabulary(tokenizer, sorted({r["transcript"] for r in train_rows}), cfg.max_text_tokens)
    ctc = TiedCTCLoss(vocab, model.config.text_config.hidden_size, cfg.ctc_scale_init, cfg.ctc_learn_scale,
                      seed=cfg.seed)
    started = load_ctc_head(ctc, cfg.init_delta)
    targets = CTCTargets(tokenizer, vocab, cfg.max_text_tokens)
    langs = list(dict.fromkeys(list(cfg.speech_langs) + [cfg.eval_speech_lang]))
    clips = reading_clips(dev_rows, langs, cfg.ctc_dev_clips)
    log({"event": "reading", "vocab": len(vocab), "tokenizer_vocab": len(tokenizer), "ctc_weight": cfg.ctc_weight,
         "head_from": started, "dev_clips": {lang: sum(c["speech_lang"] == lang for c in clips) for lang in langs}})
    dev = None
    if main_process and clips:
        dev = ReadingDev(clips, in_workers(ClipWaves(clips), workers), targets, processor, cfg.eval_batch_size)
    return ctc, targets, dev


def save_ctc_head(ctc, folder) -> None:
    from pathlib import Path

    from safetensors.torch import save_file

    save_file({"blank": ctc.blank.detach().float().cpu().contiguous(),
               "log_scale": ctc.log_scale.detach().float().cpu().reshape(1)}, str(Path(folder) / CTC_HEAD))


def load_ctc_head(ctc, delta_folder: str | None) -> str | None:
    """Start the head's blank vector and scale from `delta_folder`/ctc_head.safetensors (phase 1's) when present;
    returns the file read, or None. The vocabulary is the run's own (it need not match phase 1's)."""
    from pathlib import Path

    if not delta_folder or not (Path(delta_folder) / CTC_HEAD).is_file():
        return None
    from safetensors.torch import load_file

    path = Path(delta_folder) / CTC_HEAD
    state = load_file(str(path))
    if state["blank"].shape != ctc.blank.shape:
        raise ValueError(f"{path}: blank of width {tuple(state['blank'].shape)}, this model's text width is "
                         f"{tuple(ctc.blank.shape)}; start without it (init_delta from a run of this model)")
    with torch.no_grad():
        ctc.blank.copy_(state["blank"])
        ctc.log_scale.copy_(state["log_scale"][0])
    return str(path)
