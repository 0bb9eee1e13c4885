"""train/device_carry.sh: what one device call cannot carry goes over several calls and arrives intact (real git,
tar, split and sha256sum in a scratch repository)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "train" / "device_carry.sh"


def sh(cwd, *args, env=None):
    return subprocess.run(["bash", "train/device_carry.sh", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    (root / "train").mkdir(parents=True)
    shutil.copy(SCRIPT, root / "train" / "device_carry.sh")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "train"], cwd=root, check=True)
    payload = root / "build" / "carry"
    payload.mkdir(parents=True)
    (payload / "weights.bin").write_bytes(os.urandom(2_500_000))
    (payload / "small.json").write_text('{"a": 1}')
    return root


def test_parts_gathered_over_calls_unpack_byte_for_byte(repo, tmp_path):
    out = sh(repo, "split", "build/carry", env={"PART_MIB": "1"})
    assert out.returncode == 0, out.stderr
    parts = sorted(p.name for p in (repo / ".carry").iterdir() if p.is_dir())
    assert parts == ["1", "2", "3"] and "3 part(s) of <= 1 MiB" in out.stdout
    assert "/.carry/" in (repo / ".git" / "info" / "exclude").read_text()  # never committed
    there = tmp_path / "there"  # the device's checkout: each call brings one part, the one before is gone
    (there / "train").mkdir(parents=True)
    shutil.copy(SCRIPT, there / "train" / "device_carry.sh")
    stage = {"STAGE": str(tmp_path / "stage")}
    for k in parts:
        shutil.rmtree(there / ".carry", ignore_errors=True)
        shutil.copytree(repo / ".carry" / k, there / ".carry" / k)
        out = sh(there, "gather", env=stage)
        assert out.returncode == 0, out.stderr
    assert "gathered all 3 parts" in out.stdout
    for name in ("weights.bin", "small.json"):
        assert (there / "build" / "carry" / name).read_bytes() == (repo / "build" / "carry" / name).read_bytes()


def test_a_damaged_part_is_refused_and_nothing_is_unpacked(repo, tmp_path):
    assert sh(repo, "split", "build/carry", env={"PART_MIB": "2"}).returncode == 0
    there = tmp_path / "there"
    (there / "train").mkdir(parents=True)
    shutil.copy(SCRIPT, there / "train" / "device_carry.sh")
    shutil.copytree(repo / ".carry", there / ".carry")
    with open(there / ".carry" / "2" / "part-01", "r+b") as f:
        f.write(b"X")
    out = sh(there, "gather", env={"STAGE": str(tmp_path / "stage")})
    assert out.returncode == 1 and "damaged" in out.stderr
    assert not (there / "build").exists()


def test_no_part_carried_is_named(tmp_path):
    (tmp_path / "train").mkdir()
    shutil.copy(SCRIPT, tmp_path / "train" / "device_carry.sh")
    out = sh(tmp_path, "gather", env={"STAGE": str(tmp_path / "stage")})
    assert out.returncode == 1 and "no .carry/<k>/ part was carried" in out.stderr


def test_a_bad_split_keeps_the_last_good_one_and_a_mixed_or_repeated_gather_unpacks_nothing(repo, tmp_path):
    assert sh(repo, "split", "build/carry", env={"PART_MIB": "1"}).returncode == 0
    first = (repo / ".carry" / "manifest").read_text()
    for args in ((), ("build/carry", "no/such/path")):
        out = sh(repo, "split", *args)
        assert out.returncode == 2 and ("name the paths" in out.stderr or "no/such/path does not exist" in out.stderr)
    assert (repo / ".carry" / "manifest").read_text() == first and not (repo / ".carry.new").exists()
    there = tmp_path / "there"
    (there / "train").mkdir(parents=True)
    shutil.copy(SCRIPT, there / "train" / "device_carry.sh")
    stage = {"STAGE": str(tmp_path / "stage")}
    shutil.copytree(repo / ".carry" / "1", there / ".carry" / "1")
    assert "gathered 1 of 3" in sh(there, "gather", env=stage).stdout
    (repo / "build" / "carry" / "small.json").write_text('{"a": 2}')  # a new split: other parts, other manifest
    assert sh(repo, "split", "build/carry", env={"PART_MIB": "1"}).returncode == 0
    shutil.rmtree(there / ".carry")
    shutil.copytree(repo / ".carry" / "2", there / ".carry" / "2")
    out = sh(there, "gather", env=stage)
    assert out.returncode == 0 and "another split" in out.stdout and "gathered 1 of 3" in out.stdout
    for k in ("1", "3"):
        shutil.rmtree(there / ".carry")
        shutil.copytree(repo / ".carry" / k, there / ".carry" / k)
        out = sh(there, "gather", env=stage)
    assert out.returncode == 0 and "gathered all 3 parts" in out.stdout, out.stdout + out.stderr
    assert (there / "build" / "carry" / "small.json").read_text() == '{"a": 2}'
    (there / "build" / "carry" / "small.json").write_text("edited there")
    out = sh(there, "gather", env=stage)  # the same call again: the stage was emptied, nothing is unpacked
    assert "gathered 1 of 3" in out.stdout and (there / "build" / "carry" / "small.json").read_text() == "edited there"
