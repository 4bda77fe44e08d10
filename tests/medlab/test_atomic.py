"""medlab.atomic: what a reader of files another process writes can rely on."""

import shutil

from medlab import atomic


def test_a_folder_copied_while_its_writer_replaces_a_file_copies_the_complete_version(
    tmp_path, monkeypatch
):
    """The race of a resumed multi-process run: process 0 writes runs.json (through
    runs.partial.json) while process 1 copies the folder. Neither the temporary file nor its
    vanishing stops the copy, and the copy has the complete file."""
    source = tmp_path / "summary"
    (source / "sub").mkdir(parents=True)
    (source / "runs.json").write_text("old")
    (source / "sub" / "metrics.json").write_text("{}")
    (source / "runs.partial.json").write_text("half")
    copy = shutil.copy2

    def writer_renames_meanwhile(src, dst):
        if src.endswith("gone.png"):  # listed, then renamed away before its copy
            (source / "gone.png").unlink()
        return copy(src, dst)

    (source / "gone.png").write_text("x")
    monkeypatch.setattr(atomic.shutil, "copy2", writer_renames_meanwhile)
    atomic.copy_folder_being_written(source, tmp_path / "copy")
    copied = sorted(
        p.relative_to(tmp_path / "copy").as_posix() for p in (tmp_path / "copy").rglob("*")
    )
    assert copied == ["runs.json", "sub", "sub/metrics.json"]
    assert (tmp_path / "copy" / "runs.json").read_text() == "old"
