"""sentence-transformers face of a built WolofMRL folder (text and speech).

    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer("checkpoints/wolofmrl-base", trust_remote_code=True, truncate_dim=128)
    q = st.encode_query(["Ndax dafay taw tey?"])                   # prompt "query: "   -> (1, 128)
    d = st.encode_document(["Il pleuvra demain."])                # prompt "passage: " -> (1, 128)
    s = st.encode_query([{"array": wave, "sampling_rate": 16000}, "question.wav"])   # spoken queries
    st.similarity(q, d)                                           # cosine

The builder (`wolofmrl.build`) copies this file into every built folder as `st_wolofmrl.py` and writes
`modules.json` + `config_sentence_transformers.json` (`write_sentence_transformers_files`); sentence-transformers
then imports `st_wolofmrl.WolofMRLModule` as remote code (hence `trust_remote_code=True`). The module loads the
folder with `AutoModel` / `AutoProcessor` (the same remote code a `transformers` user runs), so the embeddings are
the `transformers` path's: `get_text_embeddings` / `get_speech_embeddings` at full width, L2-normalised.
sentence-transformers then keeps the first `truncate_dim` coordinates; they are not re-normalised unless
`normalize_embeddings=True` is passed (cosine similarity, the folder's `similarity_fn_name`, does not care).

Audio: sentence-transformers 6 recognises audio inputs (`{"array", "sampling_rate"}` dicts, `.wav/.mp3/.ogg/.flac`
paths, 1-D arrays) and hands them to this module, which passes them to the WolofMRL processor (the one audio
decoder: any rate, any length it accepts). A bare array carries no rate: it is refused with a message (pass a dict
with `sampling_rate`). Prompts apply to text only: speech enters the fused text model behind the model's own
`query:` tokens.

This file imports only torch, transformers and sentence-transformers: it must run from a model folder alone.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from sentence_transformers.base.modules.input_module import InputModule

MODULE_FILE = "st_wolofmrl.py"
MODULE_CLASS = "st_wolofmrl.WolofMRLModule"


def _is_audio(item) -> bool:
    if isinstance(item, str):
        return os.path.splitext(item)[1].lower() in {".wav", ".mp3", ".ogg", ".flac", ".opus", ".m4a", ".aac"}
    return not isinstance(item, (tuple, list)) or (len(item) and not isinstance(item[0], str))


class WolofMRLModule(InputModule):
    """One sentence-transformers input module wrapping a whole WolofMRL model (speech + text towers).

    `preprocess(inputs, prompt)` -> features for one modality (a batch is all text or all audio);
    `forward(features)` adds "sentence_embedding" (B, hidden) float32, L2-normalised.
    """

    save_in_root = True
    config_keys: list[str] = ["max_seq_length"]

    def __init__(self, model, processor, max_seq_length: int = 512):
        super().__init__()
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_seq_length = max_seq_length

    @property
    def modalities(self) -> list[str]:
        return ["text", "audio"]

    def get_embedding_dimension(self) -> int:
        return int(self.model.config.embedding_dim)

    def preprocess(self, inputs, prompt: str | None = None, **kwargs) -> dict[str, Any]:
        """Tokenise texts (with `prompt` in front) or featurise audio; a batch mixing both is a ValueError."""
        inputs = list(inputs)
        kinds = {_is_audio(x) for x in inputs}
        if len(kinds) > 1:
            raise ValueError("a batch mixes text and audio: encode them in separate calls")
        if kinds == {True}:
            for item in inputs:
                if not isinstance(item, (str, dict)):
                    raise ValueError("a bare audio array has no sampling rate: pass {'array': wave, "
                                     "'sampling_rate': rate} or a file path")
            return dict(self.processor(audio=inputs, return_tensors="pt"))
        texts = [(prompt or "") + t for t in inputs]
        return dict(self.processor(text=texts, text_kind=None, max_length=self.max_seq_length, return_tensors="pt"))

    def forward(self, features: dict[str, torch.Tensor], **kwargs) -> dict[str, torch.Tensor]:
        if "input_ids" in features:
            emb = self.model.get_text_embeddings(input_ids=features["input_ids"],
                                                 attention_mask=features.get("attention_mask"))
        else:
            emb = self.model.get_speech_embeddings(input_features=features.get("input_features"),
                                                   input_values=features.get("input_values"),
                                                   attention_mask=features.get("attention_mask"))
        features["sentence_embedding"] = emb
        return features

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        """Write the whole model folder (weights, processor, remote code, this module) to `output_path`."""
        self.model.save_pretrained(output_path, safe_serialization=safe_serialization)
        self.processor.save_pretrained(output_path)
        here = Path(__file__)
        if here.name == MODULE_FILE and here.parent != Path(output_path):
            shutil.copy2(here, Path(output_path) / MODULE_FILE)
        self.save_config(output_path, "st_wolofmrl_config.json")

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token=None, cache_folder=None, revision=None,
             local_files_only: bool = False, trust_remote_code: bool = False, model_kwargs=None, **kwargs):
        """Load the folder (or Hub repo) with AutoModel / AutoProcessor; raises what they raise."""
        from transformers import AutoModel, AutoProcessor

        hub = dict(token=token, cache_dir=cache_folder, revision=revision, local_files_only=local_files_only,
                   trust_remote_code=True)
        if subfolder:
            hub["subfolder"] = subfolder
        model = AutoModel.from_pretrained(model_name_or_path, **hub, **(model_kwargs or {})).eval()
        processor = AutoProcessor.from_pretrained(model_name_or_path, **hub)
        config = {}
        local = Path(model_name_or_path) / subfolder / "st_wolofmrl_config.json"
        if local.is_file():
            config = json.loads(local.read_text())
        return cls(model, processor, **config)


def write_sentence_transformers_files(folder: str | Path, query_prefix: str, passage_prefix: str,
                                      versions: dict[str, str] | None = None) -> list[str]:
    """Make a built model folder a sentence-transformers model too: copy this file as `st_wolofmrl.py`, write
    `modules.json`, `config_sentence_transformers.json` (prompts query/document, cosine similarity) and
    `st_wolofmrl_config.json`. Returns the names written."""
    folder = Path(folder)
    shutil.copy2(Path(__file__), folder / MODULE_FILE)
    (folder / "modules.json").write_text(json.dumps(
        [{"idx": 0, "name": "0", "path": "", "type": MODULE_CLASS}], indent=2))
    config = {"model_type": "SentenceTransformer", "__version__": versions or {},
              "prompts": {"query": query_prefix, "document": passage_prefix},
              "default_prompt_name": None, "similarity_fn_name": "cosine"}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config, indent=2))
    (folder / "st_wolofmrl_config.json").write_text(json.dumps({"max_seq_length": 512}, indent=2))
    return [MODULE_FILE, "modules.json", "config_sentence_transformers.json", "st_wolofmrl_config.json"]
