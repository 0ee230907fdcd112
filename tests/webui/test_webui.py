"""The web UI in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium)."""
import json
import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from tunewise.webui.args import WebuiArgs
from tunewise.webui.layout import text_of
from tunewise.webui.training import TrainJob, plot_frames, sft_argv

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1280,1000"]
SCREENSHOT = os.environ.get("TUNEWISE_SCREENSHOT")  # e.g. docs/webui.png to refresh the README's picture


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
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
    yield f"http://{args.host}:{args.port}/"
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


# Records the text of the last bot message each time the chat changes: a streamed reply shows several lengths.
OBSERVE = """
window.__lengths = [];
const root = document.querySelector('#chatbot');
const botText = () => {
  const bots = root.querySelectorAll('[data-testid="bot"]');
  return bots.length ? bots[bots.length - 1].innerText.trim() : '';
};
new MutationObserver(() => {
  const n = botText().length;
  const seen = window.__lengths;
  if (n > 0 && seen[seen.length - 1] !== n) seen.push(n);
}).observe(root, {subtree: true, childList: true, characterData: true});
window.__botText = botText;
"""


def test_chat_streams_an_answer_in_the_browser(webui, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(webui)
    box = WebDriverWait(browser, 60).until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#chat-input textarea")))
    browser.execute_script(OBSERVE)
    box.send_keys("你是谁？")
    box.send_keys(Keys.ENTER)

    def settled(driver):  # the reply stopped growing for a second
        text = driver.execute_script("return window.__botText()")
        now = time.time()
        if text != getattr(settled, "last", None):
            settled.last, settled.since = text, now
        return text and now - settled.since > 1.0

    WebDriverWait(browser, 90, poll_frequency=0.2).until(settled)
    answer = browser.execute_script("return window.__botText()")
    lengths = browser.execute_script("return window.__lengths")
    user = browser.find_elements(By.CSS_SELECTOR, '#chatbot [data-testid="user"]')
    assert user and "你是谁" in user[-1].text
    assert answer and any("\u4e00" <= ch <= "\u9fff" for ch in answer), answer
    print("bot text lengths seen:", lengths, "answer:", answer)
    assert len(lengths) >= 3, lengths  # it grew piece by piece: streamed, not delivered whole
    shot = tmp_path / "webui.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if SCREENSHOT:
        Path(SCREENSHOT).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, SCREENSHOT)


def test_train_tab_runs_plots_and_stops_a_subprocess(tmp_path):
    job = TrainJob(tmp_path)
    argv = sft_argv({"model": "tunewise-tiny", "dataset": "self_cognition#16", "model_name": "小黄, Xiao Huang",
                     "model_author": "魔搭, ModelScope", "max_steps": 400.0, "logging_steps": 1.0, "save_steps": 1000.0,
                     "output_dir": str(tmp_path / "runs"), "learning_rate": ""})
    assert argv[argv.index("--model_name") + 1: argv.index("--model_name") + 3] == ["小黄", "Xiao Huang"]
    assert "--learning_rate" not in argv and argv[argv.index("--max_steps") + 1] == "400"
    assert job.start(argv).startswith("started")
    deadline = time.time() + 120
    while len([r for r in job.records() if "loss" in r]) < 2:
        assert job.running, job.log_text()
        assert time.time() < deadline, job.log_text()
        time.sleep(0.5)
    loss, lr = plot_frames(job.records())
    assert len(loss) >= 2 and set(lr["series"]) == {"lr", "planned lr"}
    assert "run directory:" in job.log_text(200)
    assert "running" in job.status() and job.run_dir().is_dir()
    assert job.stop().startswith("stopped")
    assert not job.running and "exited" in job.status()


def test_form_helpers():
    from tunewise.errors import UserError

    with pytest.raises(UserError, match="dataset"):
        sft_argv({"dataset": ""})
    argv = sft_argv({"dataset": "a.jsonl, self_cognition#8", "extra": "--lora_dropout 0.1"}, ["/tmp/up.jsonl"])
    assert argv[argv.index("--dataset") + 1:argv.index("--dataset") + 4] == ["a.jsonl", "self_cognition#8", "/tmp/up.jsonl"]
    assert argv[-2:] == ["--lora_dropout", "0.1"]
    assert text_of([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]) == "ab" == text_of("ab")
    assert WebuiArgs().host == "127.0.0.1" and WebuiArgs().port == 7860
    assert json.dumps(plot_frames([])[0].columns.tolist()) == '["step", "value", "series"]'
