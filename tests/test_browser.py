"""The drawing pad in a real browser: JupyterLab 4 and Notebook 7 on localhost, drawn on by headless Chromium.

`make test-browser` runs it (and fails if it cannot); elsewhere it is skipped, with the reason, when Chromium,
chromedriver, selenium or anywidget are missing (Debian: apt-get install chromium chromium-driver).
DRAW_SCREENSHOT=path also saves a picture of the pad, for the README.
"""

import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from draw_support import STROKES, mnist_and_model, trained_model

from draw import BLANK, png_to_grey, read_drawing

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver")
# A closed network: no first-run, sync, update or background requests from the browser.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1200,1000"]
NOTEBOOK_CELL = """\
import torch
from draw import DigitPad
from model import S7Final

model = S7Final()
model.load_state_dict(torch.load("model.pt"))
DigitPad(model, history=True)"""

pytestmark = pytest.mark.browser


def missing():
    """What this machine lacks for the browser test, or None."""
    for module in ("selenium", "anywidget"):
        if importlib.util.find_spec(module) is None:
            return f"{module} (pip install {module})"
    if not Path(CHROMIUM).exists():
        return f"Chromium at {CHROMIUM} (apt-get install chromium)"
    if not CHROMEDRIVER:
        return "chromedriver (apt-get install chromium-driver)"
    return None


@pytest.fixture(scope="module", autouse=True)
def browser_there():
    """Skip without a browser, unless REQUIRE_BROWSER=1 (make test-browser): then fail, saying what is missing."""
    if what := missing():
        (pytest.fail if os.environ.get("REQUIRE_BROWSER") == "1" else pytest.skip)(f"the browser test needs {what}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The front ends: how to start each, and where it opens a notebook. window.jupyterapp lets the test run the
# cell as the Run menu does; JupyterLab is also told not to look up news, updates or extensions online.
FRONT_ENDS = {
    "JupyterLab 4": ("jupyterlab", "lab/tree/pad.ipynb",
                     ["--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
                      "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                      "--LabApp.extension_manager=readonly"]),
    "Notebook 7": ("notebook", "notebooks/pad.ipynb", ["--JupyterNotebookApp.expose_app_in_browser=True"]),
}


@pytest.fixture(scope="module", params=FRONT_ENDS)
def jupyter(request, tmp_path_factory):
    """A Jupyter server on 127.0.0.1 serving pad.ipynb, whose one cell shows a trained model's pad; yields its URL."""
    app, page, flags = FRONT_ENDS[request.param]
    folder = tmp_path_factory.mktemp(app)
    torch.save(mnist_and_model()[2], folder / "model.pt")
    cell = {"cell_type": "code", "metadata": {}, "source": NOTEBOOK_CELL, "outputs": [], "execution_count": None}
    kernel = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    (folder / "pad.ipynb").write_text(json.dumps({"cells": [cell], "metadata": kernel, "nbformat": 4,
                                                  "nbformat_minor": 5}))
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "PYTHONPATH": str(ROOT),  # the kernel imports draw and model from this checkout
           "OMP_NUM_THREADS": "1",  # its one small model: see draw_support.one_thread
           **{name: str(folder / ".jupyter" / name.lower()) for name in
              ("JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR")}}
    command = [sys.executable, "-m", app, "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}",
               *flags]
    command += ["--allow-root"] if os.geteuid() == 0 else []  # CI containers
    url = f"http://127.0.0.1:{port}"
    with open(folder / "lab.log", "w") as log:
        server = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                    break
                except OSError:
                    assert server.poll() is None and time.monotonic() < deadline, (folder / "lab.log").read_text()
                    time.sleep(0.5)
            yield f"{url}/{page}?token={token}"
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium (Debian's, with its chromedriver), with a fresh profile."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def draw_stroke(driver, canvas, points, kind="mouse"):
    """One stroke through `points` (pad pixels, may be off the pad) with a mouse, pen or finger: down, moves, up."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput

    actions = ActionBuilder(driver, mouse=PointerInput(kind, kind), duration=20)
    side = canvas.size["width"]  # offsets are from the canvas's centre, in CSS pixels
    for i, (x, y) in enumerate(points):
        actions.pointer_action.move_to(canvas, round((x - 140) * side / 280), round((y - 140) * side / 280))
        if i == 0:
            actions.pointer_action.pointer_down()
    actions.pointer_action.pointer_up()
    actions.perform()


def answer_to(driver, stroke, timeout=30):
    """The pad's label and message once it shows Python's answer to the `stroke`-th drawing sent."""
    from selenium.webdriver.support.ui import WebDriverWait

    label = driver.find_element("css selector", ".digitpad-label")
    WebDriverWait(driver, timeout).until(lambda _: label.get_attribute("data-stroke") == str(stroke))
    return label.text, driver.find_element("css selector", ".digitpad-message").text


def python_label(driver):
    """What draw.py predicts for the pixels on the page's canvas, read back from the browser."""
    png = driver.execute_script("return document.querySelector('.digitpad-canvas').toDataURL('image/png')")
    _, probs, _ = read_drawing(trained_model(), png_to_grey(png))
    return str(int(probs.argmax()))


def redness(driver):
    """How much redder than grey the pad's 28x28 view is: > 0 where the saliency is drawn over it."""
    return driver.execute_script("""
        const rgba = document.querySelector('.digitpad-view').getContext('2d').getImageData(0, 0, 28, 28).data;
        let red = 0;
        for (let i = 0; i < rgba.length; i += 4) red += rgba[i] - rgba[i + 1];
        return red;""")


def test_drawing_on_the_pad(jupyter, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    start = time.perf_counter()
    browser.get(jupyter)
    kernel_idle = ("const panel = window.jupyterapp?.shell.currentWidget;"
                   "return panel?.sessionContext?.session?.kernel?.status === 'idle';")
    WebDriverWait(browser, 120).until(lambda d: d.execute_script(kernel_idle))
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    canvas = WebDriverWait(browser, 120).until(lambda d: d.find_element("css selector", ".digitpad-canvas"))
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", canvas)
    assert answer_to(browser, 0) == ("", BLANK)
    loaded = time.perf_counter()

    draw_stroke(browser, canvas, STROKES[7][0], "touch")  # a 7, with a finger
    label, message = answer_to(browser, 1)
    assert (label, python_label(browser)) == ("7", "7") and message.endswith("% sure")

    browser.find_element("css selector", ".digitpad-clear").click()
    assert answer_to(browser, 2) == ("", BLANK)

    four = STROKES[4]  # a 4: a pen, then the mouse, whose stroke runs off the bottom of the pad and ends there
    draw_stroke(browser, canvas, four[0], "pen")
    draw_stroke(browser, canvas, [four[1][0], (160, 330)])
    label, message = answer_to(browser, 4)
    assert (label, python_label(browser)) == ("4", "4") and message.endswith("% sure")

    toggle = browser.find_element("css selector", ".digitpad-toggle")
    assert toggle.is_selected() and redness(browser) > 0  # the saliency, in red over the 28x28 view
    toggle.click()
    assert redness(browser) == 0  # off: the grey view alone
    toggle.click()
    assert redness(browser) > 0
    if os.environ.get("DRAW_SCREENSHOT"):
        browser.find_element("css selector", ".digitpad").screenshot(os.environ["DRAW_SCREENSHOT"])
    print(f"{jupyter.split('?')[0]}: pad ready in {loaded - start:.1f} s, "
          f"drawing and answers {time.perf_counter() - loaded:.1f} s")
