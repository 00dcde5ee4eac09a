"""The dashboard of a live 3-node mesh in headless Chromium (Debian's ``chromium``, driven by playwright).

Needs ``/usr/bin/chromium`` (``scripts/setup-browser`` installs it as root) and
the ``playwright`` package; playwright never downloads a browser here. The
screenshot is saved as ``artifacts/dashboard.png``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import openai
import pytest

from tests.api.conftest import Mesh
from tests.conftest import ROOT

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACT = ROOT / "artifacts" / "dashboard.png"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (pip install playwright)")
pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists() and shutil.which("chromium") is None,
                       reason="Debian's chromium is not installed: run scripts/setup-browser as root"),
    pytest.mark.timeout(300),
]


def test_dashboard_shows_the_mesh_and_an_agents_placement(mesh: Mesh, tmp_path: Path) -> None:
    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key="unused", max_retries=0, timeout=240)
    reply = client.chat.completions.create(model="large-chat", messages=[{"role": "user", "content": "Plan my day."}],
                                           max_tokens=8, extra_headers={"X-Meshagent-Privacy": "any"})
    agent_id = reply.model_extra["meshagent"]["agent_id"]
    executable = str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium"))

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(mesh.url + "/")
            # All three peers, from the live event stream.
            for node in mesh.nodes:
                sync_api.expect(page.locator(f'[data-peer="{node.peer_id}"]')).to_be_visible(timeout=20_000)
            sync_api.expect(page.locator("#live")).to_have_text("live")
            # The chat agent: its auction (won by the gpu), its sealed handoff, and where it ran.
            row = page.locator(f'tr[data-agent="{agent_id}"]')
            sync_api.expect(row).to_have_attribute("data-node", mesh.gpu.peer_id, timeout=20_000)
            sync_api.expect(row.locator("td").nth(4)).to_have_text("gpu")
            sync_api.expect(row.locator("td").nth(1)).to_have_text("exited (moved)")  # outcome relayed home
            auction = page.locator(f'li[data-auction][data-agent="{agent_id}"]')
            sync_api.expect(auction).to_contain_text("winner gpu")
            sync_api.expect(page.locator(f'li[data-move="{agent_id}"]')).to_contain_text("→ gpu")
            sync_api.expect(page.locator(f'[data-peer="{mesh.gpu.peer_id}"]')).to_contain_text("large-chat")
            ARTIFACT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACT), full_page=True)
        finally:
            browser.close()
    assert ARTIFACT.stat().st_size > 10_000
