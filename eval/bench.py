"""Speed of WolofMRL against the cascade's first half (Whisper-base transcription), and retrieval scaling.

    python eval/bench.py --model checkpoints/wolofmrl-base --out results/bench --device cuda     # ~4-5 min on one H100
    python eval/bench.py --model checkpoints/wolofmrl-base --out results/bench --quick           # ~40 s on 2 idle cores

One run, one machine, everything side by side; every figure carries the device it was measured on.

1. Speech: embedding throughput (clips/s, audio-seconds/s, x real time) of Wolof clips of 2-30 s at batch sizes
   1..256, fp32 and bf16, through `wolofmrl.inference.encode_speech` (length-sorted batches, per-clip lengths,
   log-mel on the device, SDPA). Beside each row: Whisper-base greedy transcription of the SAME clips at the same
   batch size and dtype (`WhisperForConditionalGeneration.generate`, 30 s log-mel as Whisper needs, forced French
   unless --asr-language none, max_new_tokens = 6 per second of the batch's longest clip + 16) and the ratio
   embedding clips/s / transcription clips/s. Transcription is only the cascade's first half (no MT counted), so
   the ratio understates the cascade's cost. Peak memory per row (GPU: torch.cuda.max_memory_allocated; CPU: peak
   RSS of the process sampled every 5 ms, minus the RSS before the row).
   A length sweep (2..30 s) shows how the ratio moves with clip length (Whisper always pays for 30 s).
2. Text: French passages/s, fp32 and bf16.
3. CPU rows run with --cpu-threads threads (default 2: the target is 2 cores) also on a GPU machine.
4. Retrieval scaling: FAISS flat inner-product indexes of 10k..1M passages at each Matryoshka dim: index bytes,
   batched and single-query latency. The passages are REAL embeddings of a few hundred real French passages padded
   with SYNTHETIC vectors drawn from a Gaussian fitted to the real ones (mean + regularised covariance at full
   width; prefixes re-normalised per dim). Funnel: shortlist K at a small dim, re-rank at full dim; Recall@10 of
   real queries against their real gold passage, and overlap@10 with the exact full-dim top 10, at each index
   size; compute = multiply-adds per query (N*d_small + K*d_full vs N*d_full).

Inputs (clips, passages, query pairs) are built once and cached in --inputs (default build/bench/inputs.npz) so a
GPU run uses exactly the inputs a CPU run used: carry that file. Clips are synthesised speech
(`wolofmrl.curation.voice.synthesize`: espeak-ng, Wolof respelled for its Swahili voice; Kokoro with --kokoro) of
real Wolof sentences, concatenated with pauses to each target length; where no synthesiser runs they are synthetic
signals (chirps + noise). The output says which. Synthetic speech is not Wolof speakers.

Whisper weights: Whisper-base with its decoder (build/backbones/whisper-base by default). Where only an encoder (or
nothing) is there, e.g. on a machine fed by an encoder-only bundle, the transcription side runs a labelled COST MODEL:
the same architecture with random weights, decoding exactly ceil(--asr-token-rate x longest clip) + 1 tokens per
batch (nothing in Whisper's compute depends on its weights; the step count is the assumption).

CPU rows use --cpu-threads threads. On a shared machine two threads can be several times slower than one (threads
wait for each other while other jobs hold the cores): the load average is recorded; compare runs only at low load.

Writes bench.json and bench.md to --out (rewritten after each section, so a run cut short still leaves results).

Modules: bench_env (machine facts, budget, memory), bench_inputs (texts, utterances, clips), asr (the Whisper
baseline), bench_measure (timed rows), bench_retrieval (index scaling and funnel, through wolofmrl.retrieval),
bench_report (targets and bench.md); this file holds the plans and the run.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

EVAL_DIR = Path(__file__).resolve().parent
ROOT = EVAL_DIR.parent
for _p in (EVAL_DIR, ROOT):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import bench_env  # noqa: E402
from asr import _ASR_TOKENIZER, DEFAULT_TOKEN_RATE, transcribe  # noqa: E402
from bench_env import Budget, cpu_flags, device_label, environment, log  # noqa: E402
from bench_inputs import build_inputs, load_inputs, make_clips, save_inputs, stratified_durations  # noqa: E402
from bench_measure import embed_speech_run, load_models, model_facts, speech_rows, text_rows  # noqa: E402
from bench_report import TARGETS, markdown, summarise  # noqa: E402
from bench_retrieval import retrieval_scaling  # noqa: E402
from wolofmrl.metrics import mean_recall_at_k  # noqa: E402
from wolofmrl.inference import encode_speech, encode_text, prepare_model  # noqa: E402

SR = 16000


def plans(mode: str):
    """What each mode measures. Speech rows: (batch, n clips, with Whisper); lengths: (seconds, batch, n, Whisper)."""
    if mode == "smoke":  # tests: seconds on tiny models
        return {"pool": 2, "cpu_speech": [(1, 2, True), (2, 2, False)], "cpu_lengths": ([2], 1, 1, True),
                "cpu_text": [(2, 4)], "gpu_speech": [(2, 2, True)], "gpu_lengths": ([2], 2, 2, True),
                "gpu_text": [(2, 4)], "sizes": [3000], "n_pairs": 20, "n_real": 30, "shortlists": [20, 50],
                "speech_queries": 2, "retrieval_reserve": -600, "gpu_reps": (0.0, 1)}
    if mode == "quick":
        return {"pool": 3, "cpu_speech": [(1, 3, True), (3, 3, False)], "cpu_lengths": ([2, 10, 30], 1, 1, False),
                "cpu_text": [(1, 16), (16, 32)], "gpu_speech": [(1, 8, True), (8, 16, True), (32, 32, True)],
                "gpu_lengths": ([2, 10, 30], 16, 16, True), "gpu_text": [(1, 32), (64, 128)],
                "sizes": [10_000, 50_000], "n_pairs": 150, "n_real": 200, "shortlists": [50, 100, 200],
                "speech_queries": 8, "retrieval_reserve": -600, "gpu_reps": (0.5, 5)}
    return {"pool": 256, "cpu_speech": [(1, 4, True), (4, 4, True), (16, 16, False)],
            "cpu_lengths": ([2, 5, 10, 30], 1, 2, True),
            "cpu_text": [(1, 16), (16, 64), (64, 64)],
            "gpu_speech": [(1, 16, True), (4, 32, True), (16, 64, True), (64, 128, True), (256, 256, True)],
            "gpu_lengths": ([2, 5, 10, 20, 30], 32, 32, True), "gpu_text": [(1, 64), (16, 256), (64, 512), (256, 1024)],
            "sizes": [10_000, 100_000, 1_000_000], "n_pairs": 2000, "n_real": 600, "shortlists": [100, 200, 500],
            "speech_queries": 30, "retrieval_reserve": 0, "gpu_reps": (0.5, 5)}

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="WolofMRL model folder (python -m wolofmrl.build --out ...)")
    p.add_argument("--out", required=True)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="~1 min on 2 idle CPU cores: fewer clips, sizes and batches")
    p.add_argument("--whisper", default=None, help="Whisper-base folder (default build/backbones/whisper-base)")
    p.add_argument("--inputs", default=str(ROOT / "build" / "bench" / "inputs.npz"),
                   help="cache of clips and texts; built when missing (carry it to a GPU machine)")
    p.add_argument("--rebuild-inputs", action="store_true")
    p.add_argument("--data", default=None, help="curated corpus folder (data/offline) to take texts and audio from")
    p.add_argument("--kokoro", action="store_true", help="also voice utterances with Kokoro when building inputs")
    p.add_argument("--cpu-threads", type=int, default=2, help="threads for the CPU rows (target: 2 cores)")
    p.add_argument("--no-cpu", action="store_true", help="skip CPU rows on a GPU machine")
    p.add_argument("--asr-language", default="fr", help="Whisper's forced language, or 'none' to let it detect")
    p.add_argument("--asr-token-rate", type=float, default=None,
                   help="use the Whisper COST MODEL (random weights, this many decoded tokens per second of the "
                        f"longest clip; default {DEFAULT_TOKEN_RATE:g} when no Whisper weights are found)")
    p.add_argument("--compile", action="store_true", help="torch.compile the towers (GPU rows; compile time excluded)")
    p.add_argument("--budget-s", type=float, default=None, help="soft time limit (default 280 s, quick 150 s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export-texts", default=None, metavar="FILE",
                   help="write every text the bench embeds (one per line) and exit; pass it to `python -m "
                        "wolofmrl.portable pack --extra-texts FILE` so a vocabulary-subset bundle covers them")
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # tests: the smallest plan
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device is visible")
    return args


def inputs_of(args) -> dict:
    """The cached inputs (built and saved when missing or --rebuild-inputs)."""
    path = Path(args.inputs)
    if path.is_file() and not args.rebuild_inputs:
        inputs = load_inputs(path)
        log(f"inputs from {path} ({len(inputs['utterances'])} utterances)")
        return inputs
    t = time.perf_counter()
    inputs = build_inputs(args)
    save_inputs(path, inputs)
    log(f"inputs built in {time.perf_counter() - t:.1f} s -> {path}")
    return inputs


def set_up(args, inputs: dict) -> SimpleNamespace:
    """Budget, plan, clip pool, both models and the result dict `r` (written by `ctx.write()`)."""
    budget = Budget(args.budget_s or (150 if args.quick else 280))
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    plan, out = plans(mode), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    r = {"mode": mode, "args": vars(args), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
         "environment": environment(args), "targets": TARGETS, "notes": [], "speech": [], "length_sweep": [],
         "text": []}

    def write():
        r["summary"] = summarise(r)
        r["wall_s"] = round(budget.used(), 1)
        (out / "bench.json").write_text(json.dumps(r, indent=1, ensure_ascii=False, default=str))
        (out / "bench.md").write_text(markdown(r))

    utts = inputs["utterances"]
    pool, clip_kind = make_clips(utts, stratified_durations(plan["pool"]), args.seed)
    r["inputs"] = {"clip_kind": clip_kind, "clip_source": inputs["clip_source"], "n_utterances": len(utts),
                   "utterance_seconds": round(sum(len(u[0]) for u in utts) / SR, 1),
                   "pool_clips": len(pool), "pool_durations_s": stratified_durations(plan["pool"])[:32],
                   "passage_source": inputs["passage_source"], "pair_source": inputs["pair_source"],
                   "inputs_file": str(args.inputs), "inputs_built_on": inputs.get("built_on")}
    t = time.perf_counter()
    model, processor, asr, asr_fe, asr_tokenizer, whisper_dir, asr_mode = load_models(args)
    _ASR_TOKENIZER["tok"] = asr_tokenizer
    language = None if args.asr_language.lower() == "none" else args.asr_language
    asr_opts = {"language": language, "token_rate": None if asr_mode == "real" else args.asr_token_rate}
    r["whisper_dir"], r["asr_mode"] = whisper_dir, asr_mode
    if asr_mode != "real":
        r["notes"].append(asr_mode)
    r["model"] = model_facts(model, asr)
    r["load_s"] = round(time.perf_counter() - t, 1)
    if not r["model"]["trained_delta"]:
        r["notes"].append("The model has no trained delta: adapter random, Matryoshka head = identity on the frozen "
                          "multilingual-e5-small, whose prefixes were never trained to stand alone. Speed figures do "
                          "not depend on it; recall figures do (speech recall is chance level).")
    log(f"models loaded in {r['load_s']} s; clips: {clip_kind}; attention {r['model']['attention']}")
    write()
    passages = inputs["paragraphs"] or [fr for _, fr in inputs["pairs"]]
    return SimpleNamespace(args=args, budget=budget, plan=plan, r=r, write=write, inputs=inputs, utts=utts,
                           pool=pool, clip_kind=clip_kind, model=model, processor=processor, asr=asr, asr_fe=asr_fe,
                           asr_opts=asr_opts, passages=passages, gpu_model=None)


def gpu_rows(ctx):
    """fp32 and bf16 rows on the accelerator: speech beside Whisper, a clip-length sweep (bf16), text."""
    args, plan, r, accel = ctx.args, ctx.plan, ctx.r, bench_env.ACCEL
    ctx.gpu_model = prepare_model(copy.deepcopy(ctx.model), device=accel, compile=args.compile)
    asr_gpu = copy.deepcopy(ctx.asr).to(accel)
    label = device_label("cuda")
    for dtype, name in ((None, "fp32"), (torch.bfloat16, "bf16")):
        asr_run = asr_gpu if dtype is None else asr_gpu.to(torch.bfloat16)
        # warm-up: kernels, autocast caches, compilation (excluded from every figure)
        t = time.perf_counter()
        embed_speech_run(ctx.gpu_model, ctx.processor, ctx.pool[:8], 4, accel, dtype)
        embed_speech_run(ctx.gpu_model, ctx.processor, ctx.pool[:1], 1, accel, dtype)
        encode_text(ctx.gpu_model, ctx.processor, ctx.inputs["paragraphs"][:8] or ["a"], batch_size=4, device=accel,
                    dtype=dtype, progress=False)
        transcribe(asr_run, ctx.asr_fe, ctx.pool[:2], 2, accel, dtype, **ctx.asr_opts)
        r.setdefault("warmup_s", {})[f"cuda_{name}"] = round(time.perf_counter() - t, 1)
        rows = speech_rows(ctx.gpu_model, ctx.processor, asr_run, ctx.asr_fe, ctx.pool, plan["gpu_speech"], accel,
                           dtype, ctx.asr_opts, ctx.budget, 150, label, name, *plan["gpu_reps"])
        r["speech"] += [dict(x, device_kind="cuda") for x in rows]
        ctx.write()
        if name == "bf16":
            lengths, batch, n, with_asr = plan["gpu_lengths"]
            for sec in lengths:
                clips, _ = make_clips(ctx.utts, [float(sec)] * n, args.seed + sec)
                rows = speech_rows(ctx.gpu_model, ctx.processor, asr_run, ctx.asr_fe, clips, [(batch, n, with_asr)],
                                   accel, dtype, ctx.asr_opts, ctx.budget, 130, label, name, *plan["gpu_reps"])
                r["length_sweep"] += [dict(x, device_kind="cuda") for x in rows]
        r["text"] += [dict(x, device_kind="cuda") for x in text_rows(
            ctx.gpu_model, ctx.processor, ctx.passages, plan["gpu_text"], accel, dtype, ctx.budget, 120, label, name,
            *plan["gpu_reps"])]
        ctx.write()
    del asr_gpu, asr_run
    if accel == "cuda":
        torch.cuda.empty_cache()


def cpu_rows(ctx):
    """fp32 rows on --cpu-threads threads (bf16 where the CPU has it natively, full runs only)."""
    args, plan, r = ctx.args, ctx.plan, ctx.r
    torch.set_num_threads(args.cpu_threads)
    label = device_label("cpu", args.cpu_threads)
    embed_speech_run(ctx.model, ctx.processor, ctx.pool[:1], 1, "cpu", None)  # warm-up
    transcribe(ctx.asr, ctx.asr_fe, ctx.pool[:1], 1, "cpu", None, **ctx.asr_opts)
    reserve = 40 if args.quick else 70

    def speech(clips, plan_rows, dtype=None, name="fp32"):
        return [dict(x, device_kind="cpu") for x in speech_rows(
            ctx.model, ctx.processor, ctx.asr, ctx.asr_fe, clips, plan_rows, "cpu", dtype, ctx.asr_opts, ctx.budget,
            reserve, label, name, 0.0, 1)]

    r["speech"] += speech(ctx.pool, plan["cpu_speech"])
    ctx.write()
    lengths, batch, n, with_asr = plan["cpu_lengths"]
    for sec in lengths:
        r["length_sweep"] += speech(make_clips(ctx.utts, [float(sec)] * n, args.seed + sec)[0], [(batch, n, with_asr)])
    flags = cpu_flags()
    has_bf16 = bool(flags & {"avx512_bf16", "amx_bf16"})
    if args.quick:
        r["notes"].append(f"CPU bf16 skipped in --quick (this CPU {'has' if has_bf16 else 'lacks'} native bf16: "
                          f"{sorted(flags & {'avx512_bf16', 'amx_bf16'}) or 'no avx512_bf16/amx_bf16'}).")
    elif not has_bf16:
        r["notes"].append("CPU bf16 skipped: no avx512_bf16/amx_bf16 on this CPU (autocast would emulate it).")
    else:
        r["speech"] += speech(ctx.pool, [(4, 4, False)], torch.bfloat16, "bf16")
    r["text"] += [dict(x, device_kind="cpu") for x in text_rows(
        ctx.model, ctx.processor, ctx.passages, plan["cpu_text"], "cpu", None, ctx.budget, reserve - 10, label,
        "fp32", 0.0, 1)]
    ctx.write()


def retrieval_queries(ctx, enc_model, enc_device) -> tuple[np.ndarray, list[str], dict]:
    """(passage embeddings, real passages, queries name -> (embeddings, gold passage rows))."""
    plan, inputs, processor = ctx.plan, ctx.inputs, ctx.processor
    pairs = inputs["pairs"][: plan["n_pairs"]]  # proverbs first, then dictionary and catalog pairs
    fr_texts = list(dict.fromkeys([fr for _, fr in pairs]))
    extra = [x for x in inputs["paragraphs"] if x not in set(fr_texts)]
    passages_real = (fr_texts + extra)[: max(plan["n_real"], 0)]
    if len(passages_real) < len(fr_texts):  # keep every gold passage
        passages_real = fr_texts
    gold_of = {t: i for i, t in enumerate(passages_real)}
    p_emb = encode_text(enc_model, processor, passages_real, batch_size=64, device=enc_device, progress=False).numpy()
    wo_q = list(dict.fromkeys((wo, gold_of[fr]) for wo, fr in pairs if fr in gold_of))
    q_text = encode_text(enc_model, processor, [w for w, _ in wo_q], batch_size=128, text_kind="query",
                         device=enc_device, progress=False).numpy()
    queries = {"wo_text": (q_text, np.array([g for _, g in wo_q]))}
    wo_to_fr = dict(inputs["pairs"])
    sq = [(u[0], gold_of[wo_to_fr[u[1]]]) for u in ctx.utts if wo_to_fr.get(u[1]) in gold_of][: plan["speech_queries"]]
    if sq and ctx.clip_kind == "speech":
        q_speech = encode_speech(enc_model, processor, [w for w, _ in sq], batch_size=16, device=enc_device,
                                 progress=False).numpy()
        queries["wo_speech"] = (q_speech, np.array([g for _, g in sq]))
    ctx.r["retrieval_note"] = (
        f"Real part: {len(passages_real)} French passages ({len(fr_texts)} French sides of the pairs + "
        f"{len(passages_real) - len(fr_texts)} catalog paragraphs); each Wolof query's gold passage is its pair's "
        "French side. Labelled recall on an untrained model measures little; overlap@10 with the exact full-dim top "
        "10 measures the funnel itself.")
    return p_emb, passages_real, queries


def zero_token_note(ctx, passages_real: list[str]):
    """Say so when passages use tokens whose embedding row is all zero (a vocabulary-subset backbone)."""
    table = ctx.model.text_model.get_input_embeddings().weight.detach()
    zero_rows = set(torch.nonzero(table.abs().sum(1) == 0).flatten().tolist())
    ids = ctx.processor.tokenizer(ctx.processor.prefix(passages_real, "passage"))["input_ids"]
    unseen = sum(i in zero_rows for row in ids for i in row) / max(1, sum(len(row) for row in ids))
    ctx.r["retrieval_zero_embedding_token_fraction"] = round(unseen, 4)
    if unseen > 0.001:
        ctx.r["notes"].append(
            f"{unseen:.1%} of the passage tokens have an all-zero row in the text embedding table (a "
            "vocabulary-subset backbone, e.g. a portable bundle): recall and funnel figures here are not the model's; "
            "take them from a run on the full backbone. Speed figures are unaffected.")


def retrieval_rows(ctx, cuda: bool, cpu_threads_all: int):
    """Index scaling and funnel rows on real passages padded with synthetic vectors."""
    torch.set_num_threads(cpu_threads_all)
    try:
        import faiss

        faiss.omp_set_num_threads(cpu_threads_all)
    except ImportError:
        pass
    enc_model, enc_device = (ctx.gpu_model, bench_env.ACCEL) if cuda else (ctx.model, "cpu")
    t = time.perf_counter()
    p_emb, passages_real, queries = retrieval_queries(ctx, enc_model, enc_device)
    ctx.r["retrieval_embed_s"] = round(time.perf_counter() - t, 1)
    zero_token_note(ctx, passages_real)
    log(f"retrieval inputs: {len(passages_real)} passages, queries {[(k, len(v[0])) for k, v in queries.items()]}")
    dims = list(ctx.model.config.matryoshka_dims)
    sizes = [n for n in ctx.plan["sizes"] if n > len(passages_real)]
    shortlist_dims = [d for d in dims if d <= 64 and d < max(dims)]
    ctx.r["retrieval"] = retrieval_scaling(p_emb, queries, sizes, dims, shortlist_dims, ctx.plan["shortlists"],
                                           ctx.budget, ctx.plan["retrieval_reserve"], ctx.args.seed,
                                           device_label("cpu", cpu_threads_all), cuda, ctx.write)
    ctx.r["retrieval"]["real_only"] = {name: round(mean_recall_at_k(np.argsort(-(q @ p_emb.T), axis=1)[:, :10], g, 10),
                                                   4) for name, (q, g) in queries.items()}
    ctx.write()


def main(argv=None):
    args = parse_args(argv)
    inputs = inputs_of(args)
    if args.export_texts:
        texts = [t for pair in inputs["pairs"] for t in pair] + inputs["paragraphs"][:2000]
        Path(args.export_texts).write_text("\n".join(" ".join(t.split()) for t in texts) + "\n")
        log(f"{len(texts)} texts -> {args.export_texts}")
        return
    cpu_threads_all = torch.get_num_threads()
    ctx = set_up(args, inputs)
    cuda = args.device == "cuda"
    if cuda:
        gpu_rows(ctx)
    if not (cuda and args.no_cpu):
        cpu_rows(ctx)
    retrieval_rows(ctx, cuda, cpu_threads_all)
    log(f"done in {ctx.budget.used():.0f} s -> {Path(args.out) / 'bench.md'}")
    print(markdown(ctx.r).split("## Speech")[0])


if __name__ == "__main__":
    main()
