"""Identity questions phrased unlike the rows of the built-in self_cognition set.

The embedded model saw these phrasings in pretraining (answered with its default identity and with identities
named in a system prompt), never in a fine-tune; evaluation asks them to see whether a new identity generalises.
"""

HELDOUT_IDENTITY_QUESTIONS = {
    "zh": [
        "你到底是谁？",
        "告诉我你的名字和开发者。",
        "你是哪个机构做出来的？",
        "我在和谁说话？",
        "你的创造者叫什么？",
        "请问你是什么助手？",
        "能说一下你是谁做的吗？",
        "你是什么人工智能？",
    ],
    "en": [
        "Who am I talking to?",
        "Tell me your name and who made you.",
        "Which organization built you?",
        "What kind of assistant are you?",
        "Who are you, exactly?",
        "What is the name of your creator?",
        "Could you say who trained you?",
        "Which AI are you?",
    ],
}
