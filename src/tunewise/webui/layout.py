"""The Gradio app (`build_app`): a language switch over the Chat, Train, Evaluate, Export and Compare tabs
(webui/tabs/, one module each). Every labelled component is made through an i18n.Texts registry, so the switch
relabels all of them."""
from __future__ import annotations

from pathlib import Path

from tunewise.webui.args import WebuiArgs
from tunewise.webui.i18n import LANGUAGES, Texts, lang_code
from tunewise.webui.models import ModelPool
from tunewise.webui.training import Job, TrainJob


def build_app(pool: ModelPool, args: WebuiArgs):
    import gradio as gr

    from tunewise.webui.tabs import chat, compare, evaluate, export, train
    from tunewise.webui.tabs.common import checkpoint_choices

    out = Path(args.output_dir)
    train_job, eval_job, export_job = TrainJob(out), Job(out, "eval"), Job(out, "export")
    T = Texts("en")
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # nothing fetched from font CDNs
    with gr.Blocks(title="tunewise") as demo:
        with gr.Row(equal_height=True):
            T.make(gr.Markdown, "title", attr="value")
            T.language = gr.Radio(list(LANGUAGES), value="English", label="Language / 语言", elem_id="language",
                                  scale=0, min_width=220)
        with T.make(gr.Tab, "tab.chat", elem_id="tab-chat"):
            chat.build(T, pool, args)
        with T.make(gr.Tab, "tab.train", elem_id="tab-train"):
            train.build(T, args, train_job)
        with T.make(gr.Tab, "tab.eval", elem_id="tab-eval"):
            evaluate.build(T, args, eval_job, lambda: [args.model] + checkpoint_choices(args.output_dir))
        with T.make(gr.Tab, "tab.export", elem_id="tab-export"):
            export.build(T, export_job, lambda: checkpoint_choices(args.output_dir))
        with T.make(gr.Tab, "tab.compare", elem_id="tab-compare"):
            compare.build(T, pool)
        T.language.change(lambda choice: T.updates(lang_code(choice)), T.language, T.components,
                          show_progress="hidden")
    demo.tunewise_job = train_job
    demo.tunewise_jobs = (train_job, eval_job, export_job)
    demo.tunewise_texts = T
    demo.tunewise_theme = theme
    return demo
