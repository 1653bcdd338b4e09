"""The page of ``pneumokit serve`` in a real headless Chromium (Playwright driving Debian's
``chromium``; Playwright's own browser download cannot run here). README: how to run it locally.

Without a Chromium the test is skipped, unless ``PNEUMOKIT_REQUIRE_BROWSER=1`` (set by
``.ci/run``) makes that a failure.
"""

import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from helpers_serve import served
from PIL import Image

CHROMIUM = (os.environ.get("PNEUMOKIT_CHROMIUM") or shutil.which("chromium")
            or shutil.which("chromium-browser"))
REQUIRED = os.environ.get("PNEUMOKIT_REQUIRE_BROWSER") == "1"

if not CHROMIUM and not REQUIRED:
    pytest.skip("no chromium here (apt-get install chromium, or set PNEUMOKIT_CHROMIUM)",
                allow_module_level=True)


def test_page_shows_what_predict_says_and_draws_the_heatmap(exported, tmp_path):
    from playwright.sync_api import sync_playwright

    from pneumokit.cli import main

    assert CHROMIUM, "PNEUMOKIT_REQUIRE_BROWSER=1 but no chromium was found"
    image = exported["images"][-1]
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (72, 72)).astype(np.uint8)).save(noise)
    out = CliRunner().invoke(main, ["predict", "heat:1", str(image), "--registry", str(exported["registry"]),
                                    "--json"])
    want = json.loads(out.stdout)["predictions"][0]
    with served("heat:1", "--registry", exported["registry"]) as (url, _), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            page.goto(url + "/")
            page.wait_for_function("document.getElementById('model').textContent.includes('heat:1')",
                                   timeout=20_000)
            page.set_input_files("#files", str(image))
            page.wait_for_selector("[data-testid=heatmap][data-heatmap=drawn]", timeout=20_000)
            assert page.text_content("[data-testid=label]") == want["label"]
            assert page.text_content("[data-testid=probability]") == f"{want['probability']:.4f}"
            colored = page.evaluate("""() => {
                const c = document.querySelector('[data-testid=heatmap]');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let n = 0;
                for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - d[i + 2]) > 30) n++;
                return n / (d.length / 4);
            }""")
            # the X-ray is gray (R = B); the inferno overlay is not: some of the image is coloured
            assert colored > 0.05, colored
            page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
            assert (tmp_path / "serve.png").stat().st_size > 10_000
            # an image that is not a chest X-ray: no label, the gate's reason instead (docs/gate.md)
            page.set_input_files("#files", str(noise))
            page.wait_for_selector("[data-testid=reason]", timeout=20_000)
            assert page.text_content("[data-testid=label]") == "OUT OF SCOPE"
            assert page.text_content("[data-testid=reason]").startswith("image is not like the chest X-rays")
            assert page.evaluate("() => document.querySelector('[data-testid=result]')"
                                 ".querySelector('[data-testid=probability]') === null")
            assert "1 out of scope" in page.text_content("#status")
        finally:
            browser.close()
