"""The atomic writer: content lands whole, failures leave the old file and no temporary."""

from __future__ import annotations

from pathlib import Path

import pytest

from scalegmn.weightgraph.io import atomic_write, sha256_bytes, sha256_file


def test_bytes_str_fileobj_and_path_writers(tmp_path: Path) -> None:
    assert atomic_write(tmp_path / "a.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert atomic_write(tmp_path / "sub" / "b.txt", "é").read_text("utf-8") == "é"
    atomic_write(tmp_path / "c.bin", lambda f: f.write(b"xyz"))
    assert (tmp_path / "c.bin").read_bytes() == b"xyz"
    seen: list[Path] = []

    def writer(p: Path) -> None:
        seen.append(p)
        p.write_bytes(b"by path")

    atomic_write(tmp_path / "d.png", writer, to_path=True)
    assert (tmp_path / "d.png").read_bytes() == b"by path"
    assert seen[0].suffix == ".png" and seen[0] != tmp_path / "d.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "c.bin", "d.png", "sub"]


def test_failed_write_keeps_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = atomic_write(tmp_path / "x.json", "old")

    def boom(f: object) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_checksums_agree(tmp_path: Path) -> None:
    p = atomic_write(tmp_path / "f", b"abc" * 1000)
    assert sha256_file(p) == sha256_bytes(b"abc" * 1000)
    assert sha256_file(p) != sha256_bytes(b"abc" * 999)
