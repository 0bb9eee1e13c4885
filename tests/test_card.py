"""Model card written by the builder + Hub upload of model and processor, tested offline: only the network calls of
`HfApi` are replaced, by a stand-in that writes each commit's files into a local repo folder."""

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import CommitInfo, HfApi, ModelCard
from huggingface_hub.hf_api import RepoUrl

from wolofmrl.build import ROOT, save
from wolofmrl.card import push_folder, write_model_card
from wolofmrl.testing import tiny_model

RESULTS = ROOT / "docs" / "results" / "fusion_model-index.yaml"
ARGS = {"speech": "whisper-base", "text": "multilingual-e5-small", "strategy": "fusion", "delta": "wolofmrl-fusion"}


class LocalHub(HfApi):
    """HfApi whose repo creation and commits write to `root/<repo_id>/` (a local folder layout of a Hub repo)."""

    def __init__(self, root: Path):
        super().__init__(token="hf_offline_test")
        self.root, self.commits = root, []

    def create_repo(self, repo_id, **kwargs):
        (self.root / repo_id).mkdir(parents=True, exist_ok=True)
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def _validate_yaml(self, content: str, *args, **kwargs):  # the Hub's /api/validate-yaml, done locally
        front = content.split("---")[1] if content.startswith("---") else ""
        assert isinstance(yaml.safe_load(front), dict), "README.md has no YAML metadata block"

    def create_branch(self, *args, **kwargs):
        return None

    def create_commit(self, repo_id, operations, commit_message="", **kwargs):
        for op in operations:
            target = self.root / repo_id / op.path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            src = op.path_or_fileobj
            if isinstance(src, (str, Path)):
                shutil.copyfile(src, target)
            else:
                target.write_bytes(src if isinstance(src, bytes) else src.read())
        self.commits.append((repo_id, commit_message, sorted(op.path_in_repo for op in operations)))
        return CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/local{len(self.commits)}",
                          commit_message=commit_message, commit_description="", oid="0" * 40)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("card") / "model"
    model, processor = tiny_model()
    save(model, processor, folder)
    return folder, model, processor


def test_card_metadata_and_text(tiny_folder):
    folder, model, _ = tiny_folder
    path = write_model_card(folder, ARGS, model.config, ROOT / "weights" / "wolofmrl-fusion", RESULTS)
    card = ModelCard.load(path)
    data = card.data
    assert data.language == ["wo", "fr"] and data.license == "mit"
    assert data.pipeline_tag == "feature-extraction" and data.library_name == "transformers"
    assert "matryoshka" in data.tags and data.base_model == ["openai/whisper-base", "intfloat/multilingual-e5-small"]
    committed = yaml.safe_load(RESULTS.read_text())["model-index"][0]["results"]
    assert len(data.eval_results) == sum(len(r["metrics"]) for r in committed)
    assert data.eval_results[0].metric_value == committed[0]["metrics"][0]["value"]
    assert "synthetic" in card.text.lower() and "Intended use" in card.text and "steps on" in card.text


def test_card_without_results_or_delta_says_untrained(tiny_folder, tmp_path):
    folder, model, _ = tiny_folder
    card = ModelCard.load(write_model_card(folder, {**ARGS, "delta": None}, model.config, None, None))
    assert card.data.eval_results is None and "untrained" in card.text
    card = ModelCard.load(write_model_card(folder, ARGS, model.config, tmp_path, None))  # a delta, no training.json
    assert "untrained" not in card.text and "not recorded" in card.text
    with pytest.raises(FileNotFoundError, match="eval_results"):
        write_model_card(folder, ARGS, model.config, None, tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("a: 1\n")
    with pytest.raises(ValueError, match="model-index"):
        write_model_card(folder, ARGS, model.config, None, tmp_path / "bad.yaml")


def test_push_model_and_processor_to_a_local_hub_layout(tiny_folder, tmp_path, monkeypatch):
    from transformers import AutoModel, AutoProcessor
    from transformers.utils import hub as transformers_hub

    folder, model, processor = tiny_folder
    local = LocalHub(tmp_path / "hub")
    monkeypatch.setattr(transformers_hub, "_hf_api", local)
    model.push_to_hub("me/wolofmrl-tiny")
    processor.push_to_hub("me/wolofmrl-tiny")
    repo = tmp_path / "hub" / "me" / "wolofmrl-tiny"
    loaded = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
    proc = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
    batch = proc(text=["Il pleut."], text_kind="query")
    with torch.no_grad():
        torch.testing.assert_close(loaded.get_text_embeddings(**batch), model.get_text_embeddings(**batch))

    write_model_card(folder, ARGS, model.config, None, RESULTS)
    url = push_folder(folder, "me/wolofmrl-folder", api=local)
    assert url.endswith("local3")
    files = set(local.commits[-1][2])
    assert {"README.md", "config.json", "model.safetensors", "modeling_wolofmrl.py", "processing_wolofmrl.py",
            "configuration_wolofmrl.py", "tokenizer.json"} <= files
    assert ModelCard.load(tmp_path / "hub" / "me" / "wolofmrl-folder" / "README.md").data.language == ["wo", "fr"]
    with pytest.raises(FileNotFoundError, match="not a built model folder"):
        push_folder(tmp_path, "me/x", api=local)
