"""The `wolofmrl` command: index French documents, search them by voice, embed, serve.

    wolofmrl index DOCS --out INDEX [--model M] [--dim 128] [--kind flat|ivf|hnsw] [--add]
    wolofmrl search INDEX question.wav [more.wav ...] [--k 10] [--shortlist 500] [--json] [--verify]
    wolofmrl search INDEX --text "Lan mooy ..." [--json]
    wolofmrl embed --audio a.wav b.ogg --out q.npy          (or --text ... / --text-file lines.txt, .parquet out)
    wolofmrl serve --index INDEX [--host 127.0.0.1] [--port 8000]

The model: --model, else $WOLOFMRL_MODEL, else checkpoints/wolofmrl-base of this source tree when built
(`make model`), else the user cache folder ($XDG_CACHE_HOME or ~/.cache)/wolofmrl/wolofmrl-base.
Every subcommand has --help. Bad input ends with a one-line message naming the argument and exit status 2; it is
found before the model loads (arguments, files, the INDEX are checked first).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

MODEL_ENV = "WOLOFMRL_MODEL"
INDEX_DIM = 128  # `index --dim` of a new INDEX
SOURCE_MODEL = Path(__file__).resolve().parent.parent.parent / "checkpoints" / "wolofmrl-base"


def user_model_dir() -> Path:
    """($XDG_CACHE_HOME or ~/.cache)/wolofmrl/wolofmrl-base: where a model is looked for outside the source tree."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wolofmrl" / "wolofmrl-base"


def default_model() -> str:
    """The model folder used without --model: $WOLOFMRL_MODEL, else this source tree's built
    checkpoints/wolofmrl-base, else `user_model_dir()`. An absolute path: it works from any folder."""
    if os.environ.get(MODEL_ENV):
        return str(Path(os.environ[MODEL_ENV]).expanduser().resolve())
    if (SOURCE_MODEL / "config.json").is_file():
        return str(SOURCE_MODEL)
    return str(user_model_dir())


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's layout and shows every option's default."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wolofmrl")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _common(p: argparse.ArgumentParser, model: bool = True):
    if model:
        p.add_argument("--model", default=None,
                       help=f"built model folder (None: ${MODEL_ENV}, else this tree's checkpoints/wolofmrl-base, "
                            f"else {user_model_dir()}; `index --add`: the model that built the INDEX)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (None: CUDA if available, else CPU)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="compute dtype (auto: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="items per forward pass (None: sized for the device, as `wolofmrl.inference` does with "
                        "batch_size=None: 64 texts / 16 clips on CPU; on CUDA up to 4096 texts of 65,536 tokens, "
                        "1024 clips of 4096 s)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wolofmrl", description=__doc__, formatter_class=_Help)
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    ix = sub.add_parser("index", help="split French documents into passages, embed them, write a FAISS index",
                        formatter_class=_Help,
                        description="Index a folder or file of French .txt/.md/.jsonl/.csv/.parquet documents (UTF-8) into a "
                                    "new INDEX folder. Resumable: rerun the same command after an interruption (it "
                                    "says so; other arguments or inputs start over). INDEX must be new, empty, "
                                    "an INDEX this command wrote, or the DOCS folder itself when it holds no file "
                                    "of the index's names (nothing is ever overwritten); never inside DOCS.")
    ix.add_argument("docs", help="a folder (searched recursively) or one .txt/.md/.jsonl/.csv/.parquet file")
    ix.add_argument("--out", required=True, help="INDEX folder to create (or extend with --add)")
    ix.add_argument("--add", action="store_true", help="add new files to an existing INDEX (already indexed skipped)")
    ix.add_argument("--dim", type=int, default=None,
                    help=f"shortlist width of the funnel (Matryoshka prefix; None: {INDEX_DIM}, with --add the "
                         "INDEX's own); passages are always stored at full width")
    ix.add_argument("--kind", default="flat", choices=["flat", "ivf", "hnsw"], help="shortlist index")
    ix.add_argument("--max-words", type=int, default=120, help="longest passage, in words")
    ix.add_argument("--text-field", default="text", help=".jsonl key / .csv column holding the text")
    ix.add_argument("--chunk", type=int, default=2048, help="passages per resumable chunk")
    _common(ix)
    from wolofmrl.cli.ray_index import add_arguments as add_ray_arguments

    add_ray_arguments(ix)  # --engine {local,ray}, --address and the Ray engine's knobs

    se = sub.add_parser("search", help="search an INDEX with spoken (audio files) or written queries",
                        formatter_class=_Help,
                        description="Funnel search: shortlist at the index's --dim, re-rank at full width. Each hit "
                                    "has a cosine score and a margin (its score minus the next hit's): a top hit "
                                    "with a clear margin is a confident answer, one with a margin near 0 a guess.")
    se.add_argument("index", help="INDEX folder written by `wolofmrl index`")
    se.add_argument("queries", nargs="*", help="audio files (any length, WAV/FLAC/OGG/MP3, any rate)")
    se.add_argument("--text", action="append", default=[], help="a written query (repeatable); gets 'query: '")
    se.add_argument("--k", type=int, default=10, help="results per query")
    se.add_argument("--shortlist", type=int, default=500, help="candidates re-ranked at full width")
    se.add_argument("--json", action="store_true", help="print JSON instead of a table")
    se.add_argument("--verify", action="store_true", help="also check the SHA-256 of the large INDEX files "
                                                          "(full.npy, coarse.faiss) before searching")
    _common(se, model=False)
    se.add_argument("--model", default=None, help="model folder (None: the one that built the INDEX)")

    em = sub.add_parser("embed", help="embed audio files or texts to .npy or .parquet", formatter_class=_Help)
    em.add_argument("--audio", nargs="+", default=[], help="audio files")
    em.add_argument("--text", action="append", default=[], help="a text (repeatable)")
    em.add_argument("--text-file", default=None, help="a UTF-8 file with one text per line")
    em.add_argument("--kind", default="passage", choices=["query", "passage"], help="text prefix")
    em.add_argument("--dim", type=int, default=None, help="Matryoshka width (None: full width)")
    em.add_argument("--out", required=True, help="output .npy (float32 (N, dim)) or .parquet (input, embedding)")
    _common(em)

    sv = sub.add_parser("serve", help="HTTP server: OpenAI-style /v1/embeddings (+ speech), /v1/search, /health",
                        description="OpenAI-compatible embeddings server (+ speech input, + search of an INDEX). "
                                    "Every bad request is a 4xx with OpenAI's error body; the limits below are "
                                    "checked before any decoding or model call (audio length from the file's "
                                    "header). Texts are read up to 512 tokens; audio over 30 s is trimmed of "
                                    "silence and embedded in pooled 30 s windows; silent audio and empty texts "
                                    "are refused (400).",
                        formatter_class=_Help)
    sv.add_argument("--index", default=None, help="INDEX folder for /v1/search (optional; without it: 404)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    sv.add_argument("--served-model-name", nargs="+", default=None,
                    help="the names clients may send as `model` (default: the model folder's name and 'wolofmrl'); "
                         "any other name is a 404 model_not_found")
    sv.add_argument("--max-audio-seconds", type=float, default=120.0,
                    help="longest audio item, seconds (default 120; longer: 413)")
    sv.add_argument("--max-request-audio-seconds", type=float, default=1200.0,
                    help="total audio per request, seconds (default 1200; more: 413)")
    sv.add_argument("--max-batch", type=int, default=256, help="most inputs per request (default 256; more: 400)")
    sv.add_argument("--max-input-chars", type=int, default=50_000,
                    help="longest text, characters (default 50000; longer: 400; the model reads 512 tokens)")
    sv.add_argument("--max-body-mb", type=float, default=25.0, help="largest request body, MiB (default 25; more: 413)")
    _common(sv)
    return p


def _print_hits(query: str, hits: list[dict]):
    print(f"query: {query}")
    print("  rank  score  margin  passage")
    for h in hits:
        text = h["text"] if len(h["text"]) <= 100 else h["text"][:97] + "..."
        margin = "     -" if h["margin"] is None else f"{h['margin']:.3f}"
        print(f"  {h['rank']:>4}  {h['score']:.3f}  {margin:>6}  {text}")
        print(f"                       {h['source']}")


def _warn(command: str, message: str):
    print(f"wolofmrl {command}: warning: {message}", file=sys.stderr)


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


def _load_queries(paths: list[str]) -> list:
    """Decode audio query files before the model loads (16 kHz mono float32); a silent file is refused."""
    from processing_wolofmrl import is_silent, load_audio

    waves = []
    for path in paths:
        wave = load_audio(path, name=f"audio file {path!r}")
        if is_silent(wave):
            raise ValueError(f"audio file {path!r} is silent (no sound above -60 dBFS): there is no question to "
                             "search for; check the microphone or the file")
        waves.append(wave)
    return waves


def cmd_search(args) -> int:
    from wolofmrl.cli.store import DocumentIndex, embed_audio, embed_texts, load_model, model_fingerprint

    index = DocumentIndex.open(args.index, verify=args.verify)
    model_path = args.model or index.manifest["model"]
    if not (Path(model_path) / "config.json").is_file():
        raise FileNotFoundError(f"the model that built INDEX {args.index} ({model_path}) is not there: pass --model "
                                "with that model's folder")
    if model_fingerprint(model_path) != index.manifest.get("model_fingerprint"):
        _warn("search", f"--model {model_path} is not the model folder that built INDEX {args.index} (it changed "
                        "or is another one): scores may be wrong; rebuild the index with this model")
    width = _model_width(model_path)
    if width != index.funnel.full_dim:
        raise ValueError(f"--model embeds at width {width}, INDEX at {index.funnel.full_dim}: search with the model "
                         "that built the index")
    waves = _load_queries(args.queries)
    model, processor, dtype = load_model(model_path, args.device, args.dtype)
    labels, parts = [], []
    if waves:
        parts.append(embed_audio(model, processor, waves, None, dtype, args.batch_size, sampling_rate=16000,
                                 progress=True))
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


def _embed_texts_of(args) -> list[str]:
    texts = list(args.text)
    if args.text_file:
        from wolofmrl.cli.documents import read_utf8

        path = Path(args.text_file)
        if not path.is_file():
            raise FileNotFoundError(f"--text-file {args.text_file!r} not found: pass a UTF-8 file, one text a line")
        lines = [line.rstrip("\r") for line in read_utf8(path).split("\n")]
        lines = lines[:-1] if lines and not lines[-1] else lines
        kept = [line for line in lines if line.strip()]
        if not kept:
            raise ValueError(f"--text-file {args.text_file!r} holds no text: one text per line")
        if len(kept) < len(lines):  # rows of the output no longer match line numbers: say so
            _warn("embed", f"--text-file {args.text_file!r}: skipped {len(lines) - len(kept)} blank line(s); output "
                           f"row i is the i-th non-blank line ({len(kept)} rows)")
        texts += kept
    return texts


def cmd_embed(args) -> int:
    import numpy as np

    from wolofmrl.cli.store import embed_audio, embed_texts, load_model

    texts = _embed_texts_of(args)
    if bool(texts) == bool(args.audio):
        raise ValueError("embed: give either --audio FILES or --text / --text-file, not both and not neither")
    suffix = Path(args.out).suffix.lower()
    if args.audio:
        from processing_wolofmrl import is_silent, load_audio

        waves = [load_audio(a, name=f"audio file {a!r}") for a in args.audio]
        for path, wave in zip(args.audio, waves):
            if is_silent(wave):
                _warn("embed", f"audio file {path!r} is silent (no sound above -60 dBFS): its embedding carries no "
                               "speech")
    model, processor, dtype = load_model(args.model, args.device, args.dtype)
    if args.audio:
        emb = embed_audio(model, processor, waves, args.dim, dtype, args.batch_size, sampling_rate=16000,
                          progress=True)
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
    from wolofmrl.cli.server import Limits, serve

    serve(args.model, index=args.index, host=args.host, port=args.port, device=args.device, dtype=args.dtype,
          limits=Limits(max_audio_seconds=args.max_audio_seconds, max_batch=args.max_batch,
                        max_body_bytes=int(args.max_body_mb * 2**20),
                        max_request_audio_seconds=args.max_request_audio_seconds,
                        max_input_chars=args.max_input_chars),
          batch_size=args.batch_size, served_model_names=args.served_model_name)
    return 0


COMMANDS = {"index": cmd_index, "search": cmd_search, "embed": cmd_embed, "serve": cmd_serve}


def _model_width(folder: str | None) -> int | None:
    """The embedding width of a built model folder, read from its config.json (text_config.hidden_size)."""
    config = Path(folder) / "config.json" if folder else None
    if not config or not config.is_file():
        return None
    try:
        return int(json.loads(config.read_text(encoding="utf-8"))["text_config"]["hidden_size"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"--model {folder!r}: config.json is damaged (no text_config.hidden_size); rebuild the "
                         "model folder") from None


def _index_manifest(out: str) -> dict:
    """INDEX/manifest.json as a dict ({} when there is none or it is unreadable: `index` then reports the folder's
    state itself, with the fix)."""
    try:
        manifest = json.loads((Path(out) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _resolve_defaults(args) -> None:
    """Fill the arguments whose default depends on the situation: --model (the INDEX's model with `index --add`,
    else `default_model()`) and `index --dim` (the INDEX's own with --add, else INDEX_DIM). `index --add --dim N`
    with another N than the INDEX's raises ValueError (the INDEX keeps its shortlist width)."""
    command = args.command
    if command not in ("index", "embed", "serve"):
        return
    manifest = _index_manifest(args.out) if command == "index" and args.add else {}
    if args.model is None:
        recorded = manifest.get("model")
        args.model = recorded if isinstance(recorded, str) and recorded else default_model()
    if command == "index":
        built = manifest.get("coarse_dim")
        if args.dim is not None and isinstance(built, int) and args.dim != built:
            raise ValueError(f"--dim {args.dim}: INDEX {args.out!r} was built with --dim {built} and --add keeps "
                             "it; leave out --dim (or index into a new folder for another width)")
        if args.dim is None:
            args.dim = built if isinstance(built, int) else INDEX_DIM


def check_arguments(args) -> None:
    """Checks that need no model: run before the (slow) model load so that a mistake fails in about a second.

    Raises ValueError / FileNotFoundError / FileExistsError naming the argument and the fix."""
    command = args.command
    _resolve_defaults(args)
    model = getattr(args, "model", None)
    for name in ("batch_size", "k", "shortlist", "max_words", "chunk", "max_batch"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} {value}: use an integer >= 1")
    dim = getattr(args, "dim", None)
    if dim is not None:
        width = _model_width(model)
        if dim < 1 or (width and dim > width):
            raise ValueError(f"--dim {dim}: use a width in 1..{width or 'the model width'}"
                             + (" or leave out --dim for the full width" if command == "embed" else ""))
    for i, text in enumerate(getattr(args, "text", None) or []):
        if not text.strip():
            raise ValueError(f"--text #{i + 1} is empty: give a question with words (an empty query would still get "
                             "a ranking, meaningless)")
    for path in list(getattr(args, "audio", None) or []) + list(getattr(args, "queries", None) or []):
        if not Path(path).is_file():
            raise FileNotFoundError(f"audio file {path!r} not found: pass an existing audio file")
    if command == "index":
        from wolofmrl.cli.folder import check_out

        if not Path(args.docs).exists():
            raise FileNotFoundError(f"DOCS {args.docs!r} does not exist: pass a folder or a .txt/.md/.jsonl/.csv file")
        if args.engine == "ray":
            from wolofmrl.cli.ray_index import check_ray_out

            check_ray_out(Path(args.out), args.docs)
        else:
            check_out(args.out, args.docs, args.add)
    if command == "search":
        if not args.queries and not args.text:
            raise ValueError("search: give audio files (QUERY.wav ...) or --text 'a written query'")
        if not (Path(args.index) / "manifest.json").is_file():
            raise FileNotFoundError(f"INDEX {args.index!r} is not an index (no manifest.json): create it with "
                                    f"`wolofmrl index DOCS --out {args.index}`")
    if command == "embed":
        out = Path(args.out)
        if out.suffix.lower() not in (".npy", ".parquet") or out.is_dir():
            raise ValueError(f"--out {args.out!r}: use a .npy or .parquet file name (not a folder)")
        if not out.parent.is_dir():
            raise FileNotFoundError(f"--out {args.out!r}: the folder {str(out.parent)!r} does not exist; create it "
                                    "first")
    if command == "serve" and args.index and not (Path(args.index) / "manifest.json").is_file():
        raise FileNotFoundError(f"--index {args.index!r} is not an index (no manifest.json): create it with "
                                f"`wolofmrl index DOCS --out {args.index}`")
    if model and not (Path(model) / "config.json").is_file():
        raise FileNotFoundError(f"--model {model!r} is not a built model folder (no config.json): pass --model, set "
                                f"{MODEL_ENV}, or build one there with `python -m wolofmrl.build --out {model}`")


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
