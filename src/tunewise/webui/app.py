"""`tunewise webui`: a Gradio app with three tabs over one model in memory.

- Chat: pick the base model or an adapter (the ones given with --adapters, or any checkpoint found under
  --output_dir, loaded on first use), a system prompt and sampling settings; replies stream in; the history is
  kept until Clear.
- Train: a form for the `tunewise sft` flags (with dataset upload) that starts the run as a subprocess, shows
  its log and live loss / learning-rate plots read from the run's logging.jsonl, and a Stop button.
- Compare: two models answer one prompt side by side, streamed at the same time (batched together).

Generation goes through the same batching engine as `tunewise serve` (serve/batching.py).
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tunewise.command import Command
from tunewise.flags import flag_field
from tunewise.errors import UserError
from tunewise.files import read_jsonl

SCHEDULERS = ["cosine", "linear", "constant", "constant_with_warmup", "cosine_with_min_lr", "warmup_stable_decay"]


@dataclass
class WebuiArgs:
    """A web UI to chat with, fine-tune and compare models (`tunewise webui`)."""

    host: str = flag_field("127.0.0.1", "address to bind; 0.0.0.0 exposes the UI to the network")
    port: int = flag_field(7860, "TCP port")
    model: str = flag_field("tunewise-tiny", "base model kept in memory for Chat and Compare")
    adapters: list[str] = flag_field([], "LoRA checkpoints offered by name: NAME=CHECKPOINT ... (more are found under --output_dir)")
    output_dir: str = flag_field("output", "where Train writes runs, and where Chat and Compare look for checkpoints")
    system: str | None = flag_field(None, "default system prompt")
    torch_dtype: str = flag_field("auto", "auto | float32 | bfloat16 | float16")

    def __post_init__(self):
        if not 0 < self.port < 65536:
            raise UserError(f"--port {self.port}: expected 1-65535.")


# --- models ----------------------------------------------------------------------------------------------------
class ModelPool:
    """The batching engine plus checkpoints loaded on demand by their path."""

    def __init__(self, args: WebuiArgs, engine=None):
        from tunewise.serve.app import build_engine, ServeArgs

        self.output_dir = Path(args.output_dir)
        self.engine = engine or build_engine(ServeArgs(model=args.model, adapters=list(args.adapters),
                                                       system=args.system, torch_dtype=args.torch_dtype))
        self._lock = threading.Lock()

    def choices(self) -> list[str]:
        names = list(self.engine.models)
        loaded = {s.path for s in self.engine.models.values()}
        for ckpt in find_checkpoints(self.output_dir):
            if str(ckpt.resolve()) not in loaded and str(ckpt) not in names:
                names.append(str(ckpt))
        return names

    def name_for(self, choice: str) -> str:
        """The engine's name for a dropdown choice; a checkpoint path is loaded as an adapter the first time."""
        if choice in self.engine.models:
            return choice
        from tunewise.serve.app import parse_adapters

        with self._lock:
            if choice in self.engine.models:
                return choice
            spec = parse_adapters([f"{choice}={choice}"])[0]
            self.engine.add_adapter(choice, spec.path, spec.system)
        return choice


def find_checkpoints(root: Path) -> list[Path]:
    """LoRA checkpoints under root (runs one or two levels down), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p.parent for p in root.glob("*/adapter_config.json")] + [p.parent for p in root.glob("*/*/adapter_config.json")]
    found = [p for p in found if ".staging" not in p.parts and not p.name.endswith(".tmp")]
    return sorted(set(found), key=lambda p: p.stat().st_mtime, reverse=True)


def text_of(content) -> str:
    """A chat message's text, whichever form Gradio hands it over in (str, a part dict, or a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return content.get("text") or content.get("content") or ""
    if isinstance(content, (list, tuple)):
        return "".join(text_of(part) for part in content)
    return str(content)


def to_messages(history: list[dict]) -> list[dict]:
    return [{"role": m["role"], "content": text_of(m.get("content"))} for m in history
            if m.get("role") in ("user", "assistant", "system")]


# --- training --------------------------------------------------------------------------------------------------
def sft_argv(form: dict, uploads: list[str] = ()) -> list[str]:
    """`tunewise sft` flags from the Train form (empty fields are left to their defaults)."""
    argv = ["--model", form.get("model") or "tunewise-tiny", "--train_type", form.get("train_type") or "lora"]
    datasets = [d.strip() for d in (form.get("dataset") or "").split(",") if d.strip()] + [str(u) for u in uploads]
    if not datasets:
        raise UserError("Give a dataset: upload a .jsonl/.json file or name one (e.g. self_cognition#80).")
    argv += ["--dataset", *datasets]
    for key in ("model_name", "model_author"):
        values = [v.strip() for v in (form.get(key) or "").split(",") if v.strip()]
        if values:
            argv += [f"--{key}", *values]
    for key in ("num_train_epochs", "max_steps", "learning_rate", "lr_scheduler_type", "warmup_ratio", "lora_rank",
                "lora_alpha", "per_device_train_batch_size", "gradient_accumulation_steps", "max_length",
                "logging_steps", "save_steps", "system", "output_dir"):
        value = form.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, float) and value.is_integer() and key not in ("learning_rate", "warmup_ratio",
                                                                              "num_train_epochs"):
            value = int(value)
        argv += [f"--{key}", str(value)]
    argv += ["--report_to", "none"]
    extra = (form.get("extra") or "").strip()
    if extra:
        argv += shlex.split(extra)
    return argv


class TrainJob:
    """One `tunewise sft` subprocess at a time: its log file, run directory and metrics."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.argv: list[str] = []
        self.started = 0.0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, argv: list[str]) -> str:
        if self.running:
            return "A run is already going; stop it first."
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"webui-train-{time.strftime('%Y%m%d-%H%M%S')}.log"
        self.argv = argv
        cmd = [sys.executable, "-m", "tunewise.cli", "sft", *argv]
        env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
        with self.log_path.open("w", encoding="utf-8") as log:
            log.write("$ tunewise sft " + shlex.join(argv) + "\n")
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        self.started = time.time()
        return f"started (pid {self.proc.pid})"

    def stop(self, grace: float = 10.0) -> str:
        if not self.running:
            return "No run is going."
        pgid = os.getpgid(self.proc.pid)
        os.killpg(pgid, signal.SIGINT)  # tunewise handles Ctrl-C: exit code 130
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGTERM)
            self.proc.wait(grace)
        return f"stopped (exit code {self.proc.returncode})"

    def log_text(self, lines: int = 40) -> str:
        if not self.log_path or not self.log_path.is_file():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace").replace("\r", "\n")
        kept = []
        for line in (line.rstrip() for line in text.splitlines()):
            if not line.strip():
                continue
            if kept and line.startswith("train:") and kept[-1].startswith("train:"):
                kept[-1] = line  # a progress bar redraws itself: keep its latest state only
            else:
                kept.append(line)
        return "\n".join(kept[-lines:])

    def run_dir(self) -> Path | None:
        if not self.log_path or not self.log_path.is_file():
            return None
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("run directory: "):
                return Path(line[len("run directory: "):].strip())
        return None

    def records(self) -> list[dict]:
        run = self.run_dir()
        return read_jsonl(run / "logging.jsonl") if run else []

    def status(self) -> str:
        if self.proc is None:
            return "idle"
        if self.running:
            return f"running for {time.time() - self.started:.0f} s"
        code = self.proc.returncode
        return "finished" if code == 0 else f"exited with code {code}"


def plot_frames(records: list[dict]):
    """(loss frame, lr frame) for gr.LinePlot: step/value/series columns."""
    import pandas as pd

    loss = [{"step": r["step"], "value": r["loss"], "series": "train loss"} for r in records if "loss" in r]
    loss += [{"step": r["step"], "value": r["eval_loss"], "series": "eval loss"} for r in records if "eval_loss" in r]
    lr = [{"step": r["step"], "value": r["lr"], "series": "lr"} for r in records if "lr" in r]
    lr += [{"step": r["step"], "value": r["planned_lr"], "series": "planned lr"} for r in records if "planned_lr" in r]
    dtypes = {"step": "int64", "value": "float64", "series": "object"}  # numeric axes even before the first log

    def frame(rows):
        return pd.DataFrame(rows, columns=list(dtypes)).astype(dtypes)

    return frame(loss), frame(lr)


# --- the app ---------------------------------------------------------------------------------------------------
def build_app(pool: ModelPool, args: WebuiArgs):
    import gradio as gr

    from tunewise.args import Sampling
    from tunewise.infer.engine import Reply

    job = TrainJob(Path(args.output_dir))
    default_model = pool.engine.base_name

    def sampling_of(temperature, top_p, top_k, repetition_penalty, max_tokens, seed=None) -> Sampling:
        return Sampling(temperature=float(temperature), top_p=float(top_p), top_k=int(top_k),
                        repetition_penalty=float(repetition_penalty), max_new_tokens=int(max_tokens),
                        seed=None if seed in (None, "", -1) else int(seed))

    def refresh_models(current):
        choices = pool.choices()
        return gr.update(choices=choices, value=current if current in choices else default_model)

    # -- chat --
    def respond(message, history, model, system, temperature, top_p, top_k, repetition_penalty, max_tokens):
        message = (message or "").strip()
        history = list(history or [])
        if not message:
            yield history, ""
            return
        try:
            name = pool.name_for(model)
        except UserError as e:
            raise gr.Error(str(e))
        messages = to_messages(history) + [{"role": "user", "content": message}]
        if system and system.strip():
            messages = [{"role": "system", "content": system.strip()}] + messages
        history = history + [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]
        yield history, ""
        text = ""
        for piece in pool.engine.stream(name, messages, sampling_of(temperature, top_p, top_k, repetition_penalty,
                                                                    max_tokens)):
            if isinstance(piece, Reply):
                if piece.finish_reason == "length":
                    text += " …"
            else:
                text += piece
            history[-1] = {"role": "assistant", "content": text}
            yield history, ""

    # -- compare --
    def compare(prompt, model_a, model_b, system, temperature, max_tokens):
        import queue

        prompt = (prompt or "").strip()
        if not prompt:
            yield "", ""
            return
        messages = ([{"role": "system", "content": system.strip()}] if system and system.strip() else []) + \
                   [{"role": "user", "content": prompt}]
        events: queue.Queue = queue.Queue()
        texts = ["", ""]

        def run(slot, choice):
            try:
                name = pool.name_for(choice)
                for piece in pool.engine.stream(name, messages, sampling_of(temperature, 1.0, 0, 1.0, max_tokens, 0)):
                    if not isinstance(piece, Reply):
                        events.put((slot, piece))
            except Exception as e:  # shown in that model's box
                events.put((slot, f"\n[error: {e}]"))
            events.put((slot, None))

        for slot, choice in enumerate((model_a, model_b)):
            threading.Thread(target=run, args=(slot, choice), daemon=True).start()
        done = 0
        while done < 2:
            slot, piece = events.get()
            if piece is None:
                done += 1
                continue
            texts[slot] += piece
            yield texts[0], texts[1]
        yield texts[0], texts[1]

    # -- train --
    def start_training(files, *values):
        form = dict(zip(TRAIN_FIELDS, values))
        uploads = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in (files or [])]
        try:
            argv = sft_argv(form, uploads)
        except (UserError, ValueError) as e:
            return f"not started: {e}"
        return job.start(argv)

    def poll():
        records = job.records()
        run = job.run_dir()
        status = job.status() + (f" — {run}" if run else "")
        if not records:
            return status, job.log_text(), gr.skip(), gr.skip()
        loss, lr = plot_frames(records)
        return status, job.log_text(), loss, lr

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # nothing fetched from font CDNs
    with gr.Blocks(title="tunewise") as demo:
        gr.Markdown("## tunewise — chat, train, compare")
        with gr.Tab("Chat"):
            with gr.Row():
                with gr.Column(scale=3):
                    chatbot = gr.Chatbot(label="conversation", elem_id="chatbot", height=420)
                    with gr.Row():
                        message = gr.Textbox(placeholder="Ask something, e.g. 你是谁？ — Enter sends", lines=1,
                                             show_label=False, elem_id="chat-input", scale=5)
                        send = gr.Button("Send", variant="primary", elem_id="chat-send", scale=1)
                    clear = gr.Button("Clear history", elem_id="chat-clear")
                with gr.Column(scale=1):
                    model = gr.Dropdown(pool.choices(), value=default_model, label="model (base or adapter)",
                                        elem_id="chat-model", allow_custom_value=True)
                    refresh = gr.Button("Refresh model list", size="sm")
                    system = gr.Textbox(args.system or "", label="system prompt", lines=2)
                    temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="temperature (0 = greedy)")
                    top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top_p")
                    top_k = gr.Slider(0, 200, value=50, step=1, label="top_k (0 = off)")
                    repetition_penalty = gr.Slider(1.0, 2.0, value=1.0, step=0.05, label="repetition penalty")
                    max_tokens = gr.Slider(1, 2048, value=256, step=1, label="max new tokens")
            chat_inputs = [message, chatbot, model, system, temperature, top_p, top_k, repetition_penalty, max_tokens]
            message.submit(respond, chat_inputs, [chatbot, message])
            send.click(respond, chat_inputs, [chatbot, message])
            clear.click(lambda: ([], ""), None, [chatbot, message])
            refresh.click(refresh_models, model, model)

        with gr.Tab("Train"):
            with gr.Row():
                with gr.Column(scale=3):
                    with gr.Row():
                        with gr.Column():
                            t_model = gr.Textbox(args.model, label="--model")
                            t_type = gr.Radio(["lora", "full"], value="lora", label="--train_type")
                            t_dataset = gr.Textbox("self_cognition#200, tiny_skills#400",
                                                   label="--dataset (comma-separated; PATH#N samples)")
                            t_files = gr.File(label="dataset upload (.jsonl / .json)", file_count="multiple",
                                              file_types=[".jsonl", ".json"], height=120)
                            t_name = gr.Textbox("小黄, Xiao Huang", label="--model_name (Chinese, English; fills {{NAME}})")
                            t_author = gr.Textbox("魔搭, ModelScope",
                                                  label="--model_author (Chinese, English; fills {{AUTHOR}})")
                        with gr.Column():
                            t_epochs = gr.Number(5, label="--num_train_epochs")
                            t_steps = gr.Number(-1, label="--max_steps (> 0 overrides epochs)", precision=0)
                            t_lr = gr.Textbox("", label="--learning_rate (empty: the model's recommendation)")
                            t_rank = gr.Number(8, label="--lora_rank", precision=0)
                            t_alpha = gr.Number(32, label="--lora_alpha", precision=0)
                            t_log = gr.Number(5, label="--logging_steps", precision=0)
                            t_out = gr.Textbox(args.output_dir, label="--output_dir")
                    with gr.Accordion("more flags", open=False):
                        with gr.Row():
                            t_sched = gr.Dropdown(SCHEDULERS, value="cosine", label="--lr_scheduler_type")
                            t_warm = gr.Textbox("", label="--warmup_ratio (empty: default)")
                            t_save = gr.Number(50, label="--save_steps", precision=0)
                        with gr.Row():
                            t_bs = gr.Textbox("", label="--per_device_train_batch_size (empty: default)")
                            t_ga = gr.Textbox("", label="--gradient_accumulation_steps (empty: default)")
                            t_len = gr.Number(2048, label="--max_length", precision=0)
                        t_system = gr.Textbox("", label="--system")
                        t_extra = gr.Textbox("", label="any other sft flags", placeholder="--lora_dropout 0.1 --seed 7")
                with gr.Column(scale=2):
                    with gr.Row():
                        start = gr.Button("Start training", variant="primary", elem_id="train-start")
                        stop = gr.Button("Stop", variant="stop", elem_id="train-stop")
                    t_status = gr.Textbox("idle", label="status", interactive=False, elem_id="train-status")
                    # no initial (empty) data and fixed colors: a plot first drawn from an empty frame never shows
                    # its colored lines in Gradio 6; poll() skips the update until there is a record
                    loss_plot = gr.LinePlot(x="step", y="value", color="series", title="loss",
                                            y_title="loss", height=220,
                                            color_map={"train loss": "#f97316", "eval loss": "#2563eb"})
                    lr_plot = gr.LinePlot(x="step", y="value", color="series",
                                          title="learning rate", y_title="lr", height=220,
                                          color_map={"lr": "#f97316", "planned lr": "#9ca3af"})
                    t_output = gr.Textbox("", label="log", lines=8, max_lines=8, interactive=False)
            fields = [t_model, t_type, t_dataset, t_name, t_author, t_system, t_epochs, t_steps, t_lr, t_sched, t_warm,
                      t_rank, t_alpha, t_bs, t_ga, t_len, t_log, t_save, t_out, t_extra]
            start.click(start_training, [t_files] + fields, t_status)
            stop.click(lambda: job.stop(), None, t_status)
            timer = gr.Timer(2.0)
            timer.tick(poll, None, [t_status, t_output, loss_plot, lr_plot])

        with gr.Tab("Compare"):
            with gr.Row():
                model_a = gr.Dropdown(pool.choices(), value=default_model, label="model A", allow_custom_value=True)
                model_b = gr.Dropdown(pool.choices(), value=pool.choices()[-1], label="model B",
                                      allow_custom_value=True)
            c_prompt = gr.Textbox("你是谁？", label="prompt", lines=2)
            with gr.Row():
                c_system = gr.Textbox("", label="system prompt (both)")
                c_temp = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="temperature")
                c_max = gr.Slider(1, 2048, value=256, step=1, label="max new tokens")
            c_go = gr.Button("Ask both", variant="primary")
            c_refresh = gr.Button("Refresh model lists", size="sm")
            with gr.Row():
                out_a = gr.Textbox(label="A", lines=10, interactive=False)
                out_b = gr.Textbox(label="B", lines=10, interactive=False)
            c_go.click(compare, [c_prompt, model_a, model_b, c_system, c_temp, c_max], [out_a, out_b])
            c_refresh.click(lambda a, b: (refresh_models(a), refresh_models(b)), [model_a, model_b], [model_a, model_b])
    demo.tunewise_job = job
    demo.tunewise_theme = theme
    return demo


TRAIN_FIELDS = ["model", "train_type", "dataset", "model_name", "model_author", "system", "num_train_epochs",
                "max_steps", "learning_rate", "lr_scheduler_type", "warmup_ratio", "lora_rank", "lora_alpha",
                "per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "logging_steps",
                "save_steps", "output_dir", "extra"]


def launch(demo, host: str, port: int, block: bool = True):
    """Start the Gradio server (queue on, no share link, no analytics)."""
    demo.queue(default_concurrency_limit=16)
    return demo.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block,
                       show_error=True, quiet=not block, ssr_mode=False, theme=demo.tunewise_theme, footer_links=[])


def run(args: WebuiArgs, sources: dict, argv: list[str]) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from tunewise.serve.app import set_threads

    set_threads(0)
    pool = ModelPool(args)
    demo = build_app(pool, args)
    print(f"tunewise web UI on http://{args.host}:{args.port} (models: {', '.join(pool.choices())})", flush=True)
    try:
        launch(demo, args.host, args.port, block=True)
    finally:
        if demo.tunewise_job.running:
            demo.tunewise_job.stop()
        pool.engine.close()
    return 0


COMMAND = Command(WebuiArgs, run)
