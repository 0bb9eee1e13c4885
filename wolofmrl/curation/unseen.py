"""Unseen-source holdout (issue 23): whole sources that no training row is drawn from.

The sentence-hash splits (`splits.sentence_split`) put sentences of one catalog in train and test alike, so a
model can pass them by recognising the catalog's wording. The unseen splits hold out *whole sources* instead; a
row's split is decided by its source and group alone (never by hash), the same in every language, so a held-out
message's translations are held out too.

The rule (fixed; a source is named by ``source`` and ``group``, the group being ``<package>:<gettext domain>``
for gettext, the template's package for debconf, the i18n folder for MediaWiki):

``unseen_test``
    - every debconf template of every package (``source == "debconf"``: console-data, tasksel in bookworm;
      about 50 Wolof strings with their French twins);
    - every MediaWiki i18n folder outside the core (``languages/i18n``): the bundled extensions and skins
      (``extensions-core/*``, ``skins/*``; WikiEditor, VisualEditor, InputBox, Math, ... about 70 Wolof strings);
    - French-only part: the gettext catalogs of the GNOME games in `UNSEEN_TEST_PACKAGES` (no Wolof catalog; their
      French and other-language strings are never voiced in training).
``unseen_dev``
    - the gettext catalogs of the Wolof-translated packages in `UNSEEN_DEV_PACKAGES` (compizconfig-settings-manager,
      console-data, lomiri-common, isomaster, asunder, tasksel, libnewt0.52, menu: about 115 Wolof strings of >= 2
      words with a French twin);
    - French-only part: the GNOME games of `UNSEEN_DEV_PACKAGES` without a Wolof catalog.

The Wolof packages were chosen so that each unseen split holds >= ~100 Wolof sentences with a French twin while
training keeps the largest Wolof sources (MediaWiki core, iso-codes, geonames, UDHR, FreeDict, wolof-nlp). Every
other Debian package with a Wolof gettext catalog (``apt-file search /locale/wo/LC_MESSAGES/``: ayatana-*,
granite, vala-panel, ...) ships an empty one (header only) in bookworm. The catalogs of klavaro, tuxpaint and
tuxtype are reserved (`offline_sources.RESERVED`) and read nowhere, neither here nor in training.

Leakage (applied in `speech_texts`): a train row whose text equals (after `dedupe_key`) any unseen row's text, or
that translates the same English msgid as any unseen row, is dropped; near-duplicates of an unseen string are
merged into the unseen row. tests/test_unseen.py checks that no train row shares a group, a normalised text or an
English msgid with an unseen row.
"""
from __future__ import annotations

UNSEEN_SPLITS = ("unseen_dev", "unseen_test")

# Wolof-translated gettext packages held out as unseen_dev (with their catalogs in every language)
UNSEEN_DEV_WOLOF = ("compizconfig-settings-manager", "console-data", "lomiri-common", "isomaster", "asunder",
                    "tasksel", "libnewt0.52", "menu")
# French-only part: GNOME games (no Wolof catalog), whole packages
UNSEEN_DEV_FRENCH = ("gnome-mines", "gnome-sudoku", "gnome-chess", "gnome-robots", "quadrapassel", "swell-foop",
                     "lightsoff")
UNSEEN_TEST_FRENCH = ("iagno", "tali", "four-in-a-row", "gnome-nibbles", "five-or-more", "gnome-klotski",
                      "gnome-tetravex", "atomix-data")
UNSEEN_DEV_PACKAGES = UNSEEN_DEV_WOLOF + UNSEEN_DEV_FRENCH
UNSEEN_TEST_PACKAGES = UNSEEN_TEST_FRENCH
MEDIAWIKI_CORE = "languages/i18n"  # the one MediaWiki group that training reads


def source_group(source: str, group: str) -> str:
    """The row field ``group``: ``<source>/<group>`` (e.g. ``gettext/console-data:console-data``,
    ``mediawiki/extensions-core/WikiEditor/i18n``, ``debconf/tasksel``)."""
    return f"{source}/{group}"


def unseen_split(source: str, group: str) -> str | None:
    """``"unseen_dev"``, ``"unseen_test"`` or None (the source is not held out) for a row's source and group."""
    if source == "debconf":
        return "unseen_test"
    if source == "mediawiki":
        return None if group == MEDIAWIKI_CORE else "unseen_test"
    if source == "gettext":
        package = group.split(":", 1)[0]
        if package in UNSEEN_DEV_PACKAGES:
            return "unseen_dev"
        if package in UNSEEN_TEST_PACKAGES:
            return "unseen_test"
    return None
