"""Text cleaning, junk detection and normalisation shared by every source.

Junk is *reported*, never silently removed: `junk_reason` returns the reason a
string is unusable (or None) and the stages count it.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# printf / python / .NET / shell / MediaWiki parameter placeholders
_FORMAT_RE = re.compile(
    r"%(?:\d+\$)?[-+ #0']*\d*(?:\.\d+)?(?:hh|h|ll|l|L|z|j|t)?[diouxXeEfFgGcsSpn%@]"  # %s %d %1$s %.2f
    r"|%\(\w+\)[sdif]"                        # %(name)s
    r"|\{\{?[\w.:\-]*\}?\}"                   # {0} {name} {{PLURAL ...}} openers
    r"|\$\d+|\$\{\w+\}"                        # $1 ${name}
    r"|\b(?:GRANT|PLURAL|GENDER|SITENAME|int):",
)
# HTML tags / entities, wikitext links, bold/italics, templates, tables
_MARKUP_RE = re.compile(
    r"</?[a-zA-Z][^>]*>|&[a-zA-Z]+;|&#\d+;|\[\[|\]\]|\[https?:|'''|''|\{\{|\}\}|\{\||^\s*[*#:;=]|__[A-Z]+__|https?://"
)
# GTK "_File", Qt/Windows "&File": a single mnemonic marker before a letter
_ACCEL_RE = re.compile(r"(?<![\w&_])[_&](?=\w)")
_WS_RE = re.compile(r"\s+")
_WORD_RE = re.compile(r"\w+", re.UNICODE)
_LETTER_RE = re.compile(r"[^\W\d_]")
_COMBINING_RE = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


def clean(text: str) -> str:
    """NFC, typographic spaces and apostrophes unified, one space between words."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\u00a0", " ").replace("\u202f", " ").replace("\u2019", "'").replace("\u2018", "'")
    text = text.replace("\\n", " ")
    return _WS_RE.sub(" ", text).strip()


def strip_accelerators(text: str) -> tuple[str, bool]:
    new = _ACCEL_RE.sub("", text)
    return new, new != text


def junk_reason(text: str) -> str | None:
    if not text or not text.strip():
        return "empty_text"
    if _FORMAT_RE.search(text):
        return "format_string"
    if _MARKUP_RE.search(text):
        return "markup"
    letters = len(_LETTER_RE.findall(text))
    if letters < 2:
        return "no_letters"
    if letters < 0.5 * (len(text) - text.count(" ")):
        return "mostly_symbols"
    return None


def n_words(text: str) -> int:
    return len(_WORD_RE.findall(text))


@lru_cache(maxsize=1)
def _wolof_normalize():
    from wolof_normalizer import normalize

    return normalize


def normalize_wolof(text: str) -> str:
    """Wolof to CLAD orthography (wolof-normalizer's lexicon + guarded grapheme rules)."""
    return clean(_wolof_normalize()(clean(text)))


def normalize_french(text: str) -> str:
    return clean(text)


def dedupe_key(text: str) -> str:
    """Near-duplicate key: case-folded, accents and punctuation removed.

    Two strings that differ only in case, diacritics, punctuation or spacing
    (``Enregistrer…`` / ``enregistrer``) share a key.
    """
    text = _COMBINING_RE.sub("", unicodedata.normalize("NFKD", text.casefold()))
    return " ".join(_WORD_RE.findall(text))


def length_ratio(a: str, b: str) -> float:
    la, lb = max(1, len(a)), max(1, len(b))
    return max(la, lb) / min(la, lb)


# --- Wolof numerals, so digits are spoken instead of dropped by the G2P ----------------
_ONES = ["", "benn", "ñaar", "ñett", "ñeent", "juróom", "juróom-benn", "juróom-ñaar", "juróom-ñett", "juróom-ñeent"]


def _genitive(word: str) -> str:
    # Guérin 2021: multiples of 100/1000 take -i on the multiplier (ñaari téeméer)
    return word + "i" if not word.endswith("i") else word


def wolof_number(n: int) -> str:
    """Spell 0 <= n < 10,000 in Wolof (parsed back by `wolof_numbers.parse_number`)."""
    if n == 0:
        return "tus"
    parts = []
    for unit, name in ((1000, "junni"), (100, "téeméer"), (10, "fukk")):
        q, n = divmod(n, unit)
        if q == 0:
            continue
        if q == 1:
            parts.append(name)
        else:
            head = wolof_number(q) if q >= 10 else _ONES[q]
            parts.append(f"{_genitive(head)} {name}" if unit >= 100 else f"{head} {name}")
    if n:
        parts.append(_ONES[n])
    return " ak ".join(parts)


_DIGITS_RE = re.compile(r"\d+")


def spell_wolof_numbers(text: str) -> str:
    def sub(m: re.Match) -> str:
        v = int(m.group(0))
        # above 9,999 the genitive of a compound multiplier is ambiguous: read digit by digit
        return wolof_number(v) if v < 10_000 else " ".join(wolof_number(int(d)) for d in m.group(0))

    return _DIGITS_RE.sub(sub, text)
