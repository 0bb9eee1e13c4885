"""The `wolofmrl` command: index French documents, search them by voice, embed, serve.

    wolofmrl index DOCS --out INDEX [--model M] [--dim 128] [--kind flat|ivf|hnsw] [--add]
    wolofmrl search INDEX question.wav [more.wav ...] [--k 10] [--shortlist 500] [--json]
    wolofmrl search INDEX --text "Lan mooy ..." [--json]
    wolofmrl embed --audio a.wav b.ogg --out q.npy          (or --text ... / --text-file lines.txt, .parquet out)
    wolofmrl serve --index INDEX [--host 127.0.0.1] [--port 8000]

Every subcommand has --help. Bad input ends with a one-line message naming the argument and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DEFAULT_MODEL = os.environ.get("WOLOFMRL_MODEL", "checkpoints/wolofmrl-base")


def _common(p: argparse.ArgumentParser, model: bool = True):
    if model:
        p.add_argument("--model", default=DEFAULT_MODEL,
                       help="built model folder (default: $WOLOFMRL_MODEL or checkpoints/wolofmrl-base)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA if available)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="compute dtype (auto: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--batch-size", type=int, default=64)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wolofmrl", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    ix = sub.add_parser("index", help="split French documents into passages, embed them, write a FAISS index",
                        description="Index a folder or file of French .txt/.md/.jsonl/.csv/.parquet documents. "
                                    "Resumable: rerun the same command after an interruption.")
    ix.add_argument("docs", help="a folder (searched recursively) or one .txt/.md/.jsonl/.csv/.parquet file")
    ix.add_argument("--out", required=True, help="INDEX folder to create (or extend with --add)")
    ix.add_argument("--add", action="store_true", help="add new files to an existing INDEX (already indexed skipped)")
    ix.add_argument("--dim", type=int, default=128, help="shortlist width of the funnel (Matryoshka prefix); "
                                                         "passages are always stored at full width (default 128)")
    ix.add_argument("--kind", default="flat", choices=["flat", "ivf", "hnsw"], help="shortlist index (default flat)")
    ix.add_argument("--max-words", type=int, default=120, help="longest passage, in words (default 120)")
    ix.add_argument("--text-field", default="text", help=".jsonl key / .csv column holding the text")
    ix.add_argument("--chunk", type=int, default=2048, help="passages per resumable chunk")
    _common(ix)
    from wolofmrl.cli.ray_index import add_arguments as add_ray_arguments

    add_ray_arguments(ix)  # --engine {local,ray}, --address and the Ray engine's knobs

    se = sub.add_parser("search", help="search an INDEX with spoken (audio files) or written queries",
                        description="Funnel search: shortlist at the index's --dim, re-rank at full width.")
    se.add_argument("index", help="INDEX folder written by `wolofmrl index`")
    se.add_argument("queries", nargs="*", help="audio files (any length, WAV/FLAC/OGG/MP3, any rate)")
    se.add_argument("--text", action="append", default=[], help="a written query (repeatable); gets 'query: '")
    se.add_argument("--k", type=int, default=10, help="results per query")
    se.add_argument("--shortlist", type=int, default=500, help="candidates re-ranked at full width (default 500)")
    se.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _common(se, model=False)
    se.add_argument("--model", default=None, help="model folder (default: the one that built the INDEX)")

    em = sub.add_parser("embed", help="embed audio files or texts to .npy or .parquet")
    em.add_argument("--audio", nargs="+", default=[], help="audio files")
    em.add_argument("--text", action="append", default=[], help="a text (repeatable)")
    em.add_argument("--text-file", default=None, help="a UTF-8 file with one text per line")
    em.add_argument("--kind", default="passage", choices=["query", "passage"], help="text prefix (default passage)")
    em.add_argument("--dim", type=int, default=None, help="Matryoshka width (default: full)")
    em.add_argument("--out", required=True, help="output .npy (float32 (N, dim)) or .parquet (input, embedding)")
    _common(em)

    sv = sub.add_parser("serve", help="HTTP server: OpenAI-style /v1/embeddings (+ speech), /v1/search, /health")
    sv.add_argument("--index", default=None, help="INDEX folder for /v1/search (optional)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--max-audio-seconds", type=float, default=120.0, help="longest audio input accepted")
    sv.add_argument("--max-batch", type=int, default=256, help="most inputs per request")
    sv.add_argument("--max-body-mb", type=float, default=25.0, help="largest request body, MiB")
    _common(sv)
    return p


def _print_hits(query: str, hits: list[dict]):
    print(f"query: {query}")
    for h in hits:
        text = h["text"] if len(h["text"]) <= 110 else h["text"][:107] + "..."
        print(f"  {h['rank']:>2}. {h['score']:.3f}  {text}")
        print(f"      {h['source']}")


def cmd_index(args) -> int:
    from wolofmrl.cli.store import index_documents

    if args.engine == "ray":
        from wolofmrl.cli.ray_index import index_from_args

        index_from_args(args)
        return 0

    index_documents(args.docs, args.out, args.model, add=args.add, coarse_dim=args.dim, kind=args.kind,
                    max_words=args.max_words, text_field=args.text_field, chunk=args.chunk,
                    batch_size=args.batch_size, device=args.device, dtype=args.dtype)
    return 0


def cmd_search(args) -> int:
    from wolofmrl.cli.store import DocumentIndex, embed_audio, embed_texts, load_model

    if not args.queries and not args.text:
        raise ValueError("search: give audio files (QUERY.wav ...) or --text 'a written query'")
    index = DocumentIndex.open(args.index)
    model, processor, dtype = load_model(args.model or index.manifest["model"], args.device, args.dtype)
    if model.config.embedding_dim != index.funnel.full_dim:
        raise ValueError(f"--model embeds at width {model.config.embedding_dim}, INDEX at {index.funnel.full_dim}: "
                         "search with the model that built the index")
    labels, parts = [], []
    if args.queries:
        parts.append(embed_audio(model, processor, args.queries, None, dtype, args.batch_size))
        labels += args.queries
    if args.text:
        parts.append(embed_texts(model, processor, args.text, "query", None, dtype, args.batch_size))
        labels += args.text
    import numpy as np

    results = index.search(np.concatenate(parts), k=args.k, shortlist=args.shortlist)
    if args.json:
        print(json.dumps([{"query": q, "results": r} for q, r in zip(labels, results)], ensure_ascii=False, indent=1))
    else:
        for q, r in zip(labels, results):
            _print_hits(q, r)
    return 0


def cmd_embed(args) -> int:
    import numpy as np

    from wolofmrl.cli.store import embed_audio, embed_texts, load_model

    texts = list(args.text)
    if args.text_file:
        texts += [line.rstrip("\n") for line in Path(args.text_file).read_text(encoding="utf-8").splitlines()
                  if line.strip()]
    if bool(texts) == bool(args.audio):
        raise ValueError("embed: give either --audio FILES or --text / --text-file, not both and not neither")
    suffix = Path(args.out).suffix.lower()
    if suffix not in (".npy", ".parquet"):
        raise ValueError(f"--out {args.out!r}: use a .npy or .parquet file name")
    model, processor, dtype = load_model(args.model, args.device, args.dtype)
    if args.audio:
        emb = embed_audio(model, processor, args.audio, args.dim, dtype, args.batch_size, progress=True)
    else:
        emb = embed_texts(model, processor, texts, args.kind, args.dim, dtype, args.batch_size, progress=True)
    if suffix == ".npy":
        np.save(args.out, emb)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        inputs = args.audio or texts
        pq.write_table(pa.table({"input": inputs, "embedding": list(emb)}), args.out)
    print(f"wrote {args.out}: {emb.shape[0]} x {emb.shape[1]} float32")
    return 0


def cmd_serve(args) -> int:
    from wolofmrl.server import Limits, serve

    serve(args.model, index=args.index, host=args.host, port=args.port, device=args.device, dtype=args.dtype,
          limits=Limits(max_audio_seconds=args.max_audio_seconds, max_batch=args.max_batch,
                        max_body_bytes=int(args.max_body_mb * 2**20)), batch_size=args.batch_size)
    return 0


COMMANDS = {"index": cmd_index, "search": cmd_search, "embed": cmd_embed, "serve": cmd_serve}


def check_arguments(args) -> None:
    """Checks that need no model: run before the (slow) model load so that a typo fails in well under a second.

    Raises ValueError / FileNotFoundError naming the argument and the fix."""
    dim = getattr(args, "dim", None)
    if dim is not None:
        config = Path(args.model or "") / "config.json" if getattr(args, "model", None) else None
        width = json.loads(config.read_text()).get("embedding_dim") if config and config.is_file() else None
        if dim < 1 or (width and dim > width):
            raise ValueError(f"--dim {dim}: use a width in 1..{width or 'the model width'}"
                             + (" or leave out --dim for the full width" if args.command == "embed" else ""))
    for path in list(getattr(args, "audio", None) or []) + list(getattr(args, "queries", None) or []):
        if not Path(path).is_file():
            raise FileNotFoundError(f"audio file {path!r} not found: pass an existing audio file")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `wolofmrl` console script. Returns the exit status (0 ok, 2 bad input)."""
    args = parser().parse_args(argv)
    try:
        check_arguments(args)
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"wolofmrl {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
