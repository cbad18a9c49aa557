"""What every refused command must look like, shared by the CLI tests."""

from __future__ import annotations


def assert_one_line_error(capsys, *needles: str) -> str:
    """The single stderr line `kumo: error: ...` of a refused command, holding every needle;
    no traceback and nothing else on stderr."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    assert lines[0].startswith("kumo: error: ") and "Traceback" not in err, lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]
