"""Run the WolofMRL benchmark suite through mteb at every Matryoshka dim.

    python eval/run.py --model checkpoints/wolofmrl-base --dims all --out results/
    python eval/run.py --model checkpoints/wolofmrl-base --data data/fixture --tasks speech,intent --limit 20 \
        --out /tmp/r

Writes to --out:
    mteb/results/<model>/<revision>/experiments/embed_dim_<d>/<Task>.json   mteb's own result files (one per dim)
    scores.json          every metric of every (task, source, dim), flat
    scores.md            markdown tables: main score by dim, retrieval and intent metrics
    model-index.yaml     the model card's `model-index` block (values x 100, one entry per task/source, dim in args)
    score_vs_dim.png     main score against embedding dim, one line per task/source
    run.json             what ran: model, revision, data, dims, skipped sources and why, seconds
With --analysis also analysis/ (see eval/analysis.py) on the offline Wolof speech -> French text set.

Embeddings are computed once at full width and re-used for every dim (see wolofmrl_mteb.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
import time
import warnings
from pathlib import Path

EVAL_DIR = Path(__file__).resolve().parent
if str(EVAL_DIR) not in sys.path:
    sys.path.insert(0, str(EVAL_DIR))

logger = logging.getLogger("wolofmrl.eval")

METRIC_NAMES = {"ndcg_at_10": "nDCG@10", "accuracy": "accuracy"}
RETRIEVAL_METRICS = [("ndcg_at_10", "nDCG@10"), ("recall_at_1", "R@1"), ("recall_at_10", "R@10"),
                     ("mrr_at_10", "MRR@10"), ("hit_rate_at_1", "Hit@1")]
CLASSIFICATION_METRICS = [("accuracy", "accuracy"), ("f1_weighted", "weighted F1")]
HUB_IDS = {"fleurs": "google/fleurs", "kallaama": "soynade-research/kallaama-retrieval-eval",
           "wolbanking77": "kaggle:abdoukarimkandji/WolBankingAudioDatasetParquet"}


def parse_dims(spec: str, matryoshka_dims: list[int], hidden: int) -> list[int]:
    if spec == "all":
        dims = list(matryoshka_dims)
    elif spec == "full":
        dims = [hidden]
    else:
        dims = [int(x) for x in spec.replace(",", " ").split()]
    bad = [d for d in dims if not 1 <= d <= hidden]
    if bad:
        raise SystemExit(f"--dims {bad} outside 1..{hidden}")
    return sorted(set(dims), reverse=True)


def flatten(results, dim: int, tasks: dict) -> list[dict]:
    rows = []
    for tr in results.task_results:
        meta = tasks[tr.task_name].metadata
        kind = "retrieval" if meta.simplified_task_type == "retrieval" else "classification"
        for split, subsets in tr.scores.items():
            for s in subsets:
                metrics = {k: v for k, v in s.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
                rows.append({"task": tr.task_name, "source": s["hf_subset"], "split": split, "dim": dim, "kind": kind,
                             "main_metric": meta.main_score, "main_score": float(s["main_score"]),
                             "metrics": metrics})
    return rows


def _fmt(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def markdown(rows: list[dict], info: dict) -> str:
    dims = sorted({r["dim"] for r in rows}, reverse=True)
    keys = sorted({(r["task"], r["source"]) for r in rows})
    by = {(r["task"], r["source"], r["dim"]): r for r in rows}
    out = [f"# WolofMRL benchmark: `{info['model_name']}`", "",
           f"Model folder `{info['model']}` (revision `{info['revision']}`, strategy `{info['strategy']}`). "
           f"Offline data: `{info['data']}` test split ({info.get('data_note') or 'not used'})"
           + (f", limited to {info['limit']} sentences" if info.get("limit") else "") + ". "
           "Scores x 100. Offline audio is synthetic, never Wolof speakers; "
           "offline intent labels are derived by rule from source keys (eval/offline_intents.py)."
           + (f" Note: {info['note']}." if info.get("note") else ""), ""]
    if info.get("untrained"):
        out += ["**The model's speech adapter is untrained (built with `--delta none`): speech scores are chance-level "
                "by construction.**", ""]
    out += ["## Main score by embedding dim", "",
            "| task | source | metric | " + " | ".join(str(d) for d in dims) + " |",
            "|---|---|---|" + "---|" * len(dims)]
    for t, s in keys:
        metric = next(r for r in rows if r["task"] == t and r["source"] == s)["main_metric"]
        cells = [_fmt(by[(t, s, d)]["main_score"]) if (t, s, d) in by else "–" for d in dims]
        out.append(f"| {t} | {s} | {METRIC_NAMES.get(metric, metric)} | " + " | ".join(cells) + " |")
    for title, metrics, kind in (("Retrieval", RETRIEVAL_METRICS, "retrieval"),
                                 ("Spoken intent", CLASSIFICATION_METRICS, "classification")):
        sel = [r for r in rows if r["kind"] == kind]
        if not sel:
            continue
        out += ["", f"## {title}", "", "| task | source | dim | " + " | ".join(n for _, n in metrics) + " |",
                "|---|---|---|" + "---|" * len(metrics)]
        for r in sorted(sel, key=lambda r: (r["task"], r["source"], -r["dim"])):
            out.append(f"| {r['task']} | {r['source']} | {r['dim']} | "
                       + " | ".join(_fmt(r["metrics"].get(k)) for k, _ in metrics) + " |")
    if info.get("skipped"):
        out += ["", "## Sources not run", ""]
        out += [f"- {t} / {s}: {why}" for t, d in info["skipped"].items() for s, why in d.items()]
    return "\n".join(out) + "\n"


def model_index(rows: list[dict], tasks: dict, model_name: str) -> str:
    """The model card's `model-index` YAML block (MTEB convention: values x 100; dim in metric args)."""
    from huggingface_hub import EvalResult, ModelCardData

    results = []
    for r in sorted(rows, key=lambda r: (r["task"], r["source"], -r["dim"])):
        meta = tasks[r["task"]].metadata
        wanted = RETRIEVAL_METRICS[:4] if r["kind"] == "retrieval" else CLASSIFICATION_METRICS
        for key, name in wanted:
            if key not in r["metrics"]:
                continue
            results.append(EvalResult(
                task_type=meta.type, task_name=meta.name,
                dataset_type=HUB_IDS.get(r["source"], meta.dataset["path"]),
                dataset_name=f"WolofMRL {meta.name} ({r['source']})", dataset_config=r["source"],
                dataset_split=r["split"], dataset_revision=meta.dataset["revision"] if r["source"].startswith(
                    "offline") else None,
                metric_type=key, metric_name=f"{name} (dim {r['dim']})", metric_value=round(100 * r["metrics"][key], 2),
                metric_args={"embed_dim": r["dim"]}))
    return ModelCardData(model_name=model_name, eval_results=results).to_yaml() + "\n"


def plot_score_vs_dim(rows: list[dict], path: Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for t, s in sorted({(r["task"], r["source"]) for r in rows}):
        pts = sorted((r["dim"], 100 * r["main_score"]) for r in rows if r["task"] == t and r["source"] == s)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{t} ({s})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("embedding dim (Matryoshka prefix)")
    ax.set_ylabel("main score x 100 (nDCG@10 / accuracy)")
    ax.set_title(textwrap.fill(title, 80), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_intent_set(args, out: Path) -> None:
    """The offline intent set's zero-shot / k-shot / probe tasks for --model (named by its strategy) and every
    --intent-model, both conditions (eval/intent_tasks.py)."""
    import intent_tasks

    config = json.loads((Path(args.model) / "config.json").read_text())
    models = {config.get("strategy", "model"): args.model}
    bad = [m for m in args.intent_model if "=" not in m]
    if bad:
        raise SystemExit(f"--intent-model {bad[0]!r}: expected NAME=FOLDER, e.g. dual=ckpt/wolofmrl-dual")
    models.update(m.split("=", 1) for m in args.intent_model)
    data, names, info = intent_tasks.offline_data(args.intent_set)
    intent_tasks.run(models, data, names, info, out, device=args.device)
    print((out / "scores.md").read_text())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a WolofMRL model folder")
    p.add_argument("--dims", default="all", help="'all' (config.matryoshka_dims), 'full', or a list: 384,128,32")
    p.add_argument("--out", default="results")
    p.add_argument("--data", default="data/offline", help="corpus root holding test/*.parquet")
    p.add_argument("--tasks", default="", help="comma list of task-name fragments (e.g. speech,intent); default all")
    p.add_argument("--sources", default="", help="comma list of sources (offline, fleurs, kallaama, offline-mediawiki, "
                                                  "offline-udhr, wolbanking77); default: every readable one")
    p.add_argument("--no-hub", action="store_true", help="do not try the Hugging Face Hub")
    p.add_argument("--limit", type=int, default=None, help="keep this many sentences per source (quick runs)")
    p.add_argument("--batch-size", type=int, default=8, help="audio clips per forward pass (text: 4x)")
    p.add_argument("--device", default=None)
    p.add_argument("--name", default=None, help="model name in results (default wolofmrl/<folder>)")
    p.add_argument("--analysis", action="store_true", help="also run eval/analysis.py on the offline a2t set")
    p.add_argument("--note", default="", help="said in the tables and plot titles (e.g. 'tiny random model')")
    # ---- the offline spoken-intent set (eval/intents.py, eval/intent_tasks.py): written to <out>/intent
    p.add_argument("--intent-set", default=None, help="also run the intent tasks on this set, clean and hard")
    p.add_argument("--intent-model", action="append", default=[], help="NAME=FOLDER, more models for the intent "
                                                                        "tasks (e.g. dual=ckpt/wolofmrl-dual)")
    p.add_argument("--intent-only", action="store_true", help="with --intent-set: skip the rest of the suite")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message=".*ill-defined and being set to 0.0.*")  # labels never predicted
    for noisy in ("mteb", "datasets", "httpx", "urllib3", "faiss", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import mteb
    from mteb.cache import ResultCache
    from wolofmrl_mteb import WolofMRLEmbedder, WolofMRLEncoder, model_revision, wolofmrl_tasks

    start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.intent_set:
        run_intent_set(args, out / "intent")
        if args.intent_only:
            return
    embedder = WolofMRLEmbedder(args.model, device=args.device, audio_batch_size=args.batch_size,
                                text_batch_size=4 * args.batch_size)
    dims = parse_dims(args.dims, embedder.matryoshka_dims, embedder.hidden)
    names = [s for s in args.tasks.split(",") if s]
    sources = [s for s in args.sources.split(",") if s] or None
    tasks = wolofmrl_tasks(names or None, data_dir=args.data, limit=args.limit, hub=False if args.no_hub else None)
    by_name = {t.metadata.name: t for t in tasks}
    if sources is not None:  # each task keeps the requested sources it has
        for t in tasks:
            keep = [s for s in sources if s in t.metadata.hf_subsets]
            t.hf_subsets = keep
            t.skipped = {s: "not requested (--sources)" for s in t.metadata.hf_subsets if s not in keep}
    for t in tasks:  # load once, keep loaded across dims
        if t.hf_subsets:
            t.load_data()
    runnable = [t for t in tasks if t.hf_subsets]
    if not runnable:
        raise SystemExit(f"nothing to run: no readable source for {[t.metadata.name for t in tasks]} "
                         f"(offline data under {args.data}/test? Hub?). Skipped: "
                         f"{ {t.metadata.name: t.skipped for t in tasks} }")

    cache = ResultCache(out / "mteb")
    rows = []
    for dim in dims:
        t0 = time.time()
        encoder = WolofMRLEncoder(embedder=embedder, embed_dim=dim, name=args.name)
        res = mteb.evaluate(encoder, runnable, cache=cache, overwrite_strategy="always", co2_tracker=False,
                            show_progress_bar=False, encode_kwargs={"batch_size": args.batch_size})
        rows += flatten(res, dim, by_name)
        logger.info("dim %d: %d scores in %.1f s", dim, len(rows), time.time() - t0)

    strategy = embedder.config.strategy
    marker = Path(args.model) / "wolofmrl_build.json"
    build = json.loads(marker.read_text()) if marker.is_file() else {}
    info = {"model": str(args.model), "model_name": encoder.mteb_model_meta.name,
            "revision": model_revision(args.model),
            "strategy": strategy, "data": args.data, "limit": args.limit, "dims": dims,
            "untrained": build.get("args", {}).get("delta", "x") in (None, "none"),
            "tasks": [t.metadata.name for t in runnable], "note": args.note,
            "data_note": next((t.data_note for t in tasks if t.data_note), ""),
            "skipped": {t.metadata.name: t.skipped for t in tasks if t.skipped},
            "truncated_clips": embedder.n_truncated}
    (out / "scores.json").write_text(json.dumps(rows, indent=1))
    (out / "scores.md").write_text(markdown(rows, info))
    (out / "model-index.yaml").write_text(model_index(rows, by_name, info["model_name"]))
    untrained = "untrained adapter" if info["untrained"] else ""
    caveats = ", ".join(x for x in (info["data_note"], untrained, args.note) if x)
    plot_score_vs_dim(rows, out / "score_vs_dim.png", f"{info['model_name']} on {args.data}"
                      + (f" ({caveats})" if caveats else ""))
    if args.analysis:
        import analysis

        task = next((t for t in tasks if t.metadata.name == "WolofSpeechToFrenchTextRetrieval"), None)
        if task is None:
            task = wolofmrl_tasks(["WolofSpeechToFrenchText"], data_dir=args.data, limit=args.limit,
                                  sources=["offline"])[0]
        analysis.run_analysis(embedder, task.source_set("offline"), out / "analysis",
                              note=", ".join(x for x in ("offline a2t", caveats) if x))
    info["seconds"] = round(time.time() - start, 1)
    (out / "run.json").write_text(json.dumps(info, indent=1))
    print((out / "scores.md").read_text())
    print(f"wrote {out}/scores.md, scores.json, model-index.yaml, score_vs_dim.png, mteb/ in {info['seconds']} s")


if __name__ == "__main__":
    main()
