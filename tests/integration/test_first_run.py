"""The README's first-run guide, run as written: every ```sh block of its "First run" section, in
order, in one bash session in an empty folder, with `ats` on PATH (this tree's code). The nodes it
starts listen on 127.0.0.1:8470 and 8471, as the guide says; the whole process group is killed after."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.fake_openai import FakeOpenAI

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GUIDE_S = 150


def guide_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## First run\n(.*?)^## ", text, re.S | re.M)
    assert section, "README.md has no '## First run' section"
    blocks = re.findall(r"^```sh\n(.*?)^```", section.group(1), re.S | re.M)
    assert len(blocks) >= 5, "the guide's commands are in ```sh blocks"
    return blocks


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the node binds (TIME_WAIT is fine)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_readme_first_run_guide_runs_as_written(tmp_path):
    for port in (8470, 8471, 8000):
        assert port_free(port), f"port {port} is in use: the guide's nodes and upstream need it (stop what uses it)"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ats").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m node "$@"\n')
    os.chmod(bin_dir / "ats", 0o755)
    demo = tmp_path / "ats-demo"
    demo.mkdir()
    script = "set -euo pipefail\n" + "\n".join(
        f"echo '--- block {i + 1}' >&2\n{block}" for i, block in enumerate(guide_blocks()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATS_")}  # as a new user's shell
    env.update({"PATH": f"{bin_dir}:{env['PATH']}", "PYTHONPATH": str(ROOT)})
    upstream = FakeOpenAI(port=8000).__enter__()  # step 4's OpenAI-compatible server
    proc = subprocess.Popen(["bash", "-c", script], cwd=demo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=GUIDE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
        raise AssertionError(f"the guide did not finish in {GUIDE_S} s:\n{out[-4000:]}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the guide's nodes, if a block failed before its `kill`
        except ProcessLookupError:
            pass
        upstream.__exit__(None, None, None)
    logs = "".join(f"\n--- {p.name}\n{p.read_text()[-2000:]}" for p in demo.glob("*.log"))
    assert proc.returncode == 0, f"the guide failed:\n{out[-4000:]}{logs}"
    assert "verified: origin" in out
    assert "team research" in out and re.search(r"^team +act\.llm_tokens +day +[\d,]+ +1,000,000 ", out, re.M), \
        "step 3 shows the team's budgets on its premium plan (1M LLM tokens a day)"
    assert len(re.findall(r"^[0-9a-f]{64}$", out, re.M)) >= 5, "each `ats submit` prints its event's id"
    gateway = out.split("--- block 4", 1)[1].split("--- block 5", 1)[0]
    assert '"chat.completion"' in gateway and upstream.calls.get("chat:test-model") == 1, "step 4 calls the model"
    on_a = agent_cost(gateway)
    assert on_a > 3200, "step 4: the gateway call is charged to the agent beside step 3's 3200"
    assert agent_cost(out.split("--- block 5", 1)[1]) == on_a, "node B must count the cost metered on node A"


def agent_cost(text: str) -> int:
    """The agent's act.cost consumed (milli-T) in the last `ats balance` printed in text."""
    found = re.findall(r"^agent +act\.cost +day +([\d,]+)\.(\d{3}) T", text, re.M)
    assert found, text[-3000:]
    whole, milli = found[-1]
    return int(whole.replace(",", "")) * 1000 + int(milli)
