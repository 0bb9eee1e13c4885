"""The offline spoken-intent set: Wolof UI sentences labelled by the software action their message key names.

    python -m wolofmrl.curation --config train/configs/data/offline.yaml --fetch --until dedupe   # text stages only
    python eval/intents.py --config train/configs/data/offline.yaml --intent-fraction 0.12 --out data/intent/set

**Which sentences.** Only pairs (Wolof + French) from the UI sources (`mediawiki`, `gettext`, `debconf`) whose
split is the ``intent`` bucket of `wolofmrl.curation.pipeline.sentence_split` under the config's salt and its
``split.intent`` fraction (the training-corpus builder drops that bucket; it is disjoint from the retrieval test
and dev splits). A config with no intent bucket is refused.

**The labelling rule** (`INTENTS`, first match wins, never the Wolof text, never a model): the *action string* of a
sentence is its MediaWiki message key (lower-cased, presentation prefixes ``tooltip-``, ``accesskey-``,
``action-``, ``right-`` removed: they say how or to whom a string is shown, not what it does), or, for gettext
and debconf, the English msgid the French and Wolof were translated from. The intent is the first entry of
`INTENTS` whose key regex (MediaWiki) or msgid regex (gettext/debconf) finds a match in it. Sentences no rule
matches are unused and counted. Intents with fewer than `MIN_SENTENCES` sentences are dropped (counted).

**Support / test.** Per intent, sentences are ordered by a stable hash of `sentence_id`; the first
``max(1, n // 3)`` are the support pool (k-shot prototypes, linear probe), the rest the test set: no sentence
is on both sides. Support clips are voiced by `SUPPORT_VOICES`, test clips by `TEST_VOICES` (+ Kokoro for a
`KOKORO_SHARE` of test sentences): all held out of training (`wolofmrl.voices.is_held_out`) and the two voice
sets are disjoint, so a probe cannot key on a voice either.

**Conditions.** ``clean``: the synthesis as is. ``hard``: each test clip through
``wolofmrl.augment.degrade(wave, rng, preset="hard")`` with an rng seeded by the clip id. Support clips are
clean in both conditions (the examples a user enrols). All audio is synthetic TTS, not Wolof speakers.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from wolofmrl.curation.store import stable_hash, unit_interval  # noqa: E402
from wolofmrl.voices import is_held_out  # noqa: E402

logger = logging.getLogger("wolofmrl.intents")

# (intent id, French label name for zero-shot, MediaWiki key regex, gettext/debconf English-msgid regex)
INTENTS: list[tuple[str, str, str, str]] = [
    ("error", "message d'erreur", r"error|fail|forbidden|^cant-|^nosuch|conflict|invalid|^bad",
     r"\b(error|failed|failure|cannot|can't|unable)\b"),
    ("settings", "préférences et paramètres",
     r"^prefs?-|preferences|^tog-|prefs$|^editfont|timezone|yournick",
     r"\b(settings|preferences|profile|defaults|plugins?)\b"),
    ("block", "bloquer ou protéger", r"block|protect|lock|restriction|^ipaddress", r"\block\b"),
    ("login", "se connecter et gérer son compte",
     r"login|logout|password|createacc|createacct|^noname|accmail|resetpass|username|editname|loggedin",
     r"password|\blog ?(in|out)\b|\bsign ?in\b|\baccount\b"),
    ("delete", "supprimer ou restaurer une page", r"delete|^del|remove", r"\b(delete|remove)\b"),
    ("search", "rechercher", r"search|^go$|nogomatch|^find", r"\b(search|find)\b"),
    ("help", "aide", r"help|faq|^about", r"\bhelp\b"),
    ("history", "historique des versions",
     r"history|diff|revision|^rev-|^revdel|compare|rollback|^revert|^undo|^oldid", r"\b(history|revert|undo)\b"),
    ("save", "enregistrer", r"^save|publish", r"\bsave\b"),
    ("edit", "modifier une page", r"^edit|-edit|preview|summary|minoredit|createpage|wikieditor|^move|-move|patrol",
     r"\bedit\b"),
    ("watchlist", "liste de suivi", r"watch", r"\bwatch"),
    ("files", "fichiers et images", r"^file|-file|upload|image|^img|media|largefile",
     r"\b(files?|directory|folder)\b"),
    ("email", "envoyer un courriel", r"mail", r"\be-?mail\b"),
    ("logs", "journaux et listes de pages", r"(^|-)logs?(-|$)|log(page|empty)|pages$|recentchanges|uncategorized",
     r"\blogs?\b"),
    ("keyboard", "disposition du clavier", r"keyboard|keymap", r"\b(keyboard|keymap|layout|key combination)\b"),
]
UI_SOURCES = ("mediawiki", "gettext", "debconf")
MIN_SENTENCES = 2
PRESENTATION = re.compile(r"^(tooltip-|accesskey-|action-|right-)")
_RULES = [(i, re.compile(k), re.compile(m, re.I)) for i, _, k, m in INTENTS]

# held-out espeak-ng variants split between the two sides (Wolof is read by espeak's Swahili voice). The test side
# gets variants that no corpus voice list (`wolofmrl.curation.voice.list_voices`) has ever had, so even models
# trained before the held-out rule existed have not heard them; f5 and m7 were once in that list.
SUPPORT_VOICES = tuple(f"espeak-wo-{v}-p{p}" for v in ("Andrea", "michel", "f5", "m7") for p in (40, 60))
TEST_VOICES = tuple(f"espeak-wo-{v}-p{p}" for v in ("klatt4", "steph3", "iven4", "whisperf") for p in (40, 55, 70))
KOKORO_VOICES = ("kokoro-jf_alpha", "kokoro-jm_kumo", "kokoro-jf_nezumi+jm_kumo")
TEST_ESPEAK_PER_SENTENCE = 5
KOKORO_SHARE = 0.35
CONDITIONS = ("clean", "hard")
CHUNK = 32
COLUMNS = ("id", "sentence_id", "source", "source_key", "en_text", "intent", "label_fr", "role", "wo_text", "fr_text",
           "voice", "condition", "degradation", "audio", "duration_s")


def action_string(source: str, source_key: str, en_text: str = "") -> str:
    """What the rule reads: the MediaWiki key without presentation prefixes, else the English msgid (lower-case)."""
    if source.startswith("mediawiki"):
        return PRESENTATION.sub("", (source_key or "").strip().lower())
    return (en_text or source_key.split("\x04")[-1]).strip().lower()


def intent_of(source: str, source_key: str, en_text: str = "") -> str | None:
    """The intent id `INTENTS` gives a UI sentence (None: no rule matches, or not a UI source)."""
    if not source.startswith(UI_SOURCES):
        return None
    text = action_string(source, source_key, en_text)
    is_key = source.startswith("mediawiki")
    for intent, key_rx, msgid_rx in _RULES:
        if (key_rx if is_key else msgid_rx).search(text):
            return intent
    return None


def label_names() -> dict[str, str]:
    """Intent id -> French label name (zero-shot candidates), in rule order."""
    return {i: name for i, name, _, _ in INTENTS}


# ------------------------------------------------------------------------------------------------ selection
def select_sentences(sentences, cfg: dict) -> tuple[dict[str, list[dict]], Counter]:
    """Intent-bucket UI pairs grouped by intent, and the count of every sentence not used, by reason.

    Raises ValueError when the config has no intent bucket (then training would not exclude these sentences)."""
    from wolofmrl.curation.pipeline import sentence_split, source_specs

    if not cfg["split"].get("intent"):
        raise ValueError(f"config {cfg.get('_config_path')}: split.intent is 0 or missing; set `split: {{..., "
                         "intent: 0.12}` (or pass --intent-fraction 0.12) so that the bucket is defined")
    specs, drops, by_intent = source_specs(cfg), Counter(), {}
    for s in sentences:
        if sentence_split(s, cfg, specs) != "intent":
            drops["not_intent_bucket"] += 1
        elif not s["source"].startswith(UI_SOURCES):
            drops["not_ui_source"] += 1
        elif s.get("kind") != "pair" or not (s.get("wo_text") or "").strip():
            drops["no_wolof_text"] += 1
        elif (intent := intent_of(s["source"], s["source_key"], s.get("en_text", ""))) is None:
            drops["no_rule_matches"] += 1
        else:
            by_intent.setdefault(intent, []).append(s)
    for intent in [i for i in by_intent if len(by_intent[i]) < MIN_SENTENCES]:
        drops[f"intent_below_{MIN_SENTENCES}_sentences"] += len(by_intent.pop(intent))
    return {i: by_intent[i] for i in label_names() if i in by_intent}, drops


SPEECH_TEXTS = REPO / "train" / "data" / "speech_texts.jsonl.gz"  # the training corpus's text side (issue 16)


def check_against_training_texts(by_intent: dict[str, list[dict]], path: str | Path = SPEECH_TEXTS) -> dict:
    """Where the training corpus's text file puts each selected sentence: counts by its split there.

    Raises ValueError when a selected sentence is a *train* sentence there, or shares a folded Wolof / French
    text with a train row (leakage); {"missing_file": path} when the file is absent."""
    import gzip

    from wolofmrl.curation.text import dedupe_key

    path = Path(path)
    if not path.is_file():
        return {"missing_file": str(path)}
    ours = {s["sentence_id"] for ss in by_intent.values() for s in ss}
    texts = {dedupe_key(s[k]) for ss in by_intent.values() for s in ss for k in ("wo_text", "fr_text")}
    found, leaks = Counter(), []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["sentence_id"] in ours:
                found[r["split"]] += 1
            if r["split"] == "train" and any(dedupe_key(r.get(k) or "") in texts
                                             for k in ("wo_text", "fr_text", "transcript") if r.get(k)):
                leaks.append(r["id"])
    if found.get("train") or leaks:
        raise ValueError(f"{path}: {found.get('train', 0)} selected sentences are train sentences there and "
                         f"{len(leaks)} train rows share their text (e.g. {leaks[:3]}): the salt or split fractions "
                         "differ from the training corpus's config")
    return {"file": str(path), "rows_by_split": dict(found)}


def plan_clips(by_intent: dict[str, list[dict]], salt: str) -> list[dict]:
    """Every clip to synthesise (clean condition): support sentences x SUPPORT_VOICES, test sentences x
    TEST_ESPEAK_PER_SENTENCE of TEST_VOICES (+ one Kokoro voice for a KOKORO_SHARE of them). Deterministic."""
    for v in SUPPORT_VOICES + TEST_VOICES + KOKORO_VOICES:
        if not is_held_out(v):
            raise ValueError(f"voice {v} is not held out of training (wolofmrl.voices.is_held_out)")
    names, clips = label_names(), []
    for intent, sents in by_intent.items():
        ordered = sorted(sents, key=lambda s: stable_hash(salt, "intent-role", s["sentence_id"]))
        n_support = max(1, len(ordered) // 3)
        for j, s in enumerate(ordered):
            role = "support" if j < n_support else "test"
            if role == "support":
                voices = list(SUPPORT_VOICES)
            else:
                rng = np.random.default_rng(stable_hash(salt, "intent-voices", s["sentence_id"]))
                voices = [TEST_VOICES[k] for k in sorted(rng.choice(len(TEST_VOICES), TEST_ESPEAK_PER_SENTENCE,
                                                                    replace=False))]
                if unit_interval(salt, "intent-kokoro", s["sentence_id"]) < KOKORO_SHARE:
                    voices.append(KOKORO_VOICES[int(rng.integers(len(KOKORO_VOICES)))])
            for v in voices:
                clips.append({"id": f"{s['sentence_id']}-{v}", "sentence_id": s["sentence_id"], "source": s["source"],
                              "source_key": s["source_key"], "en_text": s.get("en_text", ""), "intent": intent,
                              "label_fr": names[intent], "role": role, "wo_text": s["wo_text"],
                              "fr_text": s["fr_text"], "voice": v})
    return sorted(clips, key=lambda c: (c["role"], c["intent"], c["id"]))


# ------------------------------------------------------------------------------------------------ audio
def _voice_clip(clip: dict) -> dict:
    from wolofmrl.curation.audio import encode
    from wolofmrl.curation.voice import synthesize

    wave = synthesize(clip["wo_text"], "wo", clip["voice"])
    data, _ = encode(wave, "flac")
    return {**clip, "condition": "clean", "degradation": "", "audio": data, "duration_s": len(wave) / 16000}


def _degrade_clip(row: dict, salt: str) -> dict:
    from processing_wolofmrl import decode_audio
    from wolofmrl.augment import degrade
    from wolofmrl.curation.audio import encode

    wave, rate = decode_audio(row["audio"])
    if rate != 16000:
        raise ValueError(f"clip {row['id']}: expected 16 kHz, got {rate}")
    rng = np.random.default_rng(stable_hash(salt, "intent-hard", row["id"]))
    wave, tag = degrade(wave, rng, preset="hard")
    data, _ = encode(wave, "flac")
    return {**row, "condition": "hard", "degradation": tag, "audio": data, "duration_s": len(wave) / 16000}


def _write_chunks(items: list, folder: Path, make, desc: str) -> int:
    """Resumable: chunk i of `items` -> folder/chunk-i.parquet via `make(item) -> row`; finished chunks are kept."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    plan = folder / "plan.json"
    ids = [x["id"] for x in items]
    if plan.is_file() and json.loads(plan.read_text()) != ids:
        raise RuntimeError(f"{folder} was built from a different plan (rule, voices or sentences changed): "
                           "build into a new --out folder, or delete this one")
    plan.write_text(json.dumps(ids))
    n_chunks, done = (len(items) + CHUNK - 1) // CHUNK, 0
    with tqdm(total=len(items), desc=desc, unit="clip") as bar:
        for c in range(n_chunks):
            path = folder / f"chunk-{c:05d}.parquet"
            part = items[c * CHUNK:(c + 1) * CHUNK]
            if not path.is_file():
                rows = [make(x) for x in part]
                tmp = path.with_suffix(".tmp")
                pq.write_table(pa.Table.from_pylist([{k: r[k] for k in COLUMNS} for r in rows]), tmp)
                tmp.rename(path)
                done += len(part)
            bar.update(len(part))
    return done


def read_set(root: str | Path, condition: str) -> list[dict]:
    """Rows of one condition (support rows are the clean ones in both), audio left as encoded bytes.

    Raises FileNotFoundError naming the build command when the set is missing."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, not {condition!r}")
    root = Path(root)
    files = sorted((root / "clean").glob("chunk-*.parquet"))
    if not files or not (root / "manifest.json").is_file():
        raise FileNotFoundError(f"no intent set under {root}: build it with `python eval/intents.py --config "
                                f"train/configs/data/offline.yaml --out {root}`")
    clean = read_set_rows(root / "clean")
    if condition == "clean":
        return clean
    hard = read_set_rows(root / "hard")
    if len(hard) != sum(r["role"] == "test" for r in clean):
        raise FileNotFoundError(f"{root}/hard is incomplete ({len(hard)} clips): rerun the build command")
    return [r for r in clean if r["role"] == "support"] + hard


# ------------------------------------------------------------------------------------------------ build
def build(config: str | Path, out: str | Path, sentences: str | Path | None = None,
          intent_fraction: float | None = None) -> dict:
    """Select, label, voice (clean) and degrade (hard) the set under `out`; resumable; returns the manifest.

    `intent_fraction` overrides the config's ``split.intent`` (with a warning when they differ: corpora built
    from that config then do not exclude these sentences)."""
    from wolofmrl.curation.config import load_config
    from wolofmrl.curation.store import read_jsonl

    cfg, out = load_config(config), Path(out)
    config_fraction = float(cfg["split"].get("intent", 0.0))
    if intent_fraction is not None and intent_fraction != config_fraction:
        logger.warning("split.intent is %g in %s, %g here: corpora built from that config do NOT exclude these "
                       "sentences from training", config_fraction, config, intent_fraction)
        cfg["split"]["intent"] = float(intent_fraction)
    src = Path(sentences or Path(cfg["out"]) / "_stages" / "dedupe" / "sentences.jsonl")
    if not src.is_file():
        raise FileNotFoundError(f"{src} not found: run the curation text stages first: `python -m wolofmrl.curation "
                                f"--config {config} --fetch --until dedupe`, or pass --sentences")
    by_intent, drops = select_sentences(read_jsonl(src), cfg)
    salt = cfg["split"]["salt"]
    training_check = check_against_training_texts(by_intent)
    clips = plan_clips(by_intent, salt)
    out.mkdir(parents=True, exist_ok=True)
    _write_chunks(clips, out / "clean", _voice_clip, "voice (clean)")
    tests = [r for r in read_set_rows(out / "clean") if r["role"] == "test"]
    _write_chunks(tests, out / "hard", lambda r: _degrade_clip(r, salt), "degrade (hard)")
    manifest = {
        "config": str(config), "salt": salt, "intent_fraction": cfg["split"]["intent"],
        "config_intent_fraction": config_fraction, "sentences_file": str(src),
        "unused_sentences": dict(drops), "label_names": {i: n for i, n in label_names().items() if i in by_intent},
        "support_voices": list(SUPPORT_VOICES), "test_voices": list(TEST_VOICES), "kokoro_voices": list(KOKORO_VOICES),
        "training_texts_check": training_check, "counts": counts(clips), "synthetic": True}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    return manifest


def read_set_rows(folder: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return [r for f in sorted(folder.glob("chunk-*.parquet")) for r in pq.read_table(f).to_pylist()]


def counts(clips: list[dict]) -> dict:
    """Per intent: sentences and clips on each side, and the Kokoro share of test clips."""
    out = {}
    for intent in dict.fromkeys(c["intent"] for c in clips):
        mine = [c for c in clips if c["intent"] == intent]
        out[intent] = {f"{role}_{what}": len({c["sentence_id"] for c in mine if c["role"] == role})
                       if what == "sentences" else sum(c["role"] == role for c in mine)
                       for role in ("support", "test") for what in ("sentences", "clips")}
        out[intent]["test_kokoro_clips"] = sum(c["role"] == "test" and c["voice"].startswith("kokoro") for c in mine)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the curation config (its salt and split.intent are used)")
    p.add_argument("--out", default="data/intent/set")
    p.add_argument("--sentences", default=None, help="dedupe-stage sentences.jsonl (default: <config out>/_stages/...)")
    p.add_argument("--intent-fraction", type=float, default=None,
                   help="override the config's split.intent (e.g. 0.12; warned about when it differs)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    m = build(args.config, args.out, args.sentences, args.intent_fraction)
    print(json.dumps({"unused_sentences": m["unused_sentences"], "counts": m["counts"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
