"""Which files a run takes: folders walked, globs applied, what kb cannot read reported."""

from ingest.discover import discover, sha256_of
from ingest.formats import SUFFIXES


def test_discover_walks_recursively_with_globs(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one.md").write_text("one")
    (tmp_path / "a" / "b" / "two.txt").write_text("two")
    (tmp_path / "a" / "b" / "three.pdf").write_bytes(b"")
    (tmp_path / "a" / "skip.bin").write_bytes(b"x")
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a")  # a symlink loop must not hang the walk
    files, errors = discover([tmp_path / "a"])
    assert sorted(f.name for f in files) == ["one.md", "three.pdf", "two.txt"]
    assert errors == []
    files, _ = discover([tmp_path / "a"], include=["*.md", "*.txt"], exclude=["b/*"])
    assert [f.name for f in files] == ["one.md"]
    files, errors = discover([tmp_path / "missing", tmp_path / "a" / "skip.bin"])
    assert files == [] and {e.reason for e in errors} == {"no such file or folder", "unsupported file type '.bin'"}


def test_discover_takes_every_suffix_a_format_registered_in_any_case(tmp_path):
    for number, suffix in enumerate(sorted(SUFFIXES)):
        (tmp_path / f"{number}{suffix.upper() if number % 2 else suffix}").write_text("text")
    (tmp_path / "notes.docx.bak").write_text("not a document")
    files, errors = discover([tmp_path])
    assert len(files) == len(SUFFIXES) and errors == []
    assert {".md", ".markdown", ".rst", ".txt", ".html", ".htm", ".xhtml", ".pdf"} <= set(SUFFIXES)


def test_sha256_of_a_file_is_that_of_its_bytes(tmp_path):
    import hashlib

    path = tmp_path / "big.txt"
    data = bytes(range(256)) * 9000  # more than one block read
    path.write_bytes(data)
    assert sha256_of(path) == hashlib.sha256(data).hexdigest()
