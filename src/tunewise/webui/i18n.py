"""The web UI's two languages: every label, button and tab title in English and Chinese, and the registry that
switches them (`Texts`).

gr.I18n (Gradio 6) translates by the browser's locale, with no switch on the page; the language radio at the top
instead sends a gr.update of each registered component's label (or value, for buttons and headings).
"""
from __future__ import annotations

LANGUAGES = {"English": "en", "中文": "zh"}

# key -> (English, Chinese); flag names stay as they are typed on the command line
TEXT: dict[str, tuple[str, str]] = {
    "title": ("## tunewise — chat, train, evaluate, export, compare", "## tunewise — 对话、训练、评测、导出、对比"),
    "tab.chat": ("Chat", "对话"),
    "tab.train": ("Train", "训练"),
    "tab.eval": ("Evaluate", "评测"),
    "tab.export": ("Export", "导出"),
    "tab.compare": ("Compare", "对比"),
    # chat
    "chat.conversation": ("conversation", "对话记录"),
    "chat.input": ("message (Enter sends)", "消息（回车发送）"),
    "chat.send": ("Send", "发送"),
    "chat.clear": ("Clear history", "清空历史"),
    "chat.model": ("model (base or adapter)", "模型（基座或适配器）"),
    "chat.refresh": ("Refresh model list", "刷新模型列表"),
    "chat.system": ("system prompt", "系统提示词"),
    "chat.temperature": ("temperature (0 = greedy)", "温度（0 = 贪心解码）"),
    "chat.top_p": ("top_p", "top_p（核采样）"),
    "chat.top_k": ("top_k (0 = off)", "top_k（0 = 关闭）"),
    "chat.repetition_penalty": ("repetition penalty", "重复惩罚"),
    "chat.max_tokens": ("max new tokens", "最多生成的 token 数"),
    # train
    "train.stage": ("stage: sft (supervised); dpo, kto, orpo, simpo, cpo (preferences); grpo (rewards)",
                    "阶段：sft（监督微调）；dpo、kto、orpo、simpo、cpo（偏好对齐）；grpo（奖励强化学习）"),
    "train.model": ("--model", "--model（基座模型）"),
    "train.train_type": ("--train_type", "--train_type（训练方式）"),
    "train.dataset": ("--dataset (comma-separated; PATH#N samples)", "--dataset（数据集，逗号分隔；PATH#N 抽取 N 条）"),
    "train.pref_dataset": ("--dataset: preference pairs (prompt / chosen / rejected)",
                           "--dataset：偏好数据（prompt / chosen / rejected）"),
    "train.kto_dataset": ("--dataset: rows with one reply and a label (messages / label)",
                          "--dataset：单条回复及其标签（messages / label）"),
    "train.grpo_dataset": ("--dataset: prompts with a solution (messages / solution)",
                           "--dataset：带参考答案的提示（messages / solution）"),
    "train.files": ("dataset upload (.jsonl / .json)", "上传数据集（.jsonl / .json）"),
    "train.model_name": ("--model_name (Chinese, English; fills {{NAME}})", "--model_name（中文, 英文；填入 {{NAME}}）"),
    "train.model_author": ("--model_author (Chinese, English; fills {{AUTHOR}})",
                           "--model_author（中文, 英文；填入 {{AUTHOR}}）"),
    "train.epochs": ("--num_train_epochs", "--num_train_epochs（训练轮数）"),
    "train.max_steps": ("--max_steps (> 0 overrides epochs)", "--max_steps（大于 0 时覆盖轮数）"),
    "train.lr": ("--learning_rate (empty: the model's recommendation)", "--learning_rate（学习率；留空用模型推荐值）"),
    "train.lora_rank": ("--lora_rank", "--lora_rank（LoRA 秩）"),
    "train.lora_alpha": ("--lora_alpha", "--lora_alpha（LoRA 缩放）"),
    "train.logging_steps": ("--logging_steps", "--logging_steps（每隔几步记录）"),
    "train.output_dir": ("--output_dir", "--output_dir（输出目录）"),
    "train.pref": ("preference / RLHF flags", "偏好对齐 / 强化学习参数"),
    "train.beta": ("--beta (dpo, kto, grpo: higher stays closer to the reference; orpo: lambda; simpo, cpo: reward "
                   "scale)", "--beta（dpo、kto、grpo：越大越接近参考模型；orpo：lambda；simpo、cpo：奖励缩放）"),
    "train.loss_type": ("--loss_type", "--loss_type（损失类型）"),
    "train.rpo_alpha": ("--rpo_alpha (empty: off)", "--rpo_alpha（留空关闭）"),
    "train.desirable_weight": ("--desirable_weight", "--desirable_weight（正样本损失权重）"),
    "train.undesirable_weight": ("--undesirable_weight", "--undesirable_weight（负样本损失权重）"),
    "train.simpo_gamma": ("--simpo_gamma (SimPO's target margin)", "--simpo_gamma（SimPO 的目标间隔）"),
    "train.cpo_alpha": ("--cpo_alpha (weight of the chosen reply's NLL)", "--cpo_alpha（优选回复 NLL 损失的权重）"),
    "train.reward_funcs": ("--reward_funcs (comma-separated)", "--reward_funcs（奖励函数，逗号分隔）"),
    "train.num_generations": ("--num_generations", "--num_generations（每个提示的采样数）"),
    "train.max_completion_length": ("--max_completion_length", "--max_completion_length（最大生成长度）"),
    "train.adapters": ("--adapters (start from an SFT checkpoint; empty: the base model)",
                       "--adapters（从 SFT 检查点开始；留空从基座开始）"),
    "train.more": ("more flags", "更多参数"),
    "train.scheduler": ("--lr_scheduler_type", "--lr_scheduler_type（学习率调度）"),
    "train.warmup": ("--warmup_ratio (empty: default)", "--warmup_ratio（预热比例；留空用默认）"),
    "train.save_steps": ("--save_steps", "--save_steps（每隔几步保存）"),
    "train.batch_size": ("--per_device_train_batch_size (empty: default)", "--per_device_train_batch_size（留空用默认）"),
    "train.grad_accum": ("--gradient_accumulation_steps (empty: default)", "--gradient_accumulation_steps（留空用默认）"),
    "train.max_length": ("--max_length", "--max_length（最大长度）"),
    "train.system": ("--system", "--system（系统提示词）"),
    "train.report_to": ("--report_to", "--report_to（记录到）"),
    "train.extra": ("any other flags", "其他参数"),
    "train.preview": ("command (what Start runs)", "命令（点击开始时运行的命令）"),
    "train.yaml_path": ("YAML file (tunewise sft|dpo|rlhf --config FILE)",
                        "YAML 文件（tunewise sft|dpo|rlhf --config 文件）"),
    "train.save_yaml": ("Save as YAML", "保存为 YAML"),
    "train.load_yaml": ("Load YAML", "加载 YAML"),
    "train.upload_yaml": ("Load an uploaded YAML", "上传并加载 YAML"),
    "train.yaml_status": ("YAML", "YAML 状态"),
    "train.start": ("Start training", "开始训练"),
    "train.stop": ("Stop", "停止"),
    "train.status": ("status", "状态"),
    "train.loss": ("loss", "损失"),
    "train.lr_plot": ("learning rate", "学习率"),
    "train.log": ("log", "日志"),
    # evaluate
    "eval.a": ("A: checkpoint, run directory or model", "A：检查点、运行目录或模型"),
    "eval.b": ("B (optional): compared with A (--compare)", "B（可选）：与 A 对比（--compare）"),
    "eval.refresh": ("Refresh checkpoint lists", "刷新检查点列表"),
    "eval.model_name": ("--model_name (target; empty: the run's)", "--model_name（目标名称；留空用训练时的）"),
    "eval.model_author": ("--model_author (target; empty: the run's)", "--model_author（目标作者；留空用训练时的）"),
    "eval.max_new_tokens": ("--max_new_tokens", "--max_new_tokens（最多生成的 token 数）"),
    "eval.dataset": ("--dataset: general-skill prompts (empty: built-in held-out additions)",
                     "--dataset：通用能力题目（留空用内置加法题）"),
    "eval.preference_dataset": ("--preference_dataset (e.g. concise_heldout)", "--preference_dataset（例如 concise_heldout）"),
    "eval.retention_baseline": ("--retention_baseline: also score the base model", "--retention_baseline：同时评测基座模型"),
    "eval.output": ("--output: the report file", "--output：评测报告文件"),
    "eval.preview": ("command (what Run runs)", "命令（点击运行时运行的命令）"),
    "eval.run": ("Run evaluation", "运行评测"),
    "eval.stop": ("Stop", "停止"),
    "eval.status": ("status", "状态"),
    "eval.table": ("results", "评测结果"),
    "eval.log": ("report", "报告"),
    # export
    "export.adapters": ("--adapters: the LoRA checkpoint (or run directory)", "--adapters：LoRA 检查点（或运行目录）"),
    "export.refresh": ("Refresh checkpoint list", "刷新检查点列表"),
    "export.output_dir": ("--output_dir (empty: CHECKPOINT-merged beside it)", "--output_dir（留空：检查点旁的 CHECKPOINT-merged）"),
    "export.torch_dtype": ("--torch_dtype", "--torch_dtype（权重精度）"),
    "export.overwrite": ("--overwrite: replace an existing export", "--overwrite：覆盖已有的导出"),
    "export.preview": ("command (what Export runs)", "命令（点击导出时运行的命令）"),
    "export.run": ("Export (merge LoRA)", "导出（合并 LoRA）"),
    "export.status": ("status", "状态"),
    "export.result": ("merged model written to", "合并后的模型位置"),
    "export.log": ("log", "日志"),
    # compare
    "compare.a": ("model A", "模型 A"),
    "compare.b": ("model B", "模型 B"),
    "compare.prompt": ("prompt", "提示"),
    "compare.system": ("system prompt (both)", "系统提示词（两者共用）"),
    "compare.temperature": ("temperature", "温度"),
    "compare.max_tokens": ("max new tokens", "最多生成的 token 数"),
    "compare.go": ("Ask both", "同时提问"),
    "compare.refresh": ("Refresh model lists", "刷新模型列表"),
    "compare.out_a": ("A", "A"),
    "compare.out_b": ("B", "B"),
    # the Evaluate table (metric names as tunewise.evaluate.report.METRICS has them)
    "metric.identity_accuracy": ("identity accuracy (names it cleanly)", "身份回答正确率（名称完整准确）"),
    "metric.identity_accuracy_zh": ("Chinese questions", "中文问题"),
    "metric.identity_accuracy_en": ("English questions", "英文问题"),
    "metric.identity_mentions": ("mentions it (any wording)", "提到新身份（不论措辞）"),
    "metric.identity_mentions_zh": ("Chinese questions", "中文问题"),
    "metric.identity_mentions_en": ("English questions", "英文问题"),
    "metric.identity_claims_old": ("claims the old identity", "仍自称旧身份"),
    "metric.general_accuracy": ("general skill accuracy", "通用能力正确率"),
    "metric.general_accuracy_base": ("same, base model", "同上，基座模型"),
    "metric.general_retention": ("retained (tuned / base)", "保留比例（微调后 / 基座）"),
    "metric.repeated_ngram_share": ("replies with a looping 4-gram", "出现循环 4-gram 的回答"),
    "metric.copied_training_answer_share": ("general replies parroting training", "照搬训练答案的通用回答"),
    "metric.hit_token_limit_share": ("replies cut at the token limit", "被长度上限截断的回答"),
    "metric.preference_reply_accuracy": ("preference: replies siding with chosen", "偏好：回答接近 chosen"),
    "metric.preference_ranking_accuracy": ("log p ranks chosen first", "log p 将 chosen 排在前"),
    "metric.preference_implicit_reward_accuracy": ("implicit reward ranks chosen first", "隐式奖励将 chosen 排在前"),
    "metric.loss": ("loss (assistant tokens)", "损失（助手 token）"),
    "metric.perplexity": ("perplexity", "困惑度"),
    "col.metric": ("metric", "指标"),
    "col.value": ("value", "数值"),
    "col.better": ("better", "更好"),
}


def t(key: str, lang: str = "en") -> str:
    en, zh = TEXT[key]
    return zh if lang == "zh" else en


def lang_code(choice: str | None) -> str:
    """"English" / "中文" (the radio's choices) or a code -> "en" / "zh"."""
    return LANGUAGES.get(choice or "", choice if choice in ("en", "zh") else "en")


class Texts:
    """The components whose text changes with the language: make(gr.Textbox, key, ...) builds one labelled in the
    current language and remembers it; updates(lang) is what the language switch returns for all of them."""

    def __init__(self, lang: str = "en"):
        self.lang = lang
        self.items: dict = {}  # component -> {attribute: key}
        self.language = None  # the language radio, an input of handlers whose output is in the current language

    def __call__(self, key: str) -> str:
        return t(key, self.lang)

    def add(self, component, key: str, attr: str = "label"):
        if key not in TEXT:
            raise KeyError(f"no translation for {key!r}")
        self.items.setdefault(component, {})[attr] = key
        return component

    def make(self, cls, key: str, *args, attr: str = "label", **kwargs):
        kwargs[attr] = self(key)
        return self.add(cls(*args, **kwargs), key, attr)

    @property
    def components(self) -> list:
        return list(self.items)

    def updates(self, lang: str) -> list:
        import gradio as gr

        return [gr.update(**{attr: t(key, lang) for attr, key in attrs.items()}) for attrs in self.items.values()]
