"""The web UI served on a free port (its model in memory, runs written to a temporary folder) and a real headless
Chromium (Debian's chromium + chromium-driver, driven by selenium), shared by the browser tests."""
import os
import shutil
import socket
import time
from types import SimpleNamespace

import pytest

from tunewise.webui.args import WebuiArgs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1280,1000"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    """SimpleNamespace(url, demo, output_dir) of a running web UI."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from tunewise.webui.app import launch
    from tunewise.webui.layout import build_app
    from tunewise.webui.models import ModelPool

    out = tmp_path_factory.mktemp("webui-output")
    args = WebuiArgs(port=free_port(), output_dir=str(out))
    pool = ModelPool(args)
    # pace decoding like a bigger model (the tiny one answers 你是谁？ in 4 tokens within milliseconds), so that
    # each streamed piece reaches the page as its own update
    sched = pool.engine.scheduler
    step = sched._decode_step
    sched._decode_step = lambda: (time.sleep(0.15), step())
    demo = build_app(pool, args)
    launch(demo, args.host, args.port, block=False)
    yield SimpleNamespace(url=f"http://{args.host}:{args.port}/", demo=demo, output_dir=out)
    for job in demo.tunewise_jobs:
        if job.running:
            job.stop()
    demo.close()
    pool.engine.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and DRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    os.environ["SE_OFFLINE"] = "true"  # selenium must not look for or download a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    yield driver
    driver.quit()
