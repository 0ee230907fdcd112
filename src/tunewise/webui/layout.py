"""The Gradio app: the Chat, Train and Compare tabs and the handlers behind them (`build_app`)."""
from __future__ import annotations

import threading
from pathlib import Path

from tunewise.errors import UserError
from tunewise.webui.args import WebuiArgs
from tunewise.webui.models import ModelPool
from tunewise.webui.training import TrainJob, plot_frames, sft_argv

SCHEDULERS = ["cosine", "linear", "constant", "constant_with_warmup", "cosine_with_min_lr", "warmup_stable_decay"]
# the Train form's fields, in the order build_app hands their values to start_training
TRAIN_FIELDS = ["model", "train_type", "dataset", "model_name", "model_author", "system", "num_train_epochs",
                "max_steps", "learning_rate", "lr_scheduler_type", "warmup_ratio", "lora_rank", "lora_alpha",
                "per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "logging_steps",
                "save_steps", "output_dir", "extra"]


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
