"""Model card (the folder's README.md with the Hub's YAML metadata) and Hub upload of a built folder.

    from wolofmrl.card import write_model_card, push_folder
    write_model_card("checkpoints/wolofmrl-base", eval_results="results/eval/model-index.yaml")
    push_folder("checkpoints/wolofmrl-base", "me/wolofmrl-base")     # needs a reachable Hub and a token

The card is written by `wolofmrl.build` into every built folder. Its metadata: license, `language: [wo, fr]`,
`pipeline_tag`, `library_name`, tags, base models and, when an `eval/run.py` `model-index.yaml` is given, the
`model-index` block with those results. The text says what the model is for, how it was trained (from the delta's
`training.json`), and that every score so far rests on synthetic (TTS) speech.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["card_metadata", "card_text", "write_model_card", "push_folder"]

BASE_MODELS = {"whisper-base": "openai/whisper-base", "whisper-tiny.en": "openai/whisper-tiny.en",
               "multilingual-e5-small": "intfloat/multilingual-e5-small",
               "all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}
TAGS = ["wolof", "speech", "audio", "retrieval", "matryoshka", "speech-text-retrieval", "sentence-transformers",
        "feature-extraction", "cross-lingual"]


def _eval_results(eval_results: str | Path | None) -> tuple[str | None, list]:
    """(model name, [EvalResult]) from an eval/run.py model-index.yaml; (None, []) when none is given."""
    if eval_results is None:
        return None, []
    import yaml
    from huggingface_hub.repocard_data import model_index_to_eval_results

    path = Path(eval_results)
    if not path.is_file():
        raise FileNotFoundError(f"eval_results={str(path)!r} not found: pass the model-index.yaml that "
                                "eval/run.py writes, or None")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or "model-index" not in data:
        raise ValueError(f"{path} has no 'model-index' block: pass the model-index.yaml that eval/run.py writes")
    return model_index_to_eval_results(data["model-index"])


def card_metadata(build_args: dict, eval_results: str | Path | None = None):
    """The card's `huggingface_hub.ModelCardData` for a folder built with `build_args` (wolofmrl.build's args)."""
    from huggingface_hub import ModelCardData

    name, results = _eval_results(eval_results)
    bases = [BASE_MODELS.get(build_args.get(k), build_args.get(k)) for k in ("speech", "text")]
    return ModelCardData(
        license="mit", language=["wo", "fr"], pipeline_tag="feature-extraction", library_name="transformers",
        tags=TAGS, base_model=[b for b in bases if b], model_name=name or f"wolofmrl/{build_args.get('strategy')}",
        eval_results=results or None)


def _training_summary(delta_dir: Path | None) -> str:
    if delta_dir is None:
        return ("No trained delta: the speech adapter is **untrained** (random); the text side is the frozen "
                "backbone. Do not use this folder for retrieval from speech.")
    info = delta_dir / "training.json"
    if not info.is_file():
        return (f"Trained delta `{delta_dir.name}` (its folder has no training.json: how it was trained is not "
                "recorded).")
    t = json.loads(info.read_text())
    perf = t.get("metrics", {}).get("perf", {})
    minutes = (f"{perf['train_seconds'] / 60:.1f} min of training in its run" if "train_seconds" in perf
               else "unknown time")
    base = (delta_dir / "BASE").read_text().strip() if (delta_dir / "BASE").is_file() else None
    return (f"Delta `{delta_dir.name}`, stage `{t.get('stage')}`: {t.get('steps')} steps on "
            f"{perf.get('processes', '?')} × {perf.get('device', 'unknown device')} ({minutes})"
            + (f", on top of delta `{base}`" if base else "") + ". Only the trained parameters are stored "
            "(`weights/<name>/delta.safetensors`); the frozen backbones come from their packages.")


_ARCH = {"fusion": "Speech (Whisper encoder frames + a small trained adapter) is fused into the frozen text model "
                   "(multilingual-e5), which embeds it like a query.",
         "dual": "A dual encoder: speech (Whisper encoder + a trained pooling projection) is mapped into the frozen "
                 "text model's (multilingual-e5) embedding space."}


def _loss_summary(delta_dir: Path | None) -> str:
    """The training losses, from the delta's training.json config (what train/train.py recorded)."""
    parts = ["symmetric InfoNCE over in-batch negatives summed over the Matryoshka dims"]
    info = delta_dir / "training.json" if delta_dir is not None else None
    cfg = json.loads(info.read_text()).get("config", {}) if info is not None and info.is_file() else {}
    if cfg.get("ctc_weight"):
        parts.append(f"a CTC reading loss over the text model's own subword vocabulary, weight {cfg['ctc_weight']:g}")
    if cfg.get("distill") and cfg.get("distill_weight"):
        parts.append(f"{cfg['distill']} distillation to the transcript's frozen text embedding, weight "
                     f"{cfg['distill_weight']:g}")
    return "; ".join(parts)


def _lora_note(config) -> str:
    rank = getattr(config, "speech_lora_rank", 0)
    return f"; the speech encoder read through a trained rank-{rank} LoRA, `speech_lora_rank`" if rank else ""


def card_text(build_args: dict, config, delta_dir: Path | None, eval_results: str | Path | None = None) -> str:
    """The full README.md text (YAML front matter + body) of a built folder."""
    from huggingface_hub import ModelCard

    data = card_metadata(build_args, eval_results)
    dims = ", ".join(str(d) for d in config.matryoshka_dims)
    body = f"""
# WolofMRL ({config.strategy})

A spoken **Wolof** question finds the **French** text that answers it, with no speech recognition and no
translation in between. {_ARCH.get(config.strategy, "")}
Text and speech share one Matryoshka embedding space (dims {dims}; any width 1..{config.embedding_dim}).

## Use

```python
from transformers import AutoModel, AutoProcessor
model = AutoModel.from_pretrained(REPO, trust_remote_code=True)
processor = AutoProcessor.from_pretrained(REPO, trust_remote_code=True)
q = model.get_speech_embeddings(**processor(audio="question.wav", return_tensors="pt"), dim=128)
d = model.get_text_embeddings(**processor(text=passages, text_kind="passage", return_tensors="pt"), dim=128)
```

```python
from sentence_transformers import SentenceTransformer
st = SentenceTransformer(REPO, trust_remote_code=True, truncate_dim=128)
q = st.encode_query([{{"array": wave, "sampling_rate": 16000}}])   # or "Ndax dafay taw tey?" (text)
d = st.encode_document(passages)
```

Command line (the `wolofmrl` package): `wolofmrl index DOCS --out INDEX`, `wolofmrl search INDEX question.wav`,
`wolofmrl serve --index INDEX` (OpenAI-style `POST /v1/embeddings`, speech as an extension, `POST /v1/search`).

## Intended use

Search French documents by a spoken (or written) Wolof query; French speech and Wolof text embed in the same space.
Clips of any length (longer than {config.max_audio_seconds:g} s: overlapping windows, pooled). Not a speech recogniser
or translator; not for decisions about people.

## Limitations: synthetic speech

**All training audio and all Wolof evaluation audio so far is synthetic** (espeak-ng and MBROLA voices for training;
held-out espeak-ng voices and Kokoro, an engine training never heard, for evaluation), not Wolof speakers. Every
score on this card rests on synthetic speech except RecordedWordRetrieval (isolated words in seven languages,
French among them, spoken by people: Debian's `qabcs-data`); nothing here measures real Wolof speakers, accents,
spontaneous speech or noise beyond the simulated conditions. The text is software-UI and reference register
(Debian gettext catalogs, MediaWiki messages, the UDHR, a dictionary, proverbs).

## Training

{_training_summary(delta_dir)}

Loss: {_loss_summary(delta_dir)}. Backbones:
{", ".join(f"`{b}`" for b in data.base_model)} (frozen{_lora_note(config)}).
"""
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n" + body).content


def write_model_card(folder: str | Path, build_args: dict | None = None, config=None, delta_dir: Path | None = None,
                     eval_results: str | Path | None = None) -> Path:
    """Write `folder/README.md`. Missing pieces are read from the folder (wolofmrl_build.json, config.json)."""
    folder = Path(folder)
    if build_args is None:
        marker = folder / "wolofmrl_build.json"
        build_args = json.loads(marker.read_text())["args"] if marker.is_file() else {}
    if config is None:
        import sys

        root = str(Path(__file__).resolve().parent.parent)
        if root not in sys.path:
            sys.path.insert(0, root)
        from configuration_wolofmrl import WolofMRLConfig

        config = WolofMRLConfig.from_pretrained(folder)
    path = folder / "README.md"
    path.write_text(card_text(build_args, config, delta_dir, eval_results))
    return path


def push_folder(folder: str | Path, repo_id: str, private: bool = True, token: str | None = None,
                commit_message: str = "Upload WolofMRL model", api=None) -> str:
    """Upload a built folder (model, processor, remote code, sentence-transformers files, card) to the Hub.

    Prefer this to `model.push_to_hub` + `processor.push_to_hub`, which upload a loadable repo too but replace the
    card by transformers' generic one and leave out the sentence-transformers files. Returns the commit URL. Raises
    what `huggingface_hub` raises (no Hub reachable: a connection error; no token: an authentication error).
    `api`: an `HfApi` (default: a new one with `token`); tests/test_card.py passes one that writes to a folder.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a built model folder (no config.json): run wolofmrl.build first")
    api = api or HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    card = folder / "README.md"
    if card.is_file():
        api._validate_yaml(card.read_text(), repo_type="model")  # the Hub's own metadata check, before any upload
    operations = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
                  for p in files]
    info = api.create_commit(repo_id=repo_id, operations=operations, commit_message=commit_message,
                             repo_type="model")
    return str(getattr(info, "commit_url", info))
