"""The Chat tab: one model (base or adapter) answers, streamed; the history stays until Clear."""
from __future__ import annotations

from tunewise.errors import UserError


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


def sampling_of(temperature, top_p, top_k, repetition_penalty, max_tokens, seed=None):
    from tunewise.args import Sampling

    return Sampling(temperature=float(temperature), top_p=float(top_p), top_k=int(top_k),
                    repetition_penalty=float(repetition_penalty), max_new_tokens=int(max_tokens),
                    seed=None if seed in (None, "", -1) else int(seed))


def refresh_models(pool, current):
    import gradio as gr

    choices = pool.choices()
    return gr.update(choices=choices, value=current if current in choices else pool.engine.base_name)


def build(T, pool, args) -> None:
    import gradio as gr

    from tunewise.models.generate import Reply

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

    with gr.Row():
        with gr.Column(scale=3):
            chatbot = T.make(gr.Chatbot, "chat.conversation", elem_id="chatbot", height=420)
            with gr.Row():
                message = T.make(gr.Textbox, "chat.input", placeholder="你是谁？ / Who are you?", lines=1,
                                 show_label=False, elem_id="chat-input", scale=5)
                send = T.make(gr.Button, "chat.send", attr="value", variant="primary", elem_id="chat-send", scale=1)
            clear = T.make(gr.Button, "chat.clear", attr="value", elem_id="chat-clear")
        with gr.Column(scale=1):
            model = T.make(gr.Dropdown, "chat.model", pool.choices(), value=pool.engine.base_name,
                           elem_id="chat-model", allow_custom_value=True)
            refresh = T.make(gr.Button, "chat.refresh", attr="value", size="sm")
            system = T.make(gr.Textbox, "chat.system", args.system or "", lines=2)
            temperature = T.make(gr.Slider, "chat.temperature", 0.0, 2.0, value=0.0, step=0.05)
            top_p = T.make(gr.Slider, "chat.top_p", 0.05, 1.0, value=1.0, step=0.05)
            top_k = T.make(gr.Slider, "chat.top_k", 0, 200, value=50, step=1)
            repetition_penalty = T.make(gr.Slider, "chat.repetition_penalty", 1.0, 2.0, value=1.0, step=0.05)
            max_tokens = T.make(gr.Slider, "chat.max_tokens", 1, 2048, value=256, step=1)
    inputs = [message, chatbot, model, system, temperature, top_p, top_k, repetition_penalty, max_tokens]
    message.submit(respond, inputs, [chatbot, message])
    send.click(respond, inputs, [chatbot, message])
    clear.click(lambda: ([], ""), None, [chatbot, message])
    refresh.click(lambda current: refresh_models(pool, current), model, model)
