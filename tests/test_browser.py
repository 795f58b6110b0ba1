"""The real app in a real browser: `streamlit run app/main.py` driven by Playwright and Debian's Chromium.

Prunes the embedded default model at small settings, waits for the result, visits every page (a
screenshot of each goes to artifacts/screenshots/), downloads an exported PNG and the run's Export-all
bundle, shrinks the model with FLAP on the Shrink page and continues a sentence with both on the Generate page, and
checks that every request the page made stayed on this machine.
"""
from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import pytest

from app.headless import CHROMIUM, CHROMIUM_ARGS, serve, settle

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "artifacts" / "screenshots"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
PAGES = [("Shrink", "Shrink a language model"), ("Layers", "Layers"), ("Sparsity", "Sparsity"), ("Masks", "Masks"),
         ("Perplexity", "Perplexity"), ("Sweep", "Sweep"), ("Zero-shot", "Zero-shot accuracy"),
         ("Generate", "Generate side by side"), ("Repair", "Repair"), ("Runs & export", "Runs & export")]
# with one plain run: no sweep, no zero-shot results, no generation, no repair yet, and no run that measured its speed
# (the Shrink page says in a sentence what its frontier lacks instead of drawing empty axes)
NO_CHART = {"Shrink", "Sweep", "Zero-shot", "Generate", "Repair", "Runs & export"}

if not Path(CHROMIUM).is_file():
    pytest.skip(f"{CHROMIUM} is not installed", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.slow  # a real browser against a real server


@pytest.fixture
def server(tmp_path):
    log = tmp_path / "streamlit.log"
    with serve(tmp_path / "runs", log) as (url, _):
        yield url
    print(f"\nstreamlit log: {log}")


def set_number(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    page.wait_for_timeout(300)


def shoot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.mouse.move(5, 5)  # no tooltip in the picture
    # Streamlit scrolls inside its main container: grow the window to the content for a whole-page picture
    height = page.evaluate("() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
                           " return m ? m.scrollHeight : document.body.scrollHeight; }")
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], min(int(height) + 40, 8000))})
    page.wait_for_timeout(800)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    return path


def shrink_and_generate(page) -> None:
    """Shrink the embedded model with FLAP (its speed measured briefly), see what it removed and the frontier, then
    continue a sentence with the dense model and the shrunk one."""
    page.get_by_role("link", name="Shrink").first.click()
    page.get_by_role("heading", name="Shrink a language model").first.wait_for()
    settle(page)
    set_number(page, "Tokens decoded", 8)
    set_number(page, "Rounds (median kept)", 1)
    page.get_by_role("button", name="Shrink", exact=True).click()
    page.get_by_text(re.compile(r"block \d+/\d+")).first.wait_for(timeout=240_000)  # live per-block progress
    page.locator("[data-testid='stAlertContentSuccess']", has_text="flap").first.wait_for(timeout=420_000)
    settle(page)
    page.get_by_text("Attention heads kept in each block").first.wait_for(timeout=60_000)
    page.get_by_text("Perplexity against measured prefill speed-up").first.wait_for()
    assert page.get_by_text("Block parameters removed").count() >= 1
    assert page.locator("[data-testid='stException']").count() == 0
    shoot(page, f"{len(PAGES) + 4}-shrink-result")
    page.get_by_role("link", name="Generate").first.click()
    page.get_by_role("heading", name="Generate side by side").first.wait_for()
    settle(page)
    set_number(page, "New tokens (at most)", 8)
    page.get_by_role("button", name="Generate", exact=True).click()
    page.get_by_text(re.compile(r"\d+ tokens in [\d.]+ s = [\d.]+ tokens/s")).nth(1).wait_for(timeout=240_000)
    settle(page)
    assert page.get_by_text("mask checked").count() >= 1 or page.get_by_text("its saved model").count() >= 1
    assert page.locator("[data-testid='stException']").count() == 0
    shoot(page, f"{len(PAGES) + 5}-generate")


def test_prune_embedded_model_and_visit_every_page(server):
    requests: list[str] = []
    if SHOTS.exists():
        shutil.rmtree(SHOTS)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1500, "height": 1000}, accept_downloads=True)
            page = context.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("websocket", lambda ws: requests.append(ws.url))
            page.set_default_timeout(60_000)
            page.goto(server)
            page.get_by_text("Prune a language model").wait_for()
            settle(page)
            shoot(page, "0-prune-empty")

            # small settings on the embedded default model; Wanda at 50%
            set_number(page, "Samples (nsamples)", 8)
            set_number(page, "Tokens per sample (seqlen)", 128)
            set_number(page, "Tokens per window", 256)
            set_number(page, "Windows (0 = the whole text)", 4)
            settle(page)
            page.get_by_role("button", name="Run", exact=True).click()
            # live progress appears (the first load may convert the GGUF: ~30 s)
            page.get_by_text(re.compile(r"block \d+/\d+")).first.wait_for(timeout=240_000)
            page.locator("[data-testid='stPlotlyChart']").first.wait_for(timeout=60_000)  # the live block chart
            page.wait_for_timeout(1000)
            shoot(page, "1-prune-running")
            page.locator("[data-testid='stAlertContentSuccess']", has_text="Finished").first.wait_for(timeout=420_000)
            settle(page)
            page.locator("[data-testid='stPlotlyChart']").first.wait_for()
            page.wait_for_timeout(1500)
            print("prune page:", shoot(page, "2-prune-result"))
            assert page.get_by_text("Dense model perplexity").count() >= 1
            assert page.locator("[data-testid='stException']").count() == 0

            for i, (link, title) in enumerate(PAGES, start=3):
                page.get_by_role("link", name=link).first.click()
                page.get_by_role("heading", name=title).first.wait_for()
                settle(page)
                if link not in NO_CHART:
                    page.locator("[data-testid='stPlotlyChart']").first.wait_for()
                if link == "Shrink":
                    page.get_by_text("Nothing to draw yet among the 1 finished run of this model").first.wait_for()
                page.wait_for_timeout(1500)
                assert page.locator("[data-testid='stException']").count() == 0, link
                shoot(page, f"{i}-{link.split(' ')[0].lower()}")

            # Runs & export: the run is listed as complete; render a PNG and download it
            assert page.locator("[data-testid='stDataFrame']").count() >= 1
            page.get_by_role("button", name="Render PNG").click()
            dl_button = page.get_by_role("button", name="Download PNG", exact=False)
            dl_button.wait_for(timeout=120_000)
            with page.expect_download(timeout=60_000) as info:
                dl_button.click()
            download = info.value
            data = Path(download.path()).read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, len(data)
            assert download.suggested_filename.endswith(".png")
            shoot(page, f"{len(PAGES) + 3}-runs-exported")

            # Export all: the run's bundle at the two-column preset, downloaded and unzipped
            settle(page)
            page.locator(".st-key-export_all_all").get_by_role("button", name="Export all").first.click()
            zip_button = page.get_by_role("button", name=re.compile(r"Download bundle \(\d+ figures")).first
            zip_button.wait_for(timeout=180_000)
            with page.expect_download(timeout=60_000) as info:
                zip_button.click()
            bundle = info.value
            assert bundle.suggested_filename.endswith("-bundle.zip"), bundle.suggested_filename
            with zipfile.ZipFile(bundle.path()) as z:
                names = z.namelist()
                card = z.read(next(n for n in names if n.endswith("REPRODUCE.md"))).decode()
            assert any(n.endswith(".pdf") for n in names) and any(n.endswith(".png") for n in names), names
            assert any(n.endswith(".tex") for n in names) and any(n.endswith(".npy") for n in names), names
            assert "python -m wanda_engine prune" in card and "--calib" in card

            shrink_and_generate(page)

            # Explain: the toy's slider redraws its figure (no model needed for step 1)
            page.get_by_role("link", name="Explain").first.click()
            page.get_by_role("heading", name="Explain: why Wanda beats magnitude").first.wait_for()
            settle(page)
            toy = page.locator("[data-testid='stPlotlyChart']").first
            toy.wait_for()
            before = toy.inner_text()
            slider = page.locator("[data-testid='stSlider'] input[type='range']").first
            assert slider.input_value() == "30" and "30× louder" in before
            slider.focus()
            slider.press("End")
            page.get_by_text("100× louder").first.wait_for(timeout=30_000)
            settle(page)
            after = page.locator("[data-testid='stPlotlyChart']").first.inner_text()
            assert after != before and "5,970" in after, after[:300]  # magnitude's error at 100x, drawn on its bar
            assert page.locator("[data-testid='stException']").count() == 0
            shoot(page, f"{len(PAGES) + 6}-explain")
        except Exception:
            try:
                print("failed here:", shoot(page, "failure"))
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
            raise
        finally:
            browser.close()
    print(f"screenshots: {SHOTS}")

    hosts = {urlparse(u).hostname for u in requests if urlparse(u).scheme in ("http", "https", "ws", "wss")}
    outside = sorted(u for u in requests if urlparse(u).scheme in ("http", "https", "ws", "wss")
                     and urlparse(u).hostname not in LOCAL_HOSTS)
    assert requests and hosts <= LOCAL_HOSTS, outside[:20]
