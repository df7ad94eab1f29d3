"""The README's first command: scripts/demo.sh applies both providers' examples to the emulator.

Runs the script as a user would (with this interpreter's `reconciler` first on PATH) and checks
what it shows: one run starts the Volcengine tasks and the Alibaba Cloud agents, the second
finds nothing to do, the records carry the agents' observed status, no secret is printed, and
the emulator it started is gone afterwards.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECRETS = ("demo-secret-access-key", "demo-artc-app-key", "demo-front-desk-key", "demo-llm-key")


def test_the_demo_applies_both_providers_to_the_emulator_and_stops_it() -> None:
    bin_dir = str(Path(sys.executable).parent)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RECONCILER_", "VOLC_", "ALIBABA_CLOUD_"))
    }
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "demo.sh")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "Apply: 11 succeeded, 0 failed." in out
    assert out.count("No changes. 11 running session(s) match the desired state.") == 2, out
    assert "8 Volcengine tasks running" in out and "3 Alibaba Cloud agent instances live" in out
    observed = re.findall(
        r"^(front-desk-07|front-desk-08|concierge-cn) +aliyun .* Created +(\S+)", out, re.M
    )
    assert len(observed) == 3, out
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp) for _, stamp in observed)
    assert "- front-desk-07: not probed: aliyun: no CustomLLM endpoint" in out
    assert "ARTC AuthToken for user caller-07 in channel ch-front-desk-07" in out
    for secret in SECRETS:
        assert secret not in out, secret
    pid = int(re.findall(r"== stop the emulator \(pid (\d+)\)", out)[0])
    assert "emulator stopped" in out
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pass
    else:  # a pid may be reused, but not by our emulator: make sure it is not one
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert b"emulator" not in cmdline
