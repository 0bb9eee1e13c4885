"""Run the WolofMRL benchmark suite through mteb at every Matryoshka dim, clean and hard, for each model.

    python eval/run.py --model checkpoints/wolofmrl-base --dims all --out results/
    python eval/run.py --model fusion=checkpoints/wolofmrl-base --model dual=checkpoints/wolofmrl-dual \
        --hard data/hard --dims 384,64 --out results/                  # clean vs hard, fusion vs dual vs topline
    python eval/run.py --model checkpoints/wolofmrl-base --data data/fixture --tasks speech,intent --limit 20 \
        --out /tmp/r

Conditions (each model is scored on each):
    unseen-clean / unseen-hard   with --unseen (eval/unseen.py's output): the headline, printed first. Sources
              no training split draws on, held-out voices: Wolof speech -> French text, French speech -> French
              text (unseen strings, French man pages), the written topline, chance and the length-only floor
    offline   the --data corpus's test split (every task), when it exists
    clean     <--hard>/clean: the split's sentences voiced only by held-out voices, undegraded (eval/hard.py)
    hard      <--hard>/hard: the same clips degraded by the hard preset (noise, speed, room, telephone, codec, rate)
On clean and hard only the split's retrieval tasks run (speech -> French, French -> speech, and the text topline:
Wolof text -> French text through the same text side, `query` prefix). The tables put them side by side.

Writes to --out:
    mteb/<condition>/results/<model>/<revision>/experiments/embed_dim_<d>/<Task>.json   mteb's own files
    scores.json          every metric of every (model, condition, task, source, dim), flat
    scores.md            markdown tables: clean vs hard, main score by dim, retrieval and intent metrics
    model-index.yaml     the model card's `model-index` block of the first model (values x 100, one entry per
                         condition/task/source, unseen sources first, dim in args)
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


def flatten(results, dim: int, tasks: dict, model: str = "", condition: str = "offline") -> list[dict]:
    """mteb results at one dim -> flat rows {model, condition, task, source, split, dim, kind, main_*, metrics}."""
    rows = []
    for tr in results.task_results:
        meta = tasks[tr.task_name].metadata
        kind = "retrieval" if meta.simplified_task_type == "retrieval" else "classification"
        for split, subsets in tr.scores.items():
            for s in subsets:
                metrics = {k: v for k, v in s.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
                rows.append({"model": model, "condition": condition, "task": tr.task_name, "source": s["hf_subset"],
                             "split": split, "dim": dim, "kind": kind, "main_metric": meta.main_score,
                             "main_score": float(s["main_score"]), "metrics": metrics})
    return rows


def _fmt(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


SPEECH, TOPLINE = "WolofSpeechToFrenchTextRetrieval", "WolofFrenchTextRetrieval"


def side_by_side(rows: list[dict]) -> list[str]:
    """Clean vs hard (every condition as columns): R@1 / R@10 per model, task and dim, then speech / topline."""
    conds = [c for c in ("offline", "clean", "hard") if any(r["condition"] == c for r in rows)]
    by = {(r["model"], r["condition"], r["task"], r["dim"]): r["metrics"] for r in rows if r["source"] == "offline"}
    keys = sorted({(m, t, d) for m, _, t, d in by}, key=lambda k: (k[0], k[1], -k[2]))
    out = ["## Clean vs hard (synthetic speech: TTS voices, not Wolof speakers)", "",
           "R@1 / R@10 x 100. `clean`: held-out voices, no degradation; `hard`: the same clips degraded (eval/hard.py);"
           " `offline`: the --data test split. WolofFrenchTextRetrieval is the text topline (gold Wolof text).", "",
           "| model | task | dim | " + " | ".join(f"{c} R@1 | {c} R@10" for c in conds) + " |",
           "|---|---|---|" + "---|---|" * len(conds)]
    for m, t, d in keys:
        cells = [f"{_fmt(by[(m, c, t, d)].get('recall_at_1'))} | {_fmt(by[(m, c, t, d)].get('recall_at_10'))}"
                 if (m, c, t, d) in by else "– | –" for c in conds]
        out.append(f"| {m} | {t} | {d} | " + " | ".join(cells) + " |")
    ratios = []
    for m, c, t, d in sorted(by, key=lambda k: (k[0], k[1], -k[3])):
        top = by.get((m, c, TOPLINE, d))
        if t == SPEECH and top and top.get("recall_at_10") and top.get("recall_at_1"):
            sp = by[(m, c, t, d)]
            ratios.append(f"| {m} | {c} | {d} | {sp['recall_at_10'] / top['recall_at_10']:.2f} | "
                          f"{sp['recall_at_1'] / top['recall_at_1']:.2f} |")
    if ratios:
        out += ["", "Speech -> French as a fraction of the text topline (targets on hard at 384: R@10 >= 0.8, "
                "R@1 >= 0.5):", "", "| model | condition | dim | R@10 / topline | R@1 / topline |",
                "|---|---|---|---|---|", *ratios]
    return out + [""]


def unseen_section(rows: list[dict], baselines: dict) -> list[str]:
    """The headline tables: unseen sources, per condition; each speech figure beside its written topline, chance
    and the length-only floor (eval/unseen.py)."""
    from unseen_tasks import TOPLINE

    by = {(r["model"], r["condition"], r["task"], r["source"], r["dim"]): r["metrics"] for r in rows}
    out = ["## Unseen sources (the headline; synthetic speech: held-out TTS voices, not people)", "",
           "Sources no training split draws on (eval/unseen.py). x 100. `topline`: the written query through the "
           "text side; `chance`: a random ranking; `floor`: passages ranked by |length - (a + b x clip seconds)|, "
           "a and b fitted on the dev split. A speech figure at or below the floor carries nothing of the content.",
           ""]
    for cond in sorted({r["condition"] for r in rows if r["condition"].startswith("unseen-")}):
        keys = sorted({(m, t, s, d) for m, c, t, s, d in by if c == cond and t != TOPLINE},
                      key=lambda k: (k[0], k[1], k[2], -k[3]))
        out += [f"### {cond}", "", "| model | task | subset | dim | R@1 | R@10 | nDCG@10 | topline R@1 | "
                "topline R@10 | R@10 / topline | chance R@1 | chance R@10 | floor R@1 | floor R@10 |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for m, t, s, d in keys:
            sp, top = by[(m, cond, t, s, d)], by.get((m, cond, TOPLINE, s, d), {})
            b = baselines.get(f"{cond}/{s}", {})
            ch, fl = b.get("chance", {}), b.get("floor", {})
            ratio = (f"{sp['recall_at_10'] / top['recall_at_10']:.2f}" if top.get("recall_at_10") else "–")
            out.append(f"| {m} | {t} | {s} | {d} | {_fmt(sp.get('recall_at_1'))} | {_fmt(sp.get('recall_at_10'))} | "
                       f"{_fmt(sp.get('ndcg_at_10'))} | {_fmt(top.get('recall_at_1'))} | "
                       f"{_fmt(top.get('recall_at_10'))} | {ratio} | {_fmt(ch.get('recall_at_1'))} | "
                       f"{_fmt(ch.get('recall_at_10'))} | {_fmt(fl.get('recall_at_1'))} | "
                       f"{_fmt(fl.get('recall_at_10'))} |")
        out.append("")
    sizes = sorted({(k, v["queries"], v["passages"]) for k, v in baselines.items()})
    if sizes:
        out += ["Sizes: " + "; ".join(f"{k}: {q} queries, {p} passages" for k, q, p in sizes) + ".", ""]
    return out


def markdown(rows: list[dict], info: dict) -> str:
    """scores.md: header, clean vs hard (with --hard), main score by dim, retrieval and intent metrics."""
    dims = sorted({r["dim"] for r in rows}, reverse=True)
    keys = sorted({(r["model"], r["condition"], r["task"], r["source"]) for r in rows})
    by = {(r["model"], r["condition"], r["task"], r["source"], r["dim"]): r for r in rows}
    out = [f"# WolofMRL benchmark: {', '.join(f'`{m}`' for m in info['models'])}", "",
           "Models: " + "; ".join(f"`{m}` = `{v['model']}` (revision `{v['revision']}`, strategy `{v['strategy']}`)"
                                  for m, v in info["models"].items()) + ". "
           f"Offline data: `{info['data']}` test split ({info.get('data_note') or 'not used'})"
           + (f", limited to {info['limit']} sentences" if info.get("limit") else "") + ". "
           "Scores x 100. Offline audio is synthetic, never Wolof speakers; "
           "offline intent labels are derived by rule from source keys (eval/offline_intents.py)."
           + (f" Note: {info['note']}." if info.get("note") else ""), ""]
    if any(v.get("untrained") for v in info["models"].values()):
        out += ["**A model's speech adapter is untrained (built with `--delta none`): its speech scores are "
                "chance-level by construction.**", ""]
    if any(r["condition"].startswith("unseen-") for r in rows):
        out += unseen_section(rows, info.get("baselines", {}))
    if any(r["condition"] in ("clean", "hard") for r in rows):
        out += side_by_side(rows)
    out += ["## Main score by embedding dim", "",
            "| model | condition | task | source | metric | " + " | ".join(str(d) for d in dims) + " |",
            "|---|---|---|---|---|" + "---|" * len(dims)]
    for m, c, t, s in keys:
        metric = next(r for r in rows if (r["model"], r["condition"], r["task"], r["source"]) == (m, c, t, s))
        cells = [_fmt(by[(m, c, t, s, d)]["main_score"]) if (m, c, t, s, d) in by else "–" for d in dims]
        name = METRIC_NAMES.get(metric["main_metric"], metric["main_metric"])
        out.append(f"| {m} | {c} | {t} | {s} | {name} | " + " | ".join(cells) + " |")
    for title, metrics, kind in (("Retrieval", RETRIEVAL_METRICS, "retrieval"),
                                 ("Spoken intent", CLASSIFICATION_METRICS, "classification")):
        sel = [r for r in rows if r["kind"] == kind]
        if not sel:
            continue
        out += ["", f"## {title}", "", "| model | condition | task | source | dim | "
                + " | ".join(n for _, n in metrics) + " |", "|---|---|---|---|---|" + "---|" * len(metrics)]
        for r in sorted(sel, key=lambda r: (r["model"], r["condition"], r["task"], r["source"], -r["dim"])):
            out.append(f"| {r['model']} | {r['condition']} | {r['task']} | {r['source']} | {r['dim']} | "
                       + " | ".join(_fmt(r["metrics"].get(k)) for k, _ in metrics) + " |")
    if info.get("skipped"):
        out += ["", "## Sources not run", ""]
        out += [f"- {t} / {s}: {why}" for t, d in info["skipped"].items() for s, why in d.items()]
    return "\n".join(out) + "\n"


def model_index(rows: list[dict], tasks: dict, model_name: str) -> str:
    """The model card's `model-index` YAML block (MTEB convention: values x 100; dim in metric args), one result
    per (condition, task, source): the unseen-source conditions first (the headline), then clean / hard, then
    offline. The dataset config is `[<condition>/]<source>/<task>` (no condition for offline) and the name
    `WolofMRL <task> (<source>[, <condition>])`: huggingface_hub merges results that share task type, dataset type,
    config and split (`EvalResult.unique_identifier`), and two tasks of one dataset (speech -> text and text ->
    speech) or one task under two conditions must stay apart."""
    from huggingface_hub import EvalResult, ModelCardData

    order = {c: i for i, c in enumerate(("unseen-clean", "unseen-hard", "clean", "hard", "offline"))}
    results = []
    for r in sorted(rows, key=lambda r: (order.get(r["condition"], len(order)), r["condition"], r["task"],
                                         r["source"], -r["dim"])):
        offline = r["condition"] == "offline"
        meta = tasks[r["task"]].metadata
        wanted = RETRIEVAL_METRICS[:4] if r["kind"] == "retrieval" else CLASSIFICATION_METRICS
        for key, name in wanted:
            if key not in r["metrics"]:
                continue
            results.append(EvalResult(
                task_type=meta.type, task_name=meta.name,
                dataset_type=HUB_IDS.get(r["source"], meta.dataset["path"]),
                dataset_name=f"WolofMRL {meta.name} ({r['source']}{'' if offline else ', ' + r['condition']})",
                dataset_config="/".join(([] if offline else [r["condition"]]) + [r["source"], meta.name]),
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
    """The offline intent set's zero-shot / k-shot / probe tasks for every --model (label=folder) and every
    --intent-model, both conditions (eval/intent_tasks.py)."""
    import intent_tasks

    bad = [m for m in args.intent_model if "=" not in m]
    if bad:
        raise SystemExit(f"--intent-model {bad[0]!r}: expected NAME=FOLDER, e.g. dual=ckpt/wolofmrl-dual")
    models = dict(args.models)
    models.update(m.split("=", 1) for m in args.intent_model)
    data, names, info = intent_tasks.offline_data(args.intent_set)
    intent_tasks.run(models, data, names, info, out, device=args.device)
    print((out / "scores.md").read_text())


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True,
                   help="a WolofMRL model folder, or label=folder; repeat to compare (e.g. fusion=..., dual=...)")
    p.add_argument("--dims", default="all", help="'all' (config.matryoshka_dims), 'full', or a list: 384,128,32")
    p.add_argument("--out", default="results")
    p.add_argument("--data", default="data/offline", help="corpus root holding test/*.parquet")
    p.add_argument("--hard", default=None, help="eval/hard.py's output folder: adds the clean and hard conditions")
    p.add_argument("--unseen", default=None, help="eval/unseen.py's output folder: adds the unseen-source "
                                                  "conditions (unseen-clean, unseen-hard), reported first")
    p.add_argument("--tasks", default="", help="comma list of task-name fragments (e.g. speech,intent); default all")
    p.add_argument("--sources", default="", help="comma list of sources (offline, fleurs, kallaama, offline-mediawiki, "
                                                  "offline-udhr, wolbanking77, fr, de...); default: every readable one")
    p.add_argument("--no-hub", action="store_true", help="do not try the Hugging Face Hub")
    p.add_argument("--limit", type=int, default=None, help="keep this many sentences per source (quick runs)")
    p.add_argument("--batch-size", type=int, default=8, help="audio clips per forward pass (text: 4x)")
    p.add_argument("--device", default=None)
    p.add_argument("--name", default=None, help="model name in results (default wolofmrl/<folder>); one model only")
    p.add_argument("--analysis", action="store_true", help="also run eval/analysis.py on the offline a2t set")
    p.add_argument("--note", default="", help="said in the tables and plot titles (e.g. 'tiny random model')")
    # ---- the offline spoken-intent set (eval/intents.py, eval/intent_tasks.py): written to <out>/intent
    p.add_argument("--intent-set", default=None, help="also run the intent tasks on this set, clean and hard")
    p.add_argument("--intent-model", action="append", default=[], help="NAME=FOLDER, more models for the intent "
                                                                        "tasks (e.g. dual=ckpt/wolofmrl-dual)")
    p.add_argument("--intent-only", action="store_true", help="with --intent-set: skip the rest of the suite")
    args = p.parse_args(argv)
    args.models = dict(m.split("=", 1) if "=" in m else (Path(m).name, m) for m in args.model)
    if args.name and len(args.models) > 1:
        p.error("--name names one model; with several --model use label=folder")
    return args


def condition_tasks(args, condition: str, data_dir: str) -> tuple[list, dict]:
    """(runnable tasks with data loaded, every task by name) of one condition."""
    from mteb_tasks import RETRIEVAL_ON_SPLIT, wolofmrl_tasks

    names = [s for s in args.tasks.split(",") if s] or None
    if condition.startswith("unseen-"):
        from unseen_tasks import unseen_tasks

        tasks = unseen_tasks(data_dir, condition.split("-", 1)[1],
                             names if names and any("unseen" in n.lower() for n in names) else None)
        for t in tasks:
            if t.hf_subsets:
                t.load_data()
        return [t for t in tasks if t.hf_subsets], {t.metadata.name: t for t in tasks}
    if names and all("unseen" in n.lower() for n in names):  # --tasks unseen: the unseen conditions only
        return [], {}
    tasks = wolofmrl_tasks(names, data_dir=data_dir, limit=args.limit, hub=False if args.no_hub else None)
    if condition != "offline":  # a hard-condition folder holds one split: its retrieval tasks, offline source
        tasks = [t for t in tasks if t.metadata.name in RETRIEVAL_ON_SPLIT]
        sources = ["offline"]
    else:
        sources = [s for s in args.sources.split(",") if s] or None
    if sources is not None:  # each task keeps the requested sources it has
        for t in tasks:
            t.hf_subsets = [s for s in sources if s in t.metadata.hf_subsets]
            t.skipped = {s: "not requested (--sources)" for s in t.metadata.hf_subsets if s not in t.hf_subsets}
    for t in tasks:  # load once, keep loaded across dims and models
        if t.hf_subsets:
            t.load_data()
    return [t for t in tasks if t.hf_subsets], {t.metadata.name: t for t in tasks}


def conditions(args) -> dict[str, str]:
    """condition -> corpus root: offline (--data) always tried, clean / hard with --hard."""
    out = {"offline": args.data}
    if args.hard:
        for c in ("clean", "hard"):
            if not (Path(args.hard) / c / "test").is_dir():
                raise SystemExit(f"--hard {args.hard}: no {c}/test; build it with `python eval/hard.py build "
                                 f"--out {args.hard}`")
            out[c] = str(Path(args.hard) / c)
    if args.unseen:
        import unseen

        if not unseen.available(args.unseen):
            raise SystemExit(f"--unseen {args.unseen}: nothing built; run `python eval/unseen.py build --out "
                             f"{args.unseen}`")
        out |= {f"unseen-{c}": args.unseen for c in unseen.CONDITIONS}
    return out


def unseen_baselines(args, conds) -> dict:
    """{"<condition>/<subset>": eval/unseen.py's chance and length-only floor} of every built speech subset."""
    import unseen

    out = {}
    for c in conds:
        if c.startswith("unseen-"):
            for s in unseen.available(args.unseen):
                b = unseen.baselines(args.unseen, s, c.split("-", 1)[1])
                out[f"{c}/{s}"] = b
    return out


def score_model(args, label: str, folder: str, tasks: dict, out: Path) -> tuple[list[dict], dict]:
    """Every condition's runnable tasks at every dim for one model: (rows, model info)."""
    import mteb
    from mteb.cache import ResultCache
    from wolofmrl_mteb import WolofMRLEmbedder, WolofMRLEncoder, model_revision

    embedder = WolofMRLEmbedder(folder, device=args.device, audio_batch_size=args.batch_size,
                                text_batch_size=4 * args.batch_size)
    dims = parse_dims(args.dims, embedder.matryoshka_dims, embedder.hidden)
    rows = []
    for condition, (runnable, by_name) in tasks.items():
        cache = ResultCache(out / "mteb" / condition)
        for dim in dims:
            t0 = time.time()
            encoder = WolofMRLEncoder(embedder=embedder, embed_dim=dim, name=args.name)
            res = mteb.evaluate(encoder, runnable, cache=cache, overwrite_strategy="always", co2_tracker=False,
                                show_progress_bar=False, encode_kwargs={"batch_size": args.batch_size})
            rows += flatten(res, dim, by_name, label, condition)
            logger.info("%s / %s / dim %d: %d scores in %.1f s", label, condition, dim, len(rows), time.time() - t0)
    marker = Path(folder) / "wolofmrl_build.json"
    build = json.loads(marker.read_text()) if marker.is_file() else {}
    info = {"model": str(folder), "name": encoder.mteb_model_meta.name, "revision": model_revision(folder),
            "strategy": embedder.config.strategy, "dims": dims, "truncated_clips": embedder.n_truncated,
            "untrained": build.get("args", {}).get("delta", "x") in (None, "none")}
    return rows, info | {"embedder": embedder}


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message=".*ill-defined and being set to 0.0.*")  # labels never predicted
    for noisy in ("mteb", "datasets", "httpx", "urllib3", "faiss", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.intent_set:
        run_intent_set(args, out / "intent")
        if args.intent_only:
            return
    tasks = {c: condition_tasks(args, c, d) for c, d in conditions(args).items()}
    tasks = {c: v for c, v in tasks.items() if v[0]}
    if not tasks:
        raise SystemExit(f"nothing to run: no readable source (offline data under {args.data}/test? --hard? Hub?)")
    rows, models = [], {}
    for label, folder in args.models.items():
        r, models[label] = score_model(args, label, folder, tasks, out)
        rows += r
    first = next(iter(models.values()))
    all_tasks = {n: t for _, by_name in tasks.values() for n, t in by_name.items()}
    data_note = next((t.data_note for _, by in tasks.values() for t in by.values() if t.data_note), "")
    info = {"models": {m: {k: v for k, v in i.items() if k != "embedder"} for m, i in models.items()},
            "data": args.data, "hard": args.hard, "limit": args.limit, "note": args.note, "data_note": data_note,
            "conditions": list(tasks), "tasks": sorted({t.metadata.name for ts, _ in tasks.values() for t in ts}),
            "baselines": unseen_baselines(args, tasks) if args.unseen else {},
            "skipped": {f"{c}/{n}": t.skipped for c, (_, by) in tasks.items() for n, t in by.items() if t.skipped}}
    (out / "scores.json").write_text(json.dumps(rows, indent=1))
    (out / "scores.md").write_text(markdown(rows, info))
    mine = [r for r in rows if r["model"] == next(iter(models))]
    (out / "model-index.yaml").write_text(model_index(mine, all_tasks, first["name"]))
    head = [r for r in mine if r["condition"] == next(iter(tasks))]
    caveats = ", ".join(x for x in (data_note, "untrained adapter" if first["untrained"] else "", args.note) if x)
    plot_score_vs_dim(head, out / "score_vs_dim.png", f"{first['name']} ({next(iter(tasks))})"
                      + (f" ({caveats})" if caveats else ""))
    if args.analysis:
        run_analysis(args, first["embedder"], caveats, out)
    info["seconds"] = round(time.time() - start, 1)
    (out / "run.json").write_text(json.dumps(info, indent=1))
    print((out / "scores.md").read_text())
    print(f"wrote {out}/scores.md, scores.json, model-index.yaml, score_vs_dim.png, mteb/ in {info['seconds']} s")


def run_analysis(args, embedder, caveats: str, out: Path):
    """eval/analysis.py on the offline Wolof speech -> French text set of --data."""
    import analysis
    from mteb_tasks import wolofmrl_tasks

    task = wolofmrl_tasks(["WolofSpeechToFrenchText"], data_dir=args.data, limit=args.limit, sources=["offline"])[0]
    analysis.run_analysis(embedder, task.source_set("offline"), out / "analysis",
                          note=", ".join(x for x in ("offline a2t", caveats) if x))


if __name__ == "__main__":
    main()
