"""Every command of the project answers --help (the commands README.md names)."""
import subprocess
import sys

import pytest

COMMANDS = ["train", "sample", "route", "grade", "bench", "env", "parallel", "data.make_corpus"]


@pytest.mark.parametrize("command", COMMANDS)
def test_command_answers_help(command):
    done = subprocess.run([sys.executable, "-m", f"minimoe.{command}", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout.lower()
