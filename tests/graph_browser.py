"""Drive headless Chromium (Debian's chromium + chromium-driver, through selenium) on a Netron page.

    python tests/graph_browser.py MODEL_FILE SCREENSHOT.png   # serve, load, save a screenshot
"""

import os
import shutil
import sys
import time

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver") or (
    "/usr/lib/chromium/chromedriver" if os.path.isfile("/usr/lib/chromium/chromedriver") else None)


def missing() -> str:
    """Why the browser check cannot run here ('' when it can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (scripts/setup_env.sh installs it)"
    if not CHROMIUM or not DRIVER:
        return "headless Chromium is not installed (Debian: apt-get install chromium chromium-driver)"
    return ""


def load_graph(url, screenshot=None, timeout=120.0):
    """Open ``url`` (a Netron server), accept its notice, wait until the graph is drawn.

    Returns:
        ``(nodes, names)``: the number of graph nodes drawn and the operator names shown.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,900"):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    driver = webdriver.Chrome(options=opts, service=Service(DRIVER))
    try:
        driver.get(url)
        end = time.time() + timeout
        state = ""
        while time.time() < end:
            # Netron asks once to accept its usage notice before it shows a model
            driver.execute_script("var b = document.getElementById('message-button');"
                                  "if (b && b.offsetParent !== null) b.click();")
            state = driver.execute_script("return document.body.className + '|' + "
                                          "document.querySelectorAll('g.node').length")
            classes, count = state.split("|")
            if "default" in classes.split() and int(count) > 0:
                break
            if "welcome" in classes.split() and "spinner" not in classes.split() and \
                    driver.execute_script("return document.getElementById('message-text') && "
                                          "document.getElementById('message-text').innerText") not in (None, ""):
                text = driver.execute_script("return document.getElementById('message-text').innerText")
                if "cookies" not in text:
                    raise RuntimeError(f"Netron could not open the model: {text}")
            time.sleep(0.5)
        else:
            raise TimeoutError(f"no graph drawn at {url} within {timeout:.0f} s (page state {state})")
        names = driver.execute_script(
            "return Array.from(document.querySelectorAll('g.node .node-item-type text'))"
            ".map(e => e.textContent)")
        if screenshot:
            time.sleep(1)
            driver.save_screenshot(screenshot)
        return int(state.split("|")[1]), names
    finally:
        driver.quit()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from paddleseg_ext.utils import graph_view

    address = graph_view.serve(sys.argv[1], port=0)
    try:
        print(load_graph(f"http://{address[0]}:{address[1]}/", sys.argv[2]))
    finally:
        graph_view.stop(address)
