"""Hostile archives: nothing is written anywhere, links are never followed, bombs stop before they expand."""

from __future__ import annotations

import os
import uuid
import zipfile
from pathlib import Path

import pytest

from grader.intake import ArchiveError, ArchiveLimits, IntakeError, SafeArchive, read_inputs
from tests.intake_fixtures import example, write_zip, zip_bytes

CORRECT = example("correct")


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def zeros_zip(path: Path, name: str, size: int) -> Path:
    """A zip holding `size` zero bytes: compresses about 1000 to 1."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive, archive.open(name, "w", force_zip64=True) as out:
        chunk = bytes(1024 * 1024)
        for _ in range(size // len(chunk)):
            out.write(chunk)
    return path


def test_entries_that_climb_out_or_are_absolute_are_skipped_and_never_written(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    marker = f"evil_{uuid.uuid4().hex}.py"
    path = write_zip(work / "s.zip", {
        f"../../{marker}": "print('escaped')",
        f"hw5/../../{marker}": "x",
        f"/tmp/{marker}": "x",
        f"C:\\Windows\\{marker}": "x",
        "hw5\\neuralnet\\layers.py": CORRECT,  # a zip made on Windows: backslashes are folders, not an attack
    })
    before = snapshot(tmp_path)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        intake = read_inputs([path])
    finally:
        os.chdir(cwd)
    [submission] = intake.submissions
    assert submission.source == CORRECT
    assert snapshot(tmp_path) == before
    assert not (Path("/tmp") / marker).exists()
    assert not list(Path("/").glob(marker))
    assert sum("climbs out" in w for w in intake.warnings) == 2
    assert sum("absolute path" in w for w in intake.warnings) == 2


def test_symbolic_link_entries_are_never_followed(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "s.zip", {"hw5/readme.txt": "hi"}, symlinks={"hw5/layers.py": "/etc/passwd"})
    intake = read_inputs([path])
    [submission] = intake.submissions
    # not read, but said: the file to grade was a link (once, "not found" hid why)
    assert submission.source is None and submission.status == "unreadable"
    assert submission.detail == "s.zip:hw5/layers.py was not read: it is a symbolic link"
    assert any("symbolic link" in w for w in intake.warnings)
    with SafeArchive(path, name="s.zip") as archive:
        assert [e.path for e in archive.entries] == ["hw5/readme.txt"]


def test_symbolic_links_in_a_folder_are_never_followed(tmp_path: Path) -> None:
    root = tmp_path / "class"
    (root / "alice").mkdir(parents=True)
    (root / "alice" / "layers.py").symlink_to("/etc/passwd")
    for name in ("bob", "dave"):
        (root / name).mkdir()
        (root / name / "layers.py").write_bytes(CORRECT)
    (root / "carol").symlink_to("/etc", target_is_directory=True)
    intake = read_inputs([root])
    students = {s.key: s for s in intake.submissions}
    assert students["alice"].source is None and students["alice"].status == "unreadable"
    assert "symbolic link" in (students["alice"].detail or "")
    assert students["bob"].source == CORRECT
    assert "carol" not in students
    assert sum("symbolic link" in w for w in intake.warnings) == 2


def test_a_student_whose_only_file_is_a_link_is_still_in_the_results(tmp_path: Path) -> None:
    """In a class zip and in a Canvas download: a student whose one entry was a link (skipped, never
    read) is a row saying so, not missing from the roster and every export."""
    link = {"symonly/layers.py": "/etc/passwd"}
    students = write_zip(tmp_path / "class.zip", {"ada/layers.py": CORRECT}, symlinks=link)
    canvas = write_zip(tmp_path / "submissions.zip", {"alpha_200001_1_layers.py": CORRECT},
                       symlinks={"delta_200004_4_layers.py": "/etc/passwd"})
    files = write_zip(tmp_path / "files.zip", {"alice.py": CORRECT, "carol.py": CORRECT}, symlinks={"bob.py": "/x"})
    # a class of two, one of them a link: still a class, not alice alone graded as the whole upload
    for links in ({"bob.py": "/x"}, {"bob.zip": "/x"}):
        pair = write_zip(tmp_path / "pair.zip", {"alice.py": CORRECT}, symlinks=links)
        assert {s.key: s.status for s in read_inputs([pair]).submissions} == {"alice": "ok", "bob": "unreadable"}
    nested = write_zip(tmp_path / "nested.zip", {
        "alice.zip": zip_bytes({}, symlinks={"layers.py": "/etc/passwd"}), "carol/layers.py": CORRECT})
    for path, key in ((students, "symonly"), (canvas, "200004"), (files, "bob"), (nested, "alice")):
        rows = {s.key: s for s in read_inputs([path]).submissions}
        assert len(rows) == (3 if path == files else 2) and rows[key].source is None, path
        assert rows[key].status == "unreadable" and "symbolic link" in (rows[key].detail or "")
    # a link loses to a real file, even one deeper down
    both = write_zip(tmp_path / "both.zip", {"ada/src/deep/layers.py": CORRECT}, symlinks={"ada/layers.py": "/x"})
    [ada] = read_inputs([both]).submissions
    assert ada.source == CORRECT


@pytest.mark.parametrize(("entries", "links", "graded"), [
    ({"hw.zip": zip_bytes({"layers.py": CORRECT})}, ["layers.py"], {"s": "ok"}),  # the zip's file is graded
    ({"layers (1).py": CORRECT}, ["layers.py"], {"s": "ok"}),  # and a renamed one
    # two top-level .py files are two students, one of them a link as much as two real ones
    ({"hw.py": CORRECT}, ["helper.py"], {"hw": "ok", "helper": "unreadable"}),
    ({"src/layers.py": CORRECT, "train.py": "from src.layers import relu_forward\n"}, ["notes.py"], {"s": "ok"}),
    ({"alice/layers.py": CORRECT, "bob/layers.py": CORRECT, "carol/layers.py": CORRECT}, ["layers.py"],
     {"alice": "ok", "bob": "ok", "carol": "ok"}),  # a link at the top makes no one student of a class
    ({"alice/layers.py": CORRECT, "bob/layers.py": CORRECT}, ["alice.py"], {"alice": "ok", "bob": "ok"}),
    # nor a link named like the file to grade, in any case or numbering; nor Carol.py beside carol/
    ({"alice/layers.py": CORRECT, "carol/layers.py": CORRECT}, ["Layers.py", "layers (1).py", "Carol.py"],
     {"alice": "ok", "carol": "ok"}),
])
def test_a_link_decides_no_layout_and_is_never_the_file_graded(tmp_path: Path, entries: dict[str, bytes | str],
                                                                 links: list[str], graded: dict[str, str]) -> None:
    path = write_zip(tmp_path / "s.zip", entries, symlinks={name: "/etc/passwd" for name in links})
    submissions = read_inputs([path]).submissions
    assert {s.key: s.status for s in submissions} == graded
    assert all(s.source == CORRECT for s in submissions if s.status == "ok")


def test_a_zip_bomb_by_total_size_is_refused_before_expanding(tmp_path: Path) -> None:
    path = zeros_zip(tmp_path / "bomb.zip", "layers.py", 3 * 1024 * 1024)
    with pytest.raises(ArchiveError, match=r"would expand to 3\.0 MB, more than the limit of 2\.0 MB"):
        read_inputs([path], limits=ArchiveLimits(max_total_bytes=2 * 1024 * 1024))


def test_a_zip_bomb_by_ratio_is_refused_with_the_default_limits(tmp_path: Path) -> None:
    path = zeros_zip(tmp_path / "bomb.zip", "hw5/neuralnet/layers.py", 64 * 1024 * 1024)
    assert path.stat().st_size < 200_000
    with pytest.raises(ArchiveError, match="zip bomb"):
        read_inputs([path])


def test_a_bomb_inside_one_students_zip_only_costs_that_student(tmp_path: Path) -> None:
    bomb = zeros_zip(tmp_path / "inner.zip", "layers.py", 64 * 1024 * 1024).read_bytes()
    path = write_zip(tmp_path / "class.zip", {"alice.zip": bomb, "bob/layers.py": CORRECT})
    students = {s.key: s for s in read_inputs([path]).submissions}
    assert students["alice"].status == "unreadable" and "zip bomb" in students["alice"].detail
    assert students["bob"].source == CORRECT


def test_too_many_entries_are_refused(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "many.zip", {f"f{i}.txt": "" for i in range(60)} | {"layers.py": CORRECT})
    with pytest.raises(ArchiveError, match="61 entries, more than the limit of 50"):
        read_inputs([path], limits=ArchiveLimits(max_entries=50))


def test_archives_nested_too_deep_are_refused(tmp_path: Path) -> None:
    inner = zip_bytes({"layers.py": CORRECT})
    for level in range(3):
        inner = zip_bytes({f"level{level}.zip": inner})
    path = write_zip(tmp_path / "class.zip", {"alice.zip": inner, "bob.py": CORRECT})
    students = {s.key: s for s in read_inputs([path]).submissions}
    assert students["alice"].status == "unreadable"
    assert "nested more than 3 archives deep" in students["alice"].detail
    assert students["bob"].source == CORRECT


def test_the_decompression_budget_is_shared_by_nested_archives(tmp_path: Path) -> None:
    students = {f"s{i}.zip": zip_bytes({"layers.py": CORRECT + b"#" * 20_000}) for i in range(4)}
    path = write_zip(tmp_path / "class.zip", students)
    limits = ArchiveLimits(max_total_bytes=50_000)
    found = {s.key: s for s in read_inputs([path], limits=limits).submissions}
    assert sum(s.status == "ok" for s in found.values()) < 4
    assert any("past" in s.detail and "uncompressed" in s.detail for s in found.values())


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_corrupt_archive_is_one_clear_error(tmp_path: Path, damage: str) -> None:
    good = zip_bytes({"hw5/layers.py": CORRECT, "hw5/utils.py": "pass\n" * 200})
    data = {"garbage": os.urandom(2000), "truncated": good[: len(good) // 2], "empty": b""}[damage]
    path = tmp_path / "class.zip"
    path.write_bytes(data)
    with pytest.raises(IntakeError, match="is not a readable zip archive") as caught:
        read_inputs([path])
    assert "\n" not in str(caught.value)


def test_a_corrupt_entry_costs_only_that_student(tmp_path: Path) -> None:
    good = bytearray(zip_bytes({"layers.py": CORRECT}))
    at = good.index(b"layers.py") + len(b"layers.py") + 10  # inside the compressed data
    good[at] ^= 0xFF
    path = write_zip(tmp_path / "class.zip", {"alice.zip": bytes(good), "bob.py": CORRECT})
    students = {s.key: s for s in read_inputs([path]).submissions}
    assert students["alice"].status == "unreadable" and "corrupt" in students["alice"].detail
    assert students["bob"].source == CORRECT


def test_an_encrypted_entry_is_reported_not_read(tmp_path: Path) -> None:
    data = bytearray(zip_bytes({"layers.py": CORRECT}))
    # zipfile cannot write encrypted entries: set the "encrypted" flag in both headers instead
    data[6] |= 0x1
    central = data.rindex(b"PK\x01\x02")
    data[central + 8] |= 0x1
    path = tmp_path / "locked.zip"
    path.write_bytes(bytes(data))
    [submission] = read_inputs([path]).submissions
    assert submission.status == "unreadable" and "encrypted" in submission.detail


def test_a_header_that_lies_about_the_size_reads_no_more_than_declared(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "s.zip", {"layers.py": CORRECT})
    data = bytearray(path.read_bytes())
    # shrink the declared size in the central directory: reading must stop there (and fail the CRC)
    central = data.rindex(b"PK\x01\x02")
    data[central + 24:central + 28] = (10).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with SafeArchive(path, name="s.zip") as archive:
        [entry] = archive.entries
        assert entry.size == 10
        with pytest.raises(ArchiveError):
            archive.read(entry)


def test_utf8_names_without_the_utf8_flag_are_read_as_utf8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Some tools (older Canvas downloads among them) store UTF-8 names without the zip's UTF-8 flag,
    which zipfile then reads as cp437 (`m├╝ller`): such names are read as UTF-8."""
    path = tmp_path / "noflag.zip"
    with monkeypatch.context() as patched:
        patched.setattr(zipfile.ZipInfo, "_encodeFilenameFlags",
                        lambda self: (self.filename.encode("utf-8"), self.flag_bits & ~0x800))
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("müllerjürgen/layers.py", "x = 1\n")
            archive.writestr("nguyễnvănan/layers.py", "x = 2\n")
    with zipfile.ZipFile(path) as archive:  # what zipfile itself makes of them
        assert "müllerjürgen/layers.py" not in archive.namelist()
    intake = read_inputs([path])
    assert sorted(s.key for s in intake.submissions) == ["müllerjürgen", "nguyễnvănan"]
