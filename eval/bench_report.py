"""eval/bench.py's report: the targets with their measured ratios (`summarise`) and bench.md (`markdown`)."""
from __future__ import annotations

from asr import TOKENS_PER_SECOND

TARGETS = {"gpu_speedup_vs_whisper": 50.0, "cpu_x_real_time": 20.0, "funnel_recall_fraction": 0.99,
           "funnel_compute_ratio": 8.0}


def fmt(x, nd=1):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)

def summarise(r: dict) -> dict:
    """The three targets, each with its measured ratio (also when missed)."""
    s = {}
    for key, part in (("gpu_vs_whisper", _gpu_target), ("cpu_real_time", _cpu_target), ("funnel", _funnel_target)):
        value = part(r)
        if value:
            s[key] = value
    return s


def _gpu_target(r: dict) -> dict | None:
    gpu = [x for x in r.get("speech", []) if x.get("device_kind") == "cuda" and "speedup_vs_asr" in x]
    if gpu:
        best_emb = max((x for x in r["speech"] if x.get("device_kind") == "cuda" and "clips_per_s" in x),
                       key=lambda x: x["clips_per_s"])
        best_asr = max(gpu, key=lambda x: x["asr_clips_per_s"])
        matched = max(gpu, key=lambda x: x["speedup_vs_asr"])
        ratio = best_emb["clips_per_s"] / best_asr["asr_clips_per_s"]
        return {
            "target": f">= {TARGETS['gpu_speedup_vs_whisper']:g}x on one H100", "device": best_emb["device"],
            "best_vs_best_ratio": round(ratio, 1),
            "best_embedding": {k: best_emb[k] for k in ("dtype", "batch", "clips_per_s", "x_real_time")},
            "best_whisper": {k: best_asr[k] for k in ("dtype", "batch", "asr_clips_per_s", "asr_x_real_time")},
            "best_same_batch_same_dtype_ratio": matched["speedup_vs_asr"],
            "at": {k: matched[k] for k in ("dtype", "batch")},
            "met": bool(ratio >= TARGETS["gpu_speedup_vs_whisper"]), "clips": r["inputs"]["clip_kind"]}
    return None


def _cpu_target(r: dict) -> dict | None:
    cpu = [x for x in r.get("speech", []) if x.get("device_kind") == "cpu" and x.get("dtype") == "fp32"
           and "x_real_time" in x]
    if cpu:
        best = max(cpu, key=lambda x: x["x_real_time"])
        out = {"target": f">= {TARGETS['cpu_x_real_time']:g}x real time on 2 CPU cores, full dim",
               "device": best["device"], "x_real_time": best["x_real_time"], "batch": best["batch"],
               "mean_clip_s": best["mean_clip_s"],
               "ratio_to_target": round(best["x_real_time"] / TARGETS["cpu_x_real_time"], 2),
               "met": bool(best["x_real_time"] >= TARGETS["cpu_x_real_time"])}
        asr = [x for x in cpu if "speedup_vs_asr" in x]
        if asr:
            out["best_same_batch_ratio_vs_whisper"] = max(x["speedup_vs_asr"] for x in asr)
        return out
    return None


def _funnel_target(r: dict) -> dict | None:
    ret = r.get("retrieval") or {}
    rows = ret.get("funnel_rows") or []
    if rows:
        biggest = max(x["N"] for x in rows)
        names = list(ret.get("queries", {}))
        cand = [x for x in rows if x["N"] == biggest and x["compute_ratio"] >= TARGETS["funnel_compute_ratio"]
                and x.get("variant", "as is") == "as is"]
        proxy = [x for x in rows if x["N"] == biggest and x["compute_ratio"] >= TARGETS["funnel_compute_ratio"]
                 and x.get("variant") == "PCA-rotated proxy"]
        out = {"target": ">= 99 % of full-dim Recall@10 at >= 8x less compute", "N": biggest}
        for name in names:
            def rank(x):
                frac = x.get(f"recall_fraction_{name}")
                return (-1 if frac is None else frac, x[f"overlap@10_vs_full_{name}"], x["compute_ratio"])

            best = max(cand, key=rank, default=None)
            if best is None:
                continue
            p = max(proxy, key=rank, default=None)
            if p is not None:
                keys = ("d_small", "K", "compute_ratio", f"recall_fraction_{name}", f"overlap@10_vs_full_{name}")
                out[f"{name}_pca_proxy"] = {k: p[k] for k in keys}
            out[name] = {"d_small": best["d_small"], "K": best["K"], "compute_ratio": best["compute_ratio"],
                         "recall@10": best[f"recall@10_{name}"], "recall@10_full": best[f"recall@10_full_{name}"],
                         "recall_fraction": best[f"recall_fraction_{name}"],
                         "overlap@10_vs_full": best[f"overlap@10_vs_full_{name}"],
                         "met": bool((best[f"recall_fraction_{name}"] or 0) >= TARGETS["funnel_recall_fraction"])}
        return out
    return None

def _header(r: dict) -> list[str]:
    e, inp, m = r["environment"], r["inputs"], r.get("model", {})
    lines = [f"# WolofMRL speed benchmark ({r['mode']})", "",
             f"- Run: {r['started']}, {r.get('wall_s', '?')} s wall. Devices: "
             + (f"GPU **{e.get('gpu')}**; " if e.get("gpu") else "") + f"CPU **{e['cpu']}** ({e['cpu_cores_visible']} "
             f"cores visible; CPU rows use {e['cpu_threads_for_cpu_rows']} threads). torch {e['torch']}, "
             f"transformers {e['transformers']}, faiss {e.get('faiss')}. Load average at start: "
             f"{e.get('load_average_at_start')}.",
             f"- Model: `{r['args']['model']}` ({m.get('strategy')}, {m.get('speech_encoder')} + "
             f"{m.get('text_encoder')}, {m.get('params_M')} M params, dim {m.get('embedding_dim')}, attention "
             f"{m.get('attention')}, trained delta: "
             f"{m.get('trained_delta') or 'none (untrained adapter, identity head)'}). Baseline: Whisper-base "
             f"`{r.get('whisper_dir')}` ({m.get('whisper_params_M')} M params, attention "
             f"{m.get('whisper_attention')}), greedy, language `{r['args']['asr_language']}`, max_new_tokens = "
             f"{TOKENS_PER_SECOND}/s of the longest clip + 16, 30 s log-mel (as Whisper requires).",
             f"- Clips: **{inp['clip_kind']}** — {inp['clip_source']}; {inp['n_utterances']} base utterances joined "
             f"with 0.2–0.6 s pauses and cut to durations spread over 2–30 s (every prefix of the pool spread too). "
             "Synthetic speech is not Wolof speakers.",
             f"- Passages: {inp['passage_source']}. Query pairs: {inp['pair_source']}.",
             "- Embedding time covers feature extraction (log-mel on the device), host→device copy, the model and the "
             "copy back; Whisper time covers its log-mel on the device and `generate`. Both run length-sorted batches "
             "of the same clips. bf16: autocast for WolofMRL (the library path); Whisper's weights cast to bf16 "
             "(its faster option for step-by-step decoding, so the baseline gets its best case).",
             ]
    if any(x.get("device_kind") == "cpu" for x in r.get("speech", [])):
        lines.append("- CPU figures are noisy where the machine is shared (see load average); GPU figures are "
                     "medians of repeats where a run took < 0.5 s.")
    if r.get("notes"):
        lines += [f"- {n}" for n in r["notes"]]
    return lines


def _targets(r: dict) -> list[str]:
    lines: list[str] = []
    s = r.get("summary", {})
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    if "gpu_vs_whisper" in s:
        g = s["gpu_vs_whisper"]
        lines.append(f"| {g['target']} | **{g['best_vs_best_ratio']}×** best vs best "
                     f"({g['best_embedding']['clips_per_s']} "
                     f"clips/s {g['best_embedding']['dtype']} b={g['best_embedding']['batch']} vs "
                     f"{g['best_whisper']['asr_clips_per_s']} clips/s {g['best_whisper']['dtype']} "
                     f"b={g['best_whisper']['batch']}); best same batch & dtype "
                     f"{g['best_same_batch_same_dtype_ratio']}× ({g['at']}) — {g['device']} | "
                     f"{'yes' if g['met'] else 'no'} |")
    else:
        cpu_ratio = (s.get("cpu_real_time") or {}).get("best_same_batch_ratio_vs_whisper")
        lines.append(f"| >= {TARGETS['gpu_speedup_vs_whisper']:g}x faster than Whisper-base on one H100 | not "
                     f"measured: no GPU in this run (on this CPU, same clips and batch: {fmt(cpu_ratio)}×) | – |")
    if "cpu_real_time" in s:
        c = s["cpu_real_time"]
        lines.append(f"| {c['target']} | **{c['x_real_time']}×** real time (b={c['batch']}, mean clip "
                     f"{c['mean_clip_s']} s; {c['ratio_to_target']} of target) — {c['device']} | "
                     f"{'yes' if c['met'] else 'no'} |")
    if "funnel" in s:
        f = s["funnel"]
        for name, v in f.items():
            if isinstance(v, dict) and not name.endswith("_pca_proxy"):
                p = f.get(f"{name}_pca_proxy")
                proxy = (f" (PCA-rotated proxy of a Matryoshka head, best at >= 8×: d={p['d_small']}, K={p['K']}, "
                         f"{p['compute_ratio']}×: fraction {fmt(p[f'recall_fraction_{name}'], 3)}, overlap@10 "
                         f"{p[f'overlap@10_vs_full_{name}']})") if p else ""
                lines.append(f"| {f['target']} ({name} queries, N={f['N']:,}) | Recall@10 {v['recall@10']} vs full "
                             f"{v['recall@10_full']} = **{fmt(v['recall_fraction'], 3)}** of full at "
                             f"{v['compute_ratio']}× less compute (d={v['d_small']}, K={v['K']}); overlap@10 with "
                             f"full-dim top 10: {v['overlap@10_vs_full']}{proxy} | {'yes' if v['met'] else 'no'} |")
    return lines


def _table(title: str, header: str, rows: list[dict], cells) -> list[str]:
    """A markdown section: `header` is "a | b | c"; `cells(row)` gives a row's "x | y | z" (None: row left out)."""
    body = [c for c in map(cells, rows) if c is not None]
    if not rows:
        return []
    return ["", f"## {title}", "", f"| {header} |", "|" + "---|" * (header.count("|") + 1), *(f"| {c} |" for c in body)]


def _speech_cells(x: dict) -> str:
    if x.get("skipped"):
        return (f"{x['device']} | {x['dtype']} | {x['batch']} | {x['clips']} | | skipped ({x['skipped']})"
                + " |" * 7)
    return (f"{x['device']} | {x['dtype']} | {x['batch']} | {x['clips']} | {x['mean_clip_s']} | "
            f"{fmt(x['clips_per_s'], 2)} | {fmt(x['x_real_time'])} | {fmt(x['peak_mem_mb'])} "
            f"({fmt(x['peak_mem_above_start_mb'])}) | {fmt(x.get('asr_clips_per_s'), 3)} | "
            f"{fmt(x.get('asr_x_real_time'), 2)} | {fmt(x.get('asr_tokens_mean'))} "
            f"({x.get('asr_hit_token_cap', '–')}) | {fmt(x.get('asr_peak_mem_mb'))} | "
            f"**{fmt(x.get('speedup_vs_asr'))}**")


def _speech_table(r: dict) -> list[str]:
    return _table("Speech embedding vs Whisper-base transcription (same clips, same batch, same dtype)",
                  "device | dtype | batch | clips | mean s | emb clips/s | emb × RT | peak MB (above start) | "
                  "Whisper clips/s | Whisper × RT | Whisper tokens/clip (hit cap) | Whisper peak MB | ratio",
                  r.get("speech", []), _speech_cells)


def _length_table(r: dict) -> list[str]:
    return _table("By clip length", "device | dtype | clip s | batch | clips | emb clips/s | emb × RT | "
                  "Whisper clips/s | ratio", r.get("length_sweep", []), lambda x: None if "clips_per_s" not in x else (
                      f"{x['device']} | {x['dtype']} | {x['mean_clip_s']} | {x['batch']} | {x['clips']} | "
                      f"{fmt(x['clips_per_s'], 2)} | {fmt(x['x_real_time'])} | {fmt(x.get('asr_clips_per_s'), 3)} | "
                      f"**{fmt(x.get('speedup_vs_asr'))}**"))


def _text_table(r: dict) -> list[str]:
    return _table("French passages", "device | dtype | batch | passages | mean tokens | passages/s | tokens/s | "
                  "peak MB (above start)", r.get("text", []), lambda x: None if "passages_per_s" not in x else (
                      f"{x['device']} | {x['dtype']} | {x['batch']} | {x['passages']} | {x['mean_tokens']} | "
                      f"{fmt(x['passages_per_s'])} | {fmt(x['tokens_per_s'])} | {fmt(x['peak_mem_mb'])} "
                      f"({fmt(x['peak_mem_above_start_mb'])})"))


def _retrieval_tables(r: dict) -> list[str]:
    lines: list[str] = []
    ret = r.get("retrieval")
    if ret:
        names = list(ret["queries"])
        lines += ["", "## Retrieval scaling", "",
                  f"Index = {ret['n_real_passages']} REAL passage embeddings (rows 0..{ret['n_real_passages'] - 1}) + "
                  "SYNTHETIC vectors from a Gaussian fitted to them (mean + covariance + 5 % ridge), prefixes "
                  f"re-normalised per dim. Exact search on {ret['search_device']} with {ret['search_threads']} "
                  f"threads; batch latency = {ret['batch_queries']} queries in one call. Real queries: "
                  + ", ".join(f"{k} ({v})" for k, v in ret["queries"].items())
                  + f". {r.get('retrieval_note', '')}", "",
                  "| N | dim | index MB | batch ms/query | single-query ms (1 thread) | "
                  + " | ".join(f"R@10 {n}" for n in names)
                  + (" | torch-CUDA batch ms/q | torch-CUDA single ms |" if r["environment"].get("gpu") else " |"),
                  "|---|---|---|---|---|" + "---|" * len(names) + ("---|---|" if r["environment"].get("gpu") else "")]
        for x in ret["index_rows"]:
            if x.get("skipped"):
                continue
            lines.append(f"| {x['N']:,} | {x['dim']} | {x['index_bytes'] / 2**20:,.2f} | {x['batch_ms_per_query']} | "
                         f"{x['single_query_ms_1_thread']} | " + " | ".join(str(x.get(f'recall@10_{n}')) for n in names)
                         + (f" | {x.get('torch_cuda_batch_ms_per_query')} | {x.get('torch_cuda_single_query_ms')} |"
                            if r["environment"].get("gpu") else " |"))
        lines += ["", "### Funnel: shortlist K at d_small, re-rank at full dim", "",
                  "\"as is\" = this checkpoint's own prefixes. \"PCA-rotated proxy\" = the same vectors rotated "
                  "onto the real passages' principal axes (orthogonal: full-dim scores unchanged), i.e. what a head "
                  "that front-loads variance could reach; it is not this checkpoint.", "",
                  "| variant | N | d_small | K | compute ratio | " + " | ".join(
                      f"R@10 {n} (full) | fraction of full | overlap@10 vs full | ms/q" for n in names) + " |",
                  "|---|---|---|---|---|" + "---|---|---|---|" * len(names)]
        for x in ret["funnel_rows"]:
            lines.append(f"| {x.get('variant', 'as is')} | {x['N']:,} | {x['d_small']} | {x['K']} | "
                         f"{x['compute_ratio']}× | " + " | ".join(
                f"{x[f'recall@10_{n}']} ({x[f'recall@10_full_{n}']}) | {fmt(x[f'recall_fraction_{n}'], 3)} | "
                f"{x[f'overlap@10_vs_full_{n}']} | {x[f'ms_per_query_{n}']}" for n in names) + " |")
    return lines


def markdown(r: dict) -> str:
    """bench.md: run facts, targets, then the speech, clip-length, text and retrieval tables."""
    lines = []
    for part in (_header, _targets, _speech_table, _length_table, _text_table, _retrieval_tables):
        lines += part(r)
    return "\n".join(lines) + "\n"
