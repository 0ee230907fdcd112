"""The web UI in a real headless Chromium: chat streams an answer; the tabs render in Chinese, and a training run is
started from the Train form (the command previewed is the one started) and stopped."""
import os
import shlex
import shutil
import time
from pathlib import Path

from tunewise.webui.training import TrainJob, plot_frames
from tunewise.webui.commands import sft_argv

SCREENSHOT = os.environ.get("TUNEWISE_SCREENSHOT")  # e.g. docs/webui.png to refresh the README's picture

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


def wait(browser, condition, timeout=60, show=()):
    """Wait for condition(browser); on a timeout, name the fields in `show` (elem_ids) with their values and any
    message Gradio shows."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, timeout, poll_frequency=0.25).until(condition)
    except TimeoutException:
        toasts = browser.execute_script("return [...document.querySelectorAll('.toast-body')].map(e => e.innerText)")
        raise AssertionError("timed out waiting; " + "; ".join(f"{e}={value_of(browser, e)!r}" for e in show)
                             + f"; messages: {toasts}") from None


def value_of(browser, elem_id: str):
    """The value of the text field (textarea or input) of the component with this elem_id."""
    return browser.execute_script(
        "const e = document.querySelector(`#${arguments[0]} textarea, #${arguments[0]} input`);"
        "return e ? e.value : null;", elem_id)


def type_into(browser, elem_id: str, text: str):
    """Type into a field as a person would: once it is shown. A field that a change of form hides and shows again
    (the Train tab's dataset after DPO -> SFT) is re-rendered a moment after the preview updates; under a loaded CI
    machine that moment was long enough for a plain find_element to miss it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC

    box = wait(browser, EC.element_to_be_clickable((By.CSS_SELECTOR, f"#{elem_id} textarea, #{elem_id} input")))
    box.clear()
    box.send_keys(text)
    box.send_keys(Keys.TAB)


def tab_labels(browser) -> list[str]:
    from selenium.webdriver.common.by import By

    return [b.text.strip() for b in browser.find_elements(By.CSS_SELECTOR, 'button[role="tab"]')]


def open_tab(browser, label: str):
    from selenium.webdriver.common.by import By

    [button] = [b for b in browser.find_elements(By.CSS_SELECTOR, 'button[role="tab"]') if b.text.strip() == label]
    button.click()


def check_screenshot(browser, path: Path):
    """A real picture of the page: a PNG of the window's size with many colours and a good share of drawn pixels."""
    from PIL import Image

    assert browser.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000, path
    image = Image.open(path).convert("RGB")
    assert image.width >= 1000 and image.height >= 600, image.size
    small = image.resize((320, 250))
    pixels = list(small.get_flattened_data())
    assert len(set(pixels)) > 50, f"{path}: {len(set(pixels))} colours"
    drawn = sum(1 for p in pixels if min(p) < 235) / len(pixels)  # text, borders, plots: not a blank page
    assert drawn > 0.03, f"{path}: {drawn:.1%} of the pixels are not near-white"
    return path.read_bytes()


def test_chat_streams_an_answer_in_the_browser(webui, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC

    browser.get(webui.url)
    box = wait(browser, EC.element_to_be_clickable((By.CSS_SELECTOR, "#chat-input textarea")))
    browser.execute_script(OBSERVE)
    box.send_keys("你是谁？")
    box.send_keys(Keys.ENTER)

    def settled(driver):  # the reply stopped growing for a second
        text = driver.execute_script("return window.__botText()")
        now = time.time()
        if text != getattr(settled, "last", None):
            settled.last, settled.since = text, now
        return text and now - settled.since > 1.0

    wait(browser, settled, 90)
    answer = browser.execute_script("return window.__botText()")
    lengths = browser.execute_script("return window.__lengths")
    user = browser.find_elements(By.CSS_SELECTOR, '#chatbot [data-testid="user"]')
    assert user and "你是谁" in user[-1].text
    assert answer and any("\u4e00" <= ch <= "\u9fff" for ch in answer), answer
    print("bot text lengths seen:", lengths, "answer:", answer)
    assert len(lengths) >= 3, lengths  # it grew piece by piece: streamed, not delivered whole
    shot = tmp_path / "webui.png"
    check_screenshot(browser, shot)
    if SCREENSHOT:
        Path(SCREENSHOT).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, SCREENSHOT)


def test_tabs_in_chinese_and_a_run_started_and_stopped_in_the_browser(webui, browser, tmp_path):
    from selenium.webdriver.common.by import By

    job = webui.demo.tunewise_job
    browser.get(webui.url)
    wait(browser, lambda d: tab_labels(d)[:5] == ["Chat", "Train", "Evaluate", "Export", "Compare"])
    browser.find_element(By.XPATH, '//*[@id="language"]//label[contains(., "中文")]').click()
    wait(browser, lambda d: tab_labels(d)[:5] == ["对话", "训练", "评测", "导出", "对比"])
    shots = {"zh-chat": check_screenshot(browser, tmp_path / "zh-chat.png")}

    open_tab(browser, "评测")  # Evaluate: its form and the command it would run, from the start
    wait(browser, lambda d: (value_of(d, "eval-preview") or "").startswith("tunewise eval --model tunewise-tiny"))
    assert browser.find_element(By.ID, "eval-run").text == "运行评测"
    type_into(browser, "eval-a", "/no/such/checkpoint")  # a failed command: its error, verbatim
    wait(browser, lambda d: "--model /no/such/checkpoint " in value_of(d, "eval-preview"), show=("eval-preview",))
    browser.find_element(By.ID, "eval-run").click()
    wait(browser, lambda d: "tunewise eval: error: --model /no/such/checkpoint: no such directory"
         in value_of(d, "eval-status"), 120, show=("eval-status",))
    assert value_of(browser, "eval-status").startswith("failed (exit code 2)")
    shots["zh-eval"] = check_screenshot(browser, tmp_path / "zh-eval.png")
    open_tab(browser, "导出")
    wait(browser, lambda d: browser.find_element(By.ID, "export-run").text == "导出（合并 LoRA）")
    browser.find_element(By.ID, "export-run").click()  # no checkpoint yet: says so instead of starting
    wait(browser, lambda d: value_of(d, "export-status") == "not started: Pick the LoRA checkpoint to export.",
         show=("export-status",))
    shots["zh-export"] = check_screenshot(browser, tmp_path / "zh-export.png")

    open_tab(browser, "训练")
    wait(browser, lambda d: d.find_element(By.ID, "train-start").text == "开始训练")
    # the DPO stage: its preference data and flags appear, and the preview says tunewise dpo
    browser.find_element(By.XPATH, '//*[@id="train-stage"]//label[contains(., "dpo")]').click()
    wait(browser, lambda d: (value_of(d, "train-preview") or "").startswith("tunewise dpo --model tunewise-tiny"))
    assert "--dataset concise" in value_of(browser, "train-preview") and "--beta 0.1" in value_of(browser, "train-preview")
    wait(browser, lambda d: d.find_elements(By.ID, "train-pref-dataset")
         and d.find_element(By.ID, "train-pref-dataset").is_displayed())
    # an RLHF stage: `tunewise rlhf --rlhf_type simpo`, the shared boxes at SimPO's defaults, no --loss_type box
    browser.find_element(By.XPATH, '//*[@id="train-stage"]//label[contains(., "simpo")]').click()

    def simpo_flags(d):
        words = shlex.split(value_of(d, "train-preview") or "")
        if words[:4] != ["tunewise", "rlhf", "--rlhf_type", "simpo"]:
            return None
        return {w: float(words[words.index(w) + 1]) for w in ("--beta", "--simpo_gamma", "--cpo_alpha") if w in words}

    wait(browser, lambda d: simpo_flags(d) == {"--beta": 2.0, "--simpo_gamma": 1.0, "--cpo_alpha": 0.0},
         show=("train-preview",))
    shown = lambda d, elem_id: any(e.is_displayed() for e in d.find_elements(By.ID, elem_id))  # noqa: E731
    wait(browser, lambda d: shown(d, "train-simpo-gamma") and not shown(d, "train-loss-type"))
    browser.find_element(By.XPATH, '//*[@id="train-stage"]//label[contains(., "sft")]').click()
    wait(browser, lambda d: (value_of(d, "train-preview") or "").startswith("tunewise sft "))

    type_into(browser, "train-dataset", "self_cognition#16")
    type_into(browser, "train-max-steps", "100")  # more than it can do before Stop: the test stops it
    def form_taken(d):  # the preview shows both values
        words = shlex.split(value_of(d, "train-preview"))
        return words[words.index("--dataset") + 1] == "self_cognition#16" and "--max_steps" in words \
            and words[words.index("--max_steps") + 1] == "100"

    wait(browser, form_taken, show=("train-preview",))
    previewed = value_of(browser, "train-preview")
    # the form saved as YAML, changed, and loaded back: the same command again
    browser.find_element(By.ID, "train-save-yaml").click()
    wait(browser, lambda d: (value_of(d, "train-yaml-status") or "").startswith("saved "), show=("train-yaml-status",))
    type_into(browser, "train-dataset", "other.jsonl")
    wait(browser, lambda d: "other.jsonl" in value_of(d, "train-preview"))
    browser.find_element(By.ID, "train-load-yaml").click()
    wait(browser, lambda d: value_of(d, "train-preview") == previewed, show=("train-preview", "train-yaml-status"))
    assert value_of(browser, "train-dataset") == "self_cognition#16"
    assert not browser.execute_script("return document.querySelectorAll('.toast-body').length")  # no error shown
    assert (webui.output_dir / "webui-train.yaml").is_file()
    browser.find_element(By.ID, "train-start").click()
    wait(browser, lambda d: "run directory:" in (value_of(d, "train-log") or ""), 240,
         show=("train-status", "train-log"))  # it is training
    assert value_of(browser, "train-log").splitlines()[0] == "$ " + previewed
    assert job.command_line == previewed and job.running
    started = Path(f"/proc/{job.proc.pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    assert started[1:4] == ["-m", "tunewise.cli", "sft"] and started[4:] == shlex.split(previewed)[2:]
    assert value_of(browser, "train-status").startswith("running")
    shots["zh-train-running"] = check_screenshot(browser, tmp_path / "zh-train-running.png")

    browser.find_element(By.ID, "train-stop").click()
    wait(browser, lambda d: (value_of(d, "train-status") or "").startswith("stopped"), 120,
         show=("train-status", "train-log"))
    assert not job.running and job.proc.returncode is not None  # "stopped" only once the process has ended
    assert value_of(browser, "train-status").startswith(f"stopped (exit code {job.proc.returncode})")
    shots["zh-train-stopped"] = check_screenshot(browser, tmp_path / "zh-train-stopped.png")
    assert len(set(shots.values())) == len(shots)  # each view drew something of its own
    print("screenshots:", ", ".join(str(tmp_path / f"{name}.png") for name in shots))


def test_every_labelled_component_switches_language(webui):
    import gradio as gr

    from tunewise.webui.i18n import TEXT

    texts = webui.demo.tunewise_texts
    blocks = [b for b in webui.demo.blocks.values() if b is not texts.language]
    labelled = [b for b in blocks if getattr(b, "label", None) or isinstance(b, (gr.Button, gr.Tab, gr.Markdown))]
    assert len(labelled) > 60 and [b for b in labelled if b not in texts.items] == []
    for (component, attrs), update in zip(texts.items.items(), texts.updates("zh")):
        assert {a: update[a] for a in attrs} == {a: TEXT[key][1] for a, key in attrs.items()}, component
        assert getattr(component, next(iter(attrs))) == TEXT[next(iter(attrs.values()))][0]  # built in English


def test_train_job_runs_plots_and_stops_a_subprocess(tmp_path):
    job = TrainJob(tmp_path)
    argv = sft_argv({"model": "tunewise-tiny", "dataset": "self_cognition#16", "model_name": "小黄, Xiao Huang",
                     "model_author": "魔搭, ModelScope", "max_steps": 400.0, "logging_steps": 1.0, "save_steps": 1000.0,
                     "gradient_accumulation_steps": "1", "output_dir": str(tmp_path / "runs"), "learning_rate": "",
                     "report_to": "none"})
    assert argv[argv.index("--model_name") + 1: argv.index("--model_name") + 3] == ["小黄", "Xiao Huang"]
    assert "--learning_rate" not in argv and argv[argv.index("--max_steps") + 1] == "400"
    assert job.start("sft", argv).startswith("started")
    deadline = time.time() + 180
    while len([r for r in job.records() if "loss" in r]) < 2:
        assert job.running, job.log_text()
        assert time.time() < deadline, job.log_text()
        time.sleep(0.5)
    loss, lr = plot_frames(job.records())
    assert len(loss) >= 2 and set(lr["series"]) == {"lr", "planned lr"}
    assert "run directory:" in job.log_text(200)
    assert job.status().startswith("running") and job.run_dir().is_dir()
    stopped = job.stop()
    assert not job.running and stopped == job.status() == f"stopped (exit code {job.proc.returncode})"
    assert job.stop() == "No run is going."
