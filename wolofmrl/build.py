"""Assemble a loadable WolofMRL model folder from backbones (+ the trained delta, when there is one).

    python -m wolofmrl.build --out checkpoints/wolofmrl-base                # offline: converted package weights
    python -m wolofmrl.build --out checkpoints/wolofmrl-base --hub          # online: openai/whisper-base + mE5-small
    python -m wolofmrl.build --out checkpoints/x --strategy dual --delta none

The folder holds config.json (with auto_map), model.safetensors, the processor and tokenizer files and the three
root .py files, so `AutoModel.from_pretrained(folder, trust_remote_code=True)` works from any directory.
Frozen backbones are never committed: the repo keeps only `weights/<name>/delta.safetensors` (what training
changed) and this builder applies it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the root files are the Hub model; the library imports them, never the reverse
    sys.path.insert(0, str(ROOT))

from configuration_wolofmrl import WolofMRLConfig  # noqa: E402
from modeling_wolofmrl import WolofMRLModel  # noqa: E402
from processing_wolofmrl import WolofMRLProcessor  # noqa: E402

WEIGHTS = ROOT / "weights"
MARKER = "wolofmrl_build.json"


def backbone_path(name: str, hub: bool = False, root: str | Path | None = None) -> str:
    """Local folder of a converted backbone, or its Hub id when `hub=True` (from the backbone table)."""
    from wolofmrl.convert import BACKBONES

    if hub:
        known = sorted(n for n, b in BACKBONES.items() if b.hub_id)
        if name not in known:
            raise ValueError(f"unknown backbone {name!r} for --hub; known: {known}")
        return BACKBONES[name].hub_id
    if Path(name).is_dir():
        return str(name)
    from wolofmrl.convert import ensure_backbone

    return str(ensure_backbone(name, root=root or ROOT / "build" / "backbones"))


def text_backbone_fields(text: str, text_config) -> dict:
    """The WolofMRLConfig fields the model needs from the backbone table (the model file cannot import it):
    pooling, prefixes, whether the text model is built without its pooler, the positions a fused sequence may use."""
    from wolofmrl.convert import architecture, backbone_spec

    arch = architecture(text_config.model_type)
    spec = backbone_spec(text)
    pooling = spec.pooling if spec and spec.pooling else arch.text_pooling
    query_prefix, passage_prefix = (spec.query_prefix, spec.passage_prefix) if spec else ("query: ", "passage: ")
    return {"text_pooling": pooling, "query_prefix": query_prefix, "passage_prefix": passage_prefix,
            "text_add_pooling_layer": False if arch.pooler else None,
            "text_max_positions": arch.max_positions(text_config)}


def fusion_token_ids(tokenizer, query_prefix: str) -> tuple[list[int], list[int]]:
    """Ids of `<s> query:` before and `</s>` after the speech tokens: speech enters like a query."""
    ids = tokenizer(query_prefix.strip(), add_special_tokens=True)["input_ids"]
    suffix = [ids[-1]] if ids and ids[-1] in tokenizer.all_special_ids else []
    return ids[: len(ids) - len(suffix)], suffix


def load_delta_dir(name_or_dir: str | Path | None) -> tuple[Path | None, dict]:
    """A trained delta folder: `delta.safetensors` + `config_overrides.json` (the WolofMRLConfig fields it used)."""
    if name_or_dir in (None, "none"):
        return None, {}
    path = Path(name_or_dir)
    if not path.is_dir():
        path = WEIGHTS / str(name_or_dir)
    if not (path / "delta.safetensors").is_file():
        raise FileNotFoundError(f"no delta.safetensors in {path}; train one (train/train.py) or pass --delta none")
    overrides_file = path / "config_overrides.json"
    overrides = json.loads(overrides_file.read_text()) if overrides_file.is_file() else {}
    return path, overrides


def delta_chain(delta_dir: Path) -> list[Path]:
    """The delta folders to apply, base first: a folder whose `BASE` file names another delta folder (a name
    under weights/ or a path relative to it) starts from that one, so a speech delta need not repeat the
    stage-1 text tensors it was trained on.

    Raises:
        FileNotFoundError: a `BASE` that names no delta folder.
        ValueError: a cycle of `BASE` files."""
    chain = [delta_dir]
    while (chain[0] / "BASE").is_file():
        name = (chain[0] / "BASE").read_text().strip()
        relative = chain[0] / name
        base, _ = load_delta_dir(relative if relative.is_dir() else name)
        if base.resolve() in {c.resolve() for c in chain}:
            raise ValueError(f"delta {delta_dir}: its BASE files form a cycle through {base}")
        chain.insert(0, base)
    return chain


def delta_state(delta_dir: Path) -> dict:
    """The tensors of a delta folder with those of its `BASE` chain underneath (later folders win)."""
    from safetensors.torch import load_file

    state = {}
    for folder in delta_chain(delta_dir):
        state.update(load_file(str(folder / "delta.safetensors")))
    return state


def default_delta(strategy: str) -> str | None:
    """The committed trained delta for a strategy, if the repo has one."""
    name = f"wolofmrl-{strategy}"
    return name if (WEIGHTS / name / "delta.safetensors").is_file() else None


def assemble(speech: str = "whisper-base", text: str = "multilingual-e5-small", strategy: str = "fusion",
             delta: str | Path | None = None, hub: bool = False, backbone_root: str | Path | None = None,
             **config_kwargs) -> tuple[WolofMRLModel, WolofMRLProcessor]:
    """Build the model in memory: backbone weights loaded, frozen parts frozen, delta applied."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoTokenizer

    from wolofmrl.convert.statedict import load_exact

    speech_dir = backbone_path(speech, hub, backbone_root)
    text_dir = backbone_path(text, hub, backbone_root)
    delta_dir, overrides = load_delta_dir(delta)
    tokenizer = AutoTokenizer.from_pretrained(text_dir)
    speech_config = AutoConfig.from_pretrained(speech_dir)
    text_config = AutoConfig.from_pretrained(text_dir)
    fields = text_backbone_fields(text, text_config)
    query_prefix, passage_prefix = fields["query_prefix"], fields["passage_prefix"]
    prefix_ids, suffix_ids = fusion_token_ids(tokenizer, query_prefix or "query:")
    kwargs = dict(speech_config=speech_config.to_dict(), text_config=text_config.to_dict(), strategy=strategy,
                  fusion_prefix_ids=prefix_ids, fusion_suffix_ids=suffix_ids, **fields)
    kwargs.update(overrides)
    kwargs.update(config_kwargs)
    if kwargs["strategy"] != strategy:
        raise ValueError(f"delta {delta_dir} was trained for strategy {kwargs['strategy']!r}, not {strategy!r}")
    config = WolofMRLConfig(**kwargs)
    model = WolofMRLModel(config)

    speech_state = AutoModel.from_pretrained(speech_dir).state_dict()
    if config.speech_config.model_type == "whisper":  # WhisperModel: keep the encoder's weights only
        speech_state = {k[len("encoder."):]: v for k, v in speech_state.items() if k.startswith("encoder.")}
    # speech_lora_rank: the LoRA factors are this model's, on top of the backbone (fresh: no change; the delta's next)
    speech_state.update({k: v for k, v in model.speech_tower.encoder.state_dict().items() if ".lora." in k})
    load_exact(model.speech_tower.encoder, speech_state, f"backbone {speech_dir}")
    pooler_free = {"add_pooling_layer": False} if fields["text_add_pooling_layer"] is False else {}
    text_state = AutoModel.from_pretrained(text_dir, **pooler_free).state_dict()
    load_exact(model.text_model, text_state, f"backbone {text_dir}")
    if delta_dir is not None:
        try:
            model.load_delta(delta_state(delta_dir))
        except KeyError as err:  # the delta holds tensors this config lacks: a one-line error for the CLI
            raise ValueError(f"delta {delta_dir}: {err.args[0] if err.args else err}") from err
    model.apply_freezing()
    model.eval()

    feature_extractor = AutoFeatureExtractor.from_pretrained(speech_dir)
    processor = WolofMRLProcessor(feature_extractor, tokenizer, query_prefix=query_prefix,
                                  passage_prefix=passage_prefix, max_audio_seconds=config.max_audio_seconds)
    return model, processor


def save(model: WolofMRLModel, processor: WolofMRLProcessor, out: str | Path):
    """save_pretrained with auto_map and the remote-code files, so the folder loads from anywhere."""
    out = Path(out)
    model.config.register_for_auto_class()
    model.register_for_auto_class("AutoModel")
    processor.register_for_auto_class("AutoProcessor")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    for name in ("configuration_wolofmrl.py", "modeling_wolofmrl.py", "processing_wolofmrl.py"):
        shutil.copy2(ROOT / name, out / name)  # all three, whatever save_pretrained chose to copy


FOLDER_CODE = ("configuration_wolofmrl.py", "modeling_wolofmrl.py", "processing_wolofmrl.py", "wolofmrl/st.py",
               "wolofmrl/card.py")


def default_eval_results(delta) -> Path | None:
    """The eval/run.py `model-index.yaml` kept beside a delta (weights/<name>/model-index.yaml), if there is one:
    results travel with the weights they measured, so a retrained delta never shows an older delta's scores."""
    delta_dir, _ = load_delta_dir(delta)
    path = delta_dir / "model-index.yaml" if delta_dir is not None else None
    return path if path is not None and path.is_file() else None


def write_folder_extras(out: Path, model: WolofMRLModel, args: dict, eval_results=None) -> None:
    """The model card (README.md) and the sentence-transformers files of a built folder."""
    import sentence_transformers
    import transformers

    from wolofmrl.card import write_model_card
    from wolofmrl.st import write_sentence_transformers_files

    config = model.config
    write_sentence_transformers_files(out, config.query_prefix, config.passage_prefix,
                                      {"sentence_transformers": sentence_transformers.__version__,
                                       "transformers": transformers.__version__})
    delta_dir, _ = load_delta_dir(args.get("delta"))
    write_model_card(out, args, config, delta_dir, eval_results)


def build_key(**parts) -> str:
    """Hash of what the folder is made of: the code copied or run into it, the delta and the arguments."""
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    for name in FOLDER_CODE:
        h.update((ROOT / name).read_bytes())
    delta_dir, _ = load_delta_dir(parts.get("delta"))
    for folder in delta_chain(delta_dir) if delta_dir is not None else []:
        for f in sorted(folder.iterdir()):
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def check_out(out: Path) -> None:
    """`out` may be new, an empty folder, or a folder this builder wrote (its `MARKER` file): a rebuild replaces the
    whole folder, so anything else there would be lost. Raises ValueError naming the problem and the fix."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file: give a folder for the model")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ValueError(f"--out {out} holds files this builder did not write (no {MARKER}), and a build replaces "
                         "the whole folder: give a new or empty folder")


def build(out: str | Path, force: bool = False, eval_results: str | Path | None = "auto", **kwargs) -> Path:
    """Build (or reuse, when its inputs are unchanged) a model folder at `out`.

    eval_results: an eval/run.py model-index.yaml for the model card, None, or "auto" (the delta folder's own
    model-index.yaml, if it has one).

    Raises:
        ValueError: `out` is a file, or a non-empty folder this builder did not write (`check_out`).
    """
    out = Path(out)
    check_out(out)
    if eval_results == "auto":
        eval_results = default_eval_results(kwargs.get("delta"))
    key = build_key(eval_results=str(eval_results), **kwargs)
    marker = out / MARKER
    if not force and marker.is_file() and json.loads(marker.read_text()).get("key") == key:
        return out
    start = time.time()
    model, processor = assemble(**kwargs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    save(model, processor, tmp)
    write_folder_extras(tmp, model, kwargs, eval_results)
    (tmp / MARKER).write_text(json.dumps({"key": key, "args": kwargs, "seconds": round(time.time() - start, 1)},
                                         default=str, indent=1))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)  # a killed build never leaves a folder that looks finished
    return out


def main(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="checkpoints/wolofmrl-base")
    p.add_argument("--speech", default="whisper-base", help="backbone name or a local HF folder")
    p.add_argument("--text", default="multilingual-e5-small", help="backbone name or a local HF folder")
    p.add_argument("--strategy", default="fusion", choices=["fusion", "dual"])
    p.add_argument("--delta", default="auto",
                   help="'auto' (the committed weights/wolofmrl-<strategy> if present), 'none', a name or a folder")
    p.add_argument("--hub", action="store_true", help="take the original backbones from the Hugging Face Hub")
    p.add_argument("--eval-results", default="auto",
                   help="eval/run.py model-index.yaml for the model card; 'auto' (the delta folder's own "
                        "model-index.yaml, if any) or 'none'")
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    delta = default_delta(args.strategy) if args.delta == "auto" else args.delta
    start = time.time()
    eval_results = None if args.eval_results == "none" else args.eval_results
    try:
        out = build(args.out, force=args.force, eval_results=eval_results, speech=args.speech, text=args.text,
                    strategy=args.strategy, delta=delta, hub=args.hub)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"wolofmrl.build: {err}") from err
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"built {out} ({size:.0f} MiB, delta: {delta or 'none (untrained adapter)'}) in {time.time() - start:.1f} s")


if __name__ == "__main__":
    main()
