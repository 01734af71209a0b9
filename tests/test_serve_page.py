"""The service's web page in a real headless browser (Debian's chromium + chromedriver, selenium).

Upload an image through the page's file input; the class-map overlay and the
legend with per-class shares must appear and match the service's answer. A
bad file must show the service's message. Skips, saying why, where chromium,
chromedriver or selenium is missing (scripts/run_tests.sh installs them on a
machine where it runs as root with apt-get).
"""

import json
import shutil

import cv2
import numpy as np
import pytest

from serve_helpers import export_tiny, serving

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="no chromium/chromedriver on PATH (Debian: apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    tmp = tmp_path_factory.mktemp("serve_page")
    config = export_tiny(tmp, "page")
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp / 'profile'}"):
        opts.add_argument(arg)
    with serving(config, tmp, "--workers", "1") as server:
        driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
        try:
            driver.set_page_load_timeout(60)
            yield server, driver, tmp
        finally:
            driver.quit()


def _wait(driver, condition, what, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, message=f"page: no {what}")


def test_upload_shows_overlay_and_legend(page):
    from selenium.webdriver.common.by import By

    server, driver, tmp = page
    img = (np.random.RandomState(0).rand(24, 40, 3) * 255).astype(np.uint8)
    path = str(tmp / "upload.png")
    cv2.imwrite(path, img)
    driver.get(server.url + "/")
    _wait(driver, lambda d: "runtime" in d.find_element(By.ID, "model").text, "model description")
    driver.find_element(By.ID, "file").send_keys(path)
    rows = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#legend .legend-row"), "legend rows")
    size = _wait(driver, lambda d: d.execute_script(
        "const o = document.getElementById('overlay'); return o.complete && o.naturalWidth ? "
        "[o.naturalWidth, o.naturalHeight] : null;"), "overlay image")
    assert size == [40, 24]
    assert driver.find_element(By.ID, "overlay").is_displayed()
    assert driver.find_element(By.ID, "photo").is_displayed()
    # the legend: every class with the share the service computes for the same file
    status, head, _ = server.call("POST", "/predict", body=open(path, "rb").read(),
                                  headers={"Content-Type": "image/png"})
    pixels = {int(k): v for k, v in json.loads(head["x-class-pixels"]).items()}
    assert [int(r.get_attribute("data-class-id")) for r in rows] == [0, 1, 2]
    for r in rows:
        n = pixels.get(int(r.get_attribute("data-class-id")), 0)
        assert r.find_element(By.CSS_SELECTOR, ".name").text.startswith("class ")
        assert r.text.split()[-1] == str(n)
        assert f"{100 * n / (24 * 40):.1f} %" in r.text
    assert driver.find_element(By.ID, "error").text == ""


def test_bad_file_shows_the_service_message(page):
    from selenium.webdriver.common.by import By

    server, driver, tmp = page
    path = str(tmp / "tiny.png")
    cv2.imwrite(path, np.zeros((1, 1, 3), np.uint8))
    driver.get(server.url + "/")
    driver.find_element(By.ID, "file").send_keys(path)
    text = _wait(driver, lambda d: d.find_element(By.ID, "error").text, "error message")
    assert "both sides must be at least 16" in text
