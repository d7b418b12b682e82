"""What the tests of the chapters' checks (tests/test_checks_chNN.py) share."""

import pytest

from utils.checks.common import CheckFailed


def fails(check, answer, *words) -> str:
    """``check(answer)`` fails with one message holding every one of ``words``."""
    with pytest.raises(CheckFailed) as info:
        check(answer)
    text = str(info.value)
    assert all(word in text for word in words), text
    return text


def passes(capsys, *pairs) -> None:
    """Each ``(check, answer)`` passes, printing its one "✓" line."""
    for check, answer in pairs:
        check(answer)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(pairs), lines
    assert all(line.startswith("✓ ") for line in lines), lines
