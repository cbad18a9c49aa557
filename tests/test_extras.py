"""Optional extras (pyproject's `data`, `ray` and `serve`): a command that needs one which is not
installed says so in one line, naming the extra, before any work; the help and the rest of
the CLI work without it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from cli_checks import assert_one_line_error

from kumovideo.cli import main


def _argv(tmp_path, command):
    clips = tmp_path / "clips.jsonl"
    clips.write_text("{}\n")
    return {
        "scan": ["data", "scan", str(tmp_path), "-o", str(tmp_path / "m.jsonl")],
        "scan --ray": ["data", "scan", str(tmp_path), "-o", str(tmp_path / "m.jsonl"), "--ray", "auto"],
        "cut --ray": ["data", "cut", str(clips), "-o", str(tmp_path / "cut"), "--ray", "local"],
        "cut": ["data", "cut", str(clips), "-o", str(tmp_path / "cut")],
        "encode": ["data", "encode", str(clips), "--vae", str(tmp_path), "-o", str(tmp_path / "latents")],
        "serve": ["serve", "--data-dir", str(tmp_path / "serve"), "--port", "0"],
    }[command]


@pytest.mark.parametrize(
    "command, missing, extra",
    [
        ("scan", ["cv2"], "data"),
        ("scan", ["scenedetect"], "data"),
        ("cut", ["cv2"], "data"),
        ("encode", ["cv2"], "data"),
        ("scan --ray", ["ray", "ray.data"], "ray"),
        ("cut --ray", ["ray", "ray.data"], "ray"),
        ("serve", ["starlette"], "serve"),
        ("serve", ["uvicorn"], "serve"),
        ("serve", ["multipart"], "serve"),
    ],
)
def test_a_missing_extra_is_named_in_one_line(tmp_path, capsys, monkeypatch, command, missing, extra):
    for module in missing:
        monkeypatch.setitem(sys.modules, module, None)  # `import cv2` now fails as if not installed
    argv = _argv(tmp_path, command)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(argv) == 2
    feature = "--ray" if "--ray" in command else "kumo serve" if command == "serve" else f"kumo data {command}"
    assert_one_line_error(
        capsys, f"{feature} needs the '{extra}' extra", f"({missing[-1]} is not installed)", f"'kumovideo[{extra}]'"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_help_filter_and_the_error_path_work_without_the_data_extra(tmp_path):
    """In a fresh process where cv2 and scenedetect cannot be imported at all."""
    (tmp_path / "cfg.yaml").write_text("filter:\n  cameras: [pan_left]\n")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["cv2"] = None
        sys.modules["scenedetect"] = None
        from kumovideo.cli import main
        for argv in (["--help"], ["data", "--help"], ["data", "scan", "--help"]):
            try:
                main(argv)
            except SystemExit as exc:
                assert exc.code == 0, argv
        # filter needs no OpenCV, its config check included
        from kumovideo.data.pipeline.config import load_config
        assert load_config({str(tmp_path / "cfg.yaml")!r}).filter.cameras == ["pan_left"]
        rc = main(["data", "filter", {str(tmp_path / "none.jsonl")!r}, "-o", {str(tmp_path / "k.jsonl")!r}])
        assert rc == 2, rc
        rc = main(["data", "scan", {str(tmp_path)!r}, "-o", {str(tmp_path / "m.jsonl")!r}])
        assert rc == 2, rc
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("kumo: error:")]
    assert errors == [
        f"kumo: error: manifest {tmp_path / 'none.jsonl'} not found; run `kumo data scan IN_DIR -o MANIFEST` first",
        "kumo: error: kumo data scan needs the 'data' extra (cv2 is not installed): pip install 'kumovideo[data]'",
    ], proc.stderr
    assert "Traceback" not in proc.stderr
