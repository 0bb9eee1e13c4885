"""Spoken-intent evaluation on the offline intent set (eval/intents.py): zero-shot, k-shot and a linear probe,
at every Matryoshka dim, for each model's speech side and the text topline, in the clean and hard conditions.

    python eval/intent_tasks.py --model fusion=checkpoints/wolofmrl-base --model dual=ckpt/wolofmrl-dual \
        --set data/intent/set --out results/intent --plot docs/results/intent_accuracy_vs_dim.png

Settings (test clips are classified; support clips come from other sentences, spoken by other voices):
- ``zero_shot``: the nearest French label name (`intents.INTENTS`), embedded by the same model's text side as a
  passage; no support example is used.
- ``k<k>``: k support clips per intent drawn at random (`DRAWS` draws, seeded), the intent's prototype is their
  mean embedding, a clip gets the intent of the nearest prototype (cosine). An intent with fewer than k support
  clips uses all it has. Reported as mean and std over draws.
- ``probe``: scikit-learn logistic regression fitted on every support clip at that dim.
Strategies: each ``--model NAME=FOLDER`` (its speech side), and ``text`` (the topline: the written Wolof sentence
through the first model's text side as a query; no condition applies to it). Floors: ``majority`` (the support
pool's most frequent intent) and ``bow`` (bag of words: word counts of the written sentence + logistic regression
on the support sentences), neither depends on the dim. Metrics: accuracy, macro F1 (``f1``) and weighted F1 from
wolofmrl/metrics.py (scikit-learn). Every clip is synthetic TTS, not Wolof speakers.

Writes, under --out: ``mteb/<strategy>/experiments/embed_dim_<d>/<Task>.json`` (mteb `TaskResult` files; the
condition is the hf_subset), ``scores.json`` (flat rows), ``scores.md`` and the plot.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

EVAL_DIR = Path(__file__).resolve().parent
for _p in (EVAL_DIR, EVAL_DIR.parent):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import intents  # noqa: E402
from wolofmrl.metrics import classification_scores  # noqa: E402

logger = logging.getLogger("wolofmrl.intent")

KS = (1, 4, 16)
DRAWS = 10
SEED = 13
TASK_NAMES = {"zero_shot": "WolofOfflineSpokenIntentZeroShot", "kshot": "WolofOfflineSpokenIntentKShot",
              "probe": "WolofOfflineSpokenIntentProbe", "baseline": "WolofOfflineSpokenIntentBaseline"}


# ------------------------------------------------------------------------------------------------ pure scoring
def unit(x: np.ndarray, dim: int | None = None) -> np.ndarray:
    """First `dim` columns of (n, hidden) raw embeddings, L2-normalised (modeling_wolofmrl.normalize_dim)."""
    import torch
    from modeling_wolofmrl import normalize_dim

    x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    return normalize_dim(x, dim, x.shape[-1], []).numpy()


def zero_shot(test: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Predicted label index per test row: argmax cosine against the (n_labels, d) label embeddings."""
    return np.argmax(unit(test) @ unit(labels).T, axis=1)


def k_shot(support: np.ndarray, support_y: np.ndarray, test: np.ndarray, k: int, n_labels: int,
           rng: np.random.Generator) -> np.ndarray:
    """Nearest-prototype prediction from k support rows per label (all of a label's rows when it has fewer).

    Raises ValueError when a label has no support row (a prototype cannot be formed)."""
    support = unit(support)
    protos = []
    for y in range(n_labels):
        pool = np.flatnonzero(support_y == y)
        if pool.size == 0:
            raise ValueError(f"label {y} has no support example: every intent needs >= 1 support clip")
        pick = rng.choice(pool, size=min(k, pool.size), replace=False)
        protos.append(support[pick].mean(axis=0))
    return np.argmax(unit(test) @ unit(np.stack(protos)).T, axis=1)


def probe(support: np.ndarray, support_y: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Logistic regression (scikit-learn, L2, C=1) on the unit support embeddings; predicted test labels."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000)
    clf.fit(unit(support), support_y)
    return clf.predict(unit(test))


def baselines(support_text, support_y, test_text, test_y) -> dict[str, dict]:
    """Dim-free floors: majority class of the support pool, and bag-of-words logistic regression on the text."""
    from sklearn.dummy import DummyClassifier
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    major = DummyClassifier(strategy="most_frequent").fit(np.zeros((len(support_y), 1)), support_y)
    bow = make_pipeline(CountVectorizer(lowercase=True), LogisticRegression(max_iter=2000))
    bow.fit(list(support_text), support_y)
    return {"majority": classification_scores(test_y, major.predict(np.zeros((len(test_y), 1)))),
            "bow": classification_scores(test_y, bow.predict(list(test_text)))}


def evaluate(support, support_y, test, test_y, labels, dims, n_labels, draws: int = DRAWS) -> list[dict]:
    """Every setting at every dim for one strategy/condition; rows {setting, dim, metrics (+ _std for k-shot)}."""
    rows = []
    for dim in dims:
        s, t, lab = support[:, :dim], test[:, :dim], (labels[:, :dim] if labels is not None else None)
        if lab is not None:
            rows.append({"setting": "zero_shot", "dim": dim, **classification_scores(test_y, zero_shot(t, lab))})
        for k in KS:
            rng = np.random.default_rng([SEED, k, dim])
            runs = [classification_scores(test_y, k_shot(s, support_y, t, k, n_labels, rng)) for _ in range(draws)]
            row = {"setting": f"k{k}", "dim": dim, "draws": draws}
            for m in runs[0]:
                vals = np.array([r[m] for r in runs])
                row[m], row[f"{m}_std"] = float(vals.mean()), float(vals.std())
            rows.append(row)
        rows.append({"setting": "probe", "dim": dim, **classification_scores(test_y, probe(s, support_y, t))})
    return rows


# ------------------------------------------------------------------------------------------------ data
Data = dict  # condition -> (support rows, support labels, test rows, test labels)


def split_rows(rows: list[dict], names: dict[str, str]) -> tuple[list[dict], np.ndarray, list[dict], np.ndarray]:
    """(support rows, their label indices, test rows, their label indices), label index = order of `names`."""
    order = list(names)
    sup = [r for r in rows if r["role"] == "support"]
    test = [r for r in rows if r["role"] == "test"]
    return (sup, np.array([order.index(r["intent"]) for r in sup]),
            test, np.array([order.index(r["intent"]) for r in test]))


def offline_data(set_dir: str | Path, conditions=intents.CONDITIONS) -> tuple[Data, dict, dict]:
    """The offline intent set per condition, its label names (id -> French name) and a description."""
    set_dir = Path(set_dir)
    names = json.loads((set_dir / "manifest.json").read_text())["label_names"] if (
        set_dir / "manifest.json").is_file() else {}
    data = {}
    for c in conditions:
        rows = [{**r, "audio": {"bytes": r["audio"]}} for r in intents.read_set(set_dir, c)]
        data[c] = split_rows(rows, names)
    return data, names, {"set": str(set_dir), "revision": set_dir.name, "title": "Offline spoken intent "
                         "(synthetic TTS speech from held-out voices, not Wolof speakers)"}


def wolbanking77_data(root: str | Path | None = None, limit: int | None = None) -> tuple[Data, dict, dict]:
    """WolBanking77 (real speakers): support = its train split, conditions ``official`` (its test split) and
    ``overlap-free`` (test rows whose sentence is not in train), see benchmark_data.wolbanking77_intents."""
    import benchmark_data as bd

    sets = {"official": bd.wolbanking77_intents(limit, root), "overlap-free": bd.wolbanking77_intents(
        limit, root, overlap_free=True)}
    names = {n: n for n in sets["official"].label_names}

    def rows(items, labels, role, cs):
        return [{"id": x["id"], "role": role, "intent": cs.label_names[y], "audio": x["audio"],
                 "wo_text": x.get("text"), "sentence_id": x.get("text") or x["id"]} for x, y in zip(items, labels)]

    data = {c: split_rows(rows(cs.train, cs.train_labels, "support", cs) + rows(cs.test, cs.test_labels, "test", cs),
                          names) for c, cs in sets.items()}
    return data, names, {"set": "wolbanking77", "revision": "wolbanking77", "title": "WolBanking77 spoken intent "
                         "(recorded speakers)", **sets["official"].notes,
                         "overlap_free_test_rows": len(sets["overlap-free"].test)}


# ------------------------------------------------------------------------------------------------ embedding
def cached(path: Path, ids: list[str], compute) -> np.ndarray:
    """Raw embeddings saved as .npz (ids + matrix): recomputed only when the ids differ."""
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        if list(z["ids"]) == ids:
            return z["emb"]
    emb = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, ids=np.array(ids), emb=emb)
    return emb


def strategy_rows(name: str, embedder, data: Data, names: dict, dims: list[int], cache_dir: Path,
                  topline: bool) -> list[dict]:
    """Scores of one model's speech side in each condition (and, when `topline`, of its text side)."""
    labels = embedder.raw_text(list(names.values()), "passage")
    out = []
    for cond, (sup, sup_y, test, test_y) in data.items():
        t0 = time.time()
        s = cached(cache_dir / f"{name}-support.npz", [r["id"] for r in sup],
                   lambda: embedder.raw_audio([r["audio"] for r in sup]))
        t = cached(cache_dir / f"{name}-test-{cond}.npz", [r["id"] for r in test],
                   lambda: embedder.raw_audio([r["audio"] for r in test]))
        logger.info("%s %s: %d support + %d test clips embedded in %.0f s", name, cond, len(sup), len(test),
                    time.time() - t0)
        out += [{"strategy": name, "condition": cond, **r}
                for r in evaluate(s, sup_y, t, test_y, labels, dims, len(names))]
    sup, sup_y, test, test_y = next(iter(data.values()))
    if topline and all(r.get("wo_text") for r in sup + test):
        s = embedder.raw_text([r["wo_text"] for r in sup], "query")
        t = embedder.raw_text([r["wo_text"] for r in test], "query")
        out += [{"strategy": "text", "condition": "text", **r}
                for r in evaluate(s, sup_y, t, test_y, labels, dims, len(names))]
    return out


def run(models: dict[str, str], data: Data, names: dict, info: dict, out: str | Path,
        plot_path: str | Path | None = None, device: str | None = None) -> list[dict]:
    """Evaluate every model (speech side), the text topline (first model) and the floors; write the outputs."""
    from wolofmrl_mteb import WolofMRLEmbedder

    out, rows = Path(out), []
    for i, (name, path) in enumerate(models.items()):
        embedder = WolofMRLEmbedder(path, device=device)
        dims = sorted({embedder.hidden, *embedder.matryoshka_dims}, reverse=True)
        rows += strategy_rows(name, embedder, data, names, dims, out / "embeddings", topline=i == 0)
        del embedder
    sup, sup_y, test, test_y = next(iter(data.values()))
    if all(r.get("wo_text") for r in sup + test):
        texts = [r["wo_text"] for r in sup], [r["wo_text"] for r in test]
        for base, scores in baselines(texts[0], sup_y, texts[1], test_y).items():
            rows.append({"strategy": base, "condition": "text", "setting": "baseline", "dim": None, **scores})
    info.update({"models": models, "n_labels": len(names), "label_names": names, "support_clips": len(sup),
                 "test_clips": {c: len(d[2]) for c, d in data.items()},
                 "test_sentences": len({r["sentence_id"] for r in test}), "ks": KS, "draws": DRAWS})
    write_outputs(rows, info, out, plot_path)
    return rows


# ------------------------------------------------------------------------------------------------ outputs
METRICS = ("accuracy", "f1", "f1_weighted")


def task_of(setting: str) -> str:
    return TASK_NAMES["kshot" if setting.startswith("k") and setting[1:].isdigit() else setting]


def write_mteb(rows: list[dict], out: Path, revision: str) -> int:
    """One mteb `TaskResult` file per (strategy, dim, task); conditions are hf_subsets, k-shot k's are the
    subsets' `k<k>` prefixes. Returns the number of files."""
    import mteb
    from mteb import TaskResult

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["strategy"], r["dim"], task_of(r["setting"])), []).append(r)
    for (strategy, dim, task), rs in groups.items():
        scores = [{"hf_subset": r["condition"] if task != TASK_NAMES["kshot"] else f"{r['condition']}-{r['setting']}",
                   "languages": ["wol-Latn", "fra-Latn"], "main_score": r["accuracy"],
                   **{k: v for k, v in r.items() if k in METRICS or k.endswith("_std") or k == "draws"},
                   **({"baseline": r["strategy"]} if r["setting"] == "baseline" else {})} for r in rs]
        folder = out / "mteb" / strategy / revision / "experiments" / (f"embed_dim_{dim}" if dim else "no_dim")
        folder.mkdir(parents=True, exist_ok=True)
        TaskResult(dataset_revision=revision, task_name=task, mteb_version=mteb.__version__,
                   scores={"test": scores}, evaluation_time=0.0, kg_co2_emissions=None).to_disk(folder / f"{task}.json")
    return len(groups)


def _cell(r: dict | None, metric: str = "accuracy") -> str:
    if r is None:
        return "–"
    std = r.get(f"{metric}_std")
    return f"{100 * r[metric]:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def markdown(rows: list[dict], info: dict) -> str:
    """Tables: accuracy by setting x dim x strategy/condition, then macro / weighted F1, then the floors."""
    dims = sorted({r["dim"] for r in rows if r["dim"]}, reverse=True)
    by = {(r["strategy"], r["condition"], r["setting"], r["dim"]): r for r in rows}
    lines = [f"# {info['title']}", "",
             f"Set `{info['set']}`: {info['n_labels']} intents, {info['support_clips']} support clips, test clips "
             f"{info['test_clips']} ({info['test_sentences']} sentences). k-shot: mean ± std over {info['draws']} "
             "draws. Scores x 100.", ""]
    combos = sorted({(r["strategy"], r["condition"]) for r in rows if r["dim"]},
                    key=lambda x: (x[0] == "text", x[0], x[1]))
    settings = ["zero_shot", *(f"k{k}" for k in info["ks"]), "probe"]
    for metric, title in (("accuracy", "Accuracy"), ("f1", "Macro F1"), ("f1_weighted", "Weighted F1")):
        lines += [f"## {title}", "", "| setting | strategy | condition | " + " | ".join(map(str, dims)) + " |",
                  "|---|---|---|" + "---|" * len(dims)]
        for setting in settings:
            for strategy, cond in combos:
                if any((strategy, cond, setting, d) in by for d in dims):
                    lines.append(f"| {setting} | {strategy} | {cond} | "
                                 + " | ".join(_cell(by.get((strategy, cond, setting, d)), metric) for d in dims) + " |")
        lines.append("")
    lines += ["## Floors (written sentence, no dim)", "", "| baseline | accuracy | macro F1 | weighted F1 |",
              "|---|---|---|---|"]
    lines += [f"| {r['strategy']} | " + " | ".join(_cell(r, m) for m in METRICS) + " |"
              for r in rows if r["setting"] == "baseline"]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, info: dict) -> None:
    """Accuracy vs dim, one panel per setting (zero-shot, k=16, probe), a line per strategy/condition, floors
    as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("zero_shot", "zero-shot (French label names)"), (f"k{max(info['ks'])}", f"{max(info['ks'])}-shot "
              "(prototype)"), ("probe", "linear probe (all support clips)")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharey=True)
    combos = sorted({(r["strategy"], r["condition"]) for r in rows if r["dim"]})
    for ax, (setting, title) in zip(axes, panels):
        for strategy, cond in combos:
            pts = sorted((r["dim"], 100 * r["accuracy"], 100 * r.get("accuracy_std", 0.0)) for r in rows
                         if r["strategy"] == strategy and r["condition"] == cond and r["setting"] == setting)
            if pts:
                x, y, e = zip(*pts)
                ax.errorbar(x, y, yerr=e, marker="o", ms=3, capsize=2, ls="--" if cond == "hard" else "-",
                            label=f"{strategy}" + ("" if cond == "text" else f" ({cond})"))
        for r in rows:
            if r["setting"] == "baseline":
                ax.axhline(100 * r["accuracy"], color="grey", lw=0.9, ls=":" if r["strategy"] == "majority" else "-.",
                           label=f"{r['strategy']} floor (text)")
        ax.axhline(100 / info["n_labels"], color="black", lw=0.6, ls=(0, (1, 4)), label="chance (1/intents)")
        ax.set_xscale("log", base=2)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("embedding dim (Matryoshka prefix)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy x 100")
    axes[-1].legend(fontsize=7)
    n_test = next(iter(info["test_clips"].values()))
    fig.suptitle(f"{info['title']}: {info['n_labels']} intents, {n_test} test clips", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(rows: list[dict], info: dict, out: Path, plot_path: str | Path | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    info["mteb_files"] = write_mteb(rows, out, revision=info["revision"])
    (out / "scores.json").write_text(json.dumps({"info": info, "rows": rows}, indent=1, ensure_ascii=False))
    (out / "scores.md").write_text(markdown(rows, info))
    plot(rows, Path(plot_path) if plot_path else out / "intent_accuracy_vs_dim.png", info)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="NAME=FOLDER (repeat); the first gives the topline")
    p.add_argument("--set", default="data/intent/set", help="the intent set built by eval/intents.py")
    p.add_argument("--wolbanking77", default=None, help="instead: a folder with WolBanking77 train/test.parquet")
    p.add_argument("--limit", type=int, default=None, help="WolBanking77: rows per split (quick runs)")
    p.add_argument("--out", default="results/intent")
    p.add_argument("--conditions", default=",".join(intents.CONDITIONS), help="offline set: clean,hard")
    p.add_argument("--plot", default=None, help="plot path (default <out>/intent_accuracy_vs_dim.png)")
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    bad = [m for m in args.model if "=" not in m]
    if bad:
        raise SystemExit(f"--model {bad[0]!r}: expected NAME=FOLDER, e.g. fusion=checkpoints/wolofmrl-base")
    models = dict(m.split("=", 1) for m in args.model)
    if args.wolbanking77:
        data, names, info = wolbanking77_data(args.wolbanking77, args.limit)
    else:
        data, names, info = offline_data(args.set, tuple(args.conditions.split(",")))
    run(models, data, names, info, args.out, args.plot, args.device)
    print((Path(args.out) / "scores.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
