"""The Compare tab: two models (base or adapters) answer one prompt side by side, streamed at the same time."""
from __future__ import annotations

import queue
import threading

from tunewise.webui.tabs.chat import refresh_models, sampling_of


def build(T, pool) -> None:
    import gradio as gr

    from tunewise.models.generate import Reply

    def compare(prompt, model_a, model_b, system, temperature, max_tokens):
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

    choices = pool.choices()
    with gr.Row():
        model_a = T.make(gr.Dropdown, "compare.a", choices, value=pool.engine.base_name, allow_custom_value=True)
        model_b = T.make(gr.Dropdown, "compare.b", choices, value=choices[-1], allow_custom_value=True)
    prompt = T.make(gr.Textbox, "compare.prompt", "你是谁？", lines=2)
    with gr.Row():
        system = T.make(gr.Textbox, "compare.system", "")
        temperature = T.make(gr.Slider, "compare.temperature", 0.0, 2.0, value=0.0, step=0.05)
        max_tokens = T.make(gr.Slider, "compare.max_tokens", 1, 2048, value=256, step=1)
    go = T.make(gr.Button, "compare.go", attr="value", variant="primary")
    refresh = T.make(gr.Button, "compare.refresh", attr="value", size="sm")
    with gr.Row():
        out_a = T.make(gr.Textbox, "compare.out_a", lines=10, interactive=False)
        out_b = T.make(gr.Textbox, "compare.out_b", lines=10, interactive=False)
    go.click(compare, [prompt, model_a, model_b, system, temperature, max_tokens], [out_a, out_b])
    refresh.click(lambda a, b: (refresh_models(pool, a), refresh_models(pool, b)), [model_a, model_b],
                  [model_a, model_b])
