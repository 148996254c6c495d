"""harness.manifest: JSON-lines manifests read line by line, every problem located at `file:line`."""

from __future__ import annotations

import json
from pathlib import Path

from harness.manifest import Entry, Problem, manifest_lines, read_manifest, resolve_audio


def _write(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))
    return path


def test_entries_keep_their_line_numbers_across_blank_lines(tmp_path):
    first = {"audio_filepath": "a.wav", "duration": 1.5, "text": "hallo"}
    second = {"audio_filepath": "b.wav", "duration": 2.0, "text": "größe"}
    manifest = _write(tmp_path / "m.json", [json.dumps(first), "", "   ", json.dumps(second, ensure_ascii=False)])

    entries, problems = read_manifest(manifest)

    assert problems == []
    assert entries == [Entry(1, first), Entry(4, second)]


def test_a_crlf_manifest_reads_like_a_unix_one(tmp_path):
    manifest = tmp_path / "m.json"
    manifest.write_bytes(b'{"audio_filepath": "a.wav"}\r\n\r\n{"audio_filepath": "b.wav"}\r\n')

    entries, problems = read_manifest(manifest)

    assert problems == []
    assert [(e.line, e.data["audio_filepath"]) for e in entries] == [(1, "a.wav"), (3, "b.wav")]


def test_each_bad_line_is_one_located_problem_and_the_rest_still_read(tmp_path):
    manifest = _write(
        tmp_path / "m.json",
        [
            '{"audio_filepath": "a.wav"}',
            '{"audio_filepath": "b.wav",}',  # trailing comma
            '["b.wav", 2.0]',
            '"c.wav"',
            "42",
            "null",
            '{"audio_filepath": "d.wav"}',
        ],
    )

    entries, problems = read_manifest(manifest)

    assert [e.line for e in entries] == [1, 7]
    assert [p.where for p in problems] == [f"{manifest}:{n}" for n in (2, 3, 4, 5, 6)]
    assert problems[0].message.startswith("not valid JSON (")
    assert problems[0].message.endswith("); each line must be one JSON object")
    assert "Expecting property name" in problems[0].message  # the JSON decoder's own reason
    for problem in problems[1:]:
        assert problem.message == 'must be a JSON object like {"audio_filepath": ...}'
    assert str(problems[1]) == f'{manifest}:3: must be a JSON object like {{"audio_filepath": ...}}'


def test_a_latin1_line_names_the_byte_its_column_and_the_fix(tmp_path):
    manifest = _write(
        tmp_path / "m.json",
        ['{"text": "ok"}', '{"text": "gr\xf6\xdfe"}'.encode("latin-1"), '{"text": "still read"}'],
    )

    entries, problems = read_manifest(manifest)

    assert [e.line for e in entries] == [1, 3]
    (problem,) = problems
    assert problem.where == f"{manifest}:2"
    assert problem.message.startswith("not UTF-8 text (byte 0xf6 at column 13); save the manifest as UTF-8")
    assert f"`iconv -f latin1 -t utf-8 {manifest} > fixed.json`" in problem.message


def test_an_empty_manifest_has_neither_entries_nor_problems(tmp_path):
    manifest = tmp_path / "m.json"
    manifest.write_text("")
    assert read_manifest(manifest) == ([], [])


def test_problem_prints_where_then_message():
    assert str(Problem("data.train", "is missing")) == "data.train: is missing"


def test_manifest_lines_are_the_dicts_without_blank_lines(tmp_path):
    lines = [{"audio_filepath": "a.wav", "text": "größe"}, {"audio_filepath": "b.wav", "text": ""}]
    manifest = _write(tmp_path / "m.json", [json.dumps(lines[0], ensure_ascii=False), "", json.dumps(lines[1])])
    assert manifest_lines(manifest) == lines
    assert manifest_lines(str(manifest)) == lines  # a path as the spec holds it


def test_relative_audio_resolves_against_the_manifest_folder_not_the_cwd(tmp_path, monkeypatch):
    manifest = tmp_path / "data" / "train.json"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    assert resolve_audio(manifest, "clip.wav") == tmp_path / "data" / "clip.wav"
    assert resolve_audio(manifest, "audio/clip.wav") == tmp_path / "data" / "audio" / "clip.wav"
    assert resolve_audio(manifest, "../shared/clip.wav") == tmp_path / "data" / ".." / "shared" / "clip.wav"
    # A relative manifest path stays relative: the caller's CWD then decides, as it does for NeMo.
    assert resolve_audio(Path("data/train.json"), "clip.wav") == Path("data/clip.wav")


def test_absolute_and_home_audio_paths_ignore_the_manifest_folder(tmp_path, monkeypatch):
    manifest = tmp_path / "data" / "train.json"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    assert resolve_audio(manifest, "/srv/audio/clip.wav") == Path("/srv/audio/clip.wav")
    assert resolve_audio(manifest, "~/audio/clip.wav") == tmp_path / "home" / "audio" / "clip.wav"
