"""The sharded IVF-PQ funnel (wolofmrl.sharded): train once, encode shards apart, merge in RAM or on disk."""

import shutil

import numpy as np
import pytest

from wolofmrl.retrieval import FunnelIndex, exact_search, prefix_normalize
from wolofmrl.sharded import ShardedFunnelIndex, encode_shard, merge_shards, train_ivfpq, write_store


def _clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """SYNTHETIC unit vectors around 200 random centres (some structure, like embeddings of topics)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, dim)).astype(np.float32)
    return prefix_normalize(centres[rng.integers(0, 200, n)] + 0.6 * rng.standard_normal((n, dim)), None)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    import faiss

    root = tmp_path_factory.mktemp("sharded")
    vectors = _clustered(6_000, 64)
    trained = train_ivfpq(vectors, coarse_dim=64, nlist=32, m=16, nbits=6)
    faiss.write_index(trained, str(root / "trained.faiss"))
    shards = []
    for i, s in enumerate(range(0, len(vectors), 2500)):  # 3 shards, encoded independently
        shards.append(root / f"{i}.faiss")
        assert encode_shard(root / "trained.faiss", vectors[s:s + 2500], s, shards[-1]) == len(vectors[s:s + 2500])
    for name, ondisk in (("ram", False), ("disk", True)):
        merge_shards(root / "trained.faiss", shards, root / name, len(vectors), 64, ondisk=ondisk, nprobe=8)
        write_store(root / name, (vectors[s:s + 4000] for s in range(0, len(vectors), 4000)), len(vectors), 64)
    return root, vectors


def test_on_disk_merge_equals_in_ram_merge_and_finds_the_exact_top10(built, tmp_path):
    root, vectors = built
    assert (root / "disk" / "coarse.ivfdata").is_file() and not (root / "ram" / "coarse.ivfdata").exists()
    moved = tmp_path / "moved"
    shutil.copytree(root / "disk", moved)  # the on-disk lists are found beside coarse.faiss, wherever it lives
    ram, disk = FunnelIndex.load(root / "ram"), FunnelIndex.load(moved)
    assert isinstance(disk, ShardedFunnelIndex) and len(disk) == len(vectors) and disk.vectors.dtype == np.float16
    noise = np.random.default_rng(1).standard_normal((50, 64)).astype(np.float32)
    queries = prefix_normalize(vectors[::120] + 0.05 * noise, None)  # near passages, as real queries are
    s_ram, i_ram = ram.search(queries, 10, 400)
    s_disk, i_disk = disk.search(queries, 10, 400)
    assert np.array_equal(i_ram, i_disk) and np.allclose(s_ram, s_disk)
    _, exact = exact_search(queries, vectors, 10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i_disk, exact)])
    assert overlap >= 0.95, overlap
    assert 0 < disk.macs_per_query(len(queries), 400) < len(vectors) * 64  # less work than exact search
    sizes = disk.nbytes()
    assert sizes["full"] >= len(vectors) * 64 * 2 and sizes["coarse"] >= len(vectors) * (12 + 8)


def test_inconsistent_or_bad_inputs_raise(built, tmp_path):
    root, vectors = built
    with pytest.raises(ValueError, match="must divide coarse_dim"):
        train_ivfpq(vectors, coarse_dim=32, nlist=8, m=5)
    with pytest.raises(ValueError, match="needs at least"):
        train_ivfpq(vectors[:500], coarse_dim=32, nlist=8, m=16)
    with pytest.raises(ValueError, match="expected"):
        merge_shards(root / "trained.faiss", [root / "0.faiss"], tmp_path / "x", len(vectors), 64)
    broken = tmp_path / "broken"
    shutil.copytree(root / "ram", broken)
    write_store(broken, [vectors[:100]], 100, 64)
    with pytest.raises(ValueError, match="inconsistent"):
        FunnelIndex.load(broken)
    (broken / "full.npy").unlink()
    with pytest.raises(FileNotFoundError, match="full.npy"):
        FunnelIndex.load(broken)
