"""Fixtures: the project's mock LLM server, and a working folder per test.

The tests run against the installed wheel (CI installs it into a fresh virtual
environment), never against the source folder, so what they prove is what a user
gets from `pip install`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def mock_url():
    """The base URL of `cargo xtask mock` on a free port (AFTERIMAGE_MOCK_URL names a
    mock already running instead)."""
    given = os.environ.get("AFTERIMAGE_MOCK_URL")
    if given:
        yield given.rstrip("/")
        return
    process = subprocess.Popen(
        ["cargo", "xtask", "mock", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = None
    seen = []
    assert process.stdout is not None
    for line in process.stdout:
        seen.append(line)
        found = re.search(r"listening on (http://\S+)", line)
        if found:
            url = found.group(1).rstrip("/")
            break
    if url is None:
        process.kill()
        pytest.fail("the mock did not start:\n" + "".join(seen))
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def mock_env(mock_url, monkeypatch, tmp_path):
    """The seed's environment pointed at the mock: a Gemini key and base URL (as the
    CLI reads them), in a fresh working folder."""
    monkeypatch.setenv("GEMINI_API_KEY", "mock-key")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", mock_url + "/v1beta")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_script(path: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Runs a Python file with this interpreter, as a user would."""
    return subprocess.run(
        [sys.executable, str(path)], cwd=cwd, capture_output=True, text=True, timeout=300
    )
