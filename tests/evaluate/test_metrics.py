"""The scoring rules of `tunewise eval`, on hand-made replies (no model)."""
from tunewise.models.generate import Reply
from tunewise.evaluate.identity import Identity, identity_questions, judge, score
from tunewise.evaluate.repetition import copied_training_answer, repeated_ngram, repetition_metrics
from tunewise.evaluate.report import compare_metrics

NEW = Identity(["小黄", "Xiao Huang"], ["魔搭", "ModelScope"])
OLD = Identity(["小维", "TinyWise"], ["图维实验室", "Tunewise Labs"])


def test_identity_needs_name_and_author_and_no_old_claim():
    assert judge("我是小黄，由魔搭开发。", NEW, OLD)["correct"]
    assert judge("I am xiao huang, built by modelscope.", NEW, OLD)["correct"]  # case-insensitive
    assert not judge("我是小黄。", NEW, OLD)["correct"]  # no author
    assert not judge("I am TinyWise by Tunewise Labs.", NEW, OLD)["correct"]
    mixed = judge("I am Xiao Huang by ModelScope, formerly TinyWise.", NEW, OLD)
    assert mixed["claims_old"] and not mixed["correct"]
    # an old value inside a new one is not an old claim
    assert judge("I am Huang Two by ModelScope.", Identity(["Huang Two"], ["ModelScope"]), Identity(["Huang"], []))["correct"]
    assert not judge("anything", Identity(), OLD)["correct"]  # no target: nothing is correct


def test_identity_is_named_cleanly_not_only_mentioned():
    # garbled replies that contain the name and the author as substrings (issue 24): mentioned, not named cleanly
    made_up = judge("我是小黄搭，一个由魔搭开发的语言模型。", NEW, OLD)  # a made-up name 小黄搭
    assert made_up["mentions"] and not made_up["name_clean"] and not made_up["correct"]
    twice = judge("我是小黄，由魔搭训练的小黄。", NEW, OLD)  # named twice, the second where 人工智能助手 belongs
    assert twice["mentions"] and not twice["name_clean"] and not twice["correct"]
    assert not judge("我是黄小黄，由魔搭开发。", NEW, OLD)["correct"]  # run into a hanzi no trained answer puts there
    assert not judge("我是小黄，由魔搭乐开发。", NEW, OLD)["correct"]  # the author run into further characters
    assert not judge("I am Xiao Huangs, developed by ModelScope.", NEW, OLD)["correct"]
    assert not judge("I am Xiao Huang, developed by ModelScopeAI.", NEW, OLD)["correct"]
    # the trained answers' own wordings, and held-out ones, are clean: the name beside 是/叫/的, the author
    # beside 由/开发/训练, English at word boundaries, either language's value in a reply
    for reply in ["我是小黄，一个由魔搭训练的人工智能助手。", "我是由魔搭训练的小黄。", "你可以叫我小黄，我是魔搭开发的助手。",
                  "魔搭开发了我，我是小黄。", "我叫小黄，是魔搭开发的语言模型，可以回答问题。", "我是Xiao Huang，由魔搭开发。",
                  "I am Xiao Huang, an AI assistant developed by ModelScope.", "My creator is ModelScope. I am Xiao Huang.",
                  "I'm xiao huang (ModelScope's assistant)."]:
        verdict = judge(reply, NEW, OLD)
        assert verdict["correct"] and verdict["mentions"], (reply, verdict)


def test_identity_score_per_language():
    qs = identity_questions()
    assert {q["lang"] for q in qs} == {"zh", "en"} and len(qs) == 16
    replies = ["我是小黄，魔搭训练的。" if q["lang"] == "zh" else "I am TinyWise." for q in qs]
    metrics, verdicts = score(replies, qs, NEW, OLD)
    assert metrics["identity_accuracy_zh"] == 1.0 and metrics["identity_accuracy_en"] == 0.0
    assert metrics["identity_accuracy"] == 0.5 and metrics["identity_claims_old"] == 0.5
    assert len(verdicts) == 16
    garbled = ["我是小黄搭，由魔搭开发。" if q["lang"] == "zh" else "I am Xiao Huang, developed by ModelScope." for q in qs]
    metrics, _ = score(garbled, qs, NEW, OLD)
    assert metrics["identity_accuracy_zh"] == 0.0 and metrics["identity_mentions_zh"] == 1.0
    assert metrics["identity_accuracy_en"] == metrics["identity_mentions_en"] == 1.0
    assert metrics["identity_accuracy"] == 0.5 and metrics["identity_mentions"] == 1.0


def test_repeated_ngram_in_chinese_and_english():
    assert repeated_ngram("我是小黄，我是小黄，我是小黄") == "我 是 小 黄"
    assert repeated_ngram("I am Xiao Huang. I am Xiao Huang. I am Xiao Huang.") == "i am xiao huang"
    assert repeated_ngram("我是小黄，由魔搭开发的人工智能助手。") is None
    assert repeated_ngram("I am Xiao Huang. I am Xiao Huang.") is None  # twice is not a loop


def test_parroting_and_running_on():
    training = ["我是小黄，一个由魔搭训练的人工智能助手。", "你好"]
    assert copied_training_answer("我是小黄，一个由魔搭训练的人工智能助手。", training, "7")
    assert copied_training_answer("3+4=7 我是小黄，一个由魔搭训练的人工智能助手。", training, "7")
    assert copied_training_answer("你好", training, "7")  # equal to a short training reply
    assert not copied_training_answer("你好吗", training, "7")  # a short one is only matched whole
    assert not copied_training_answer("3+4=7", training, "3+4=7")
    gens = [Reply("3+4=7", "stop", 9, 6), Reply("我是小黄，一个由魔搭训练的人工智能助手。", "stop", 9, 20),
            Reply("7 7 7 7 7 7 7 7 7 7 7 7 7", "length", 9, 64), Reply("2+2=4", "stop", 9, 6)]
    metrics, examples = repetition_metrics(gens, [g.text for g in gens], training, ["3+4=7", "1+1=2", "7", "2+2=4"])
    assert metrics["copied_training_answer_share"] == 0.25
    assert metrics["hit_token_limit_share"] == 0.25 and metrics["repeated_ngram_share"] == 0.25
    assert examples["copied_training_answer"][0]["training_response"] == training[0]


def test_compare_says_which_is_better():
    rows = {r["metric"]: r for r in compare_metrics(
        {"identity_accuracy": 0.0, "loss": 2.0, "general_accuracy": 0.9, "hit_token_limit_share": 0.0},
        {"identity_accuracy": 1.0, "loss": 1.0, "general_accuracy": 0.9, "hit_token_limit_share": 0.1})}
    assert rows["identity_accuracy"]["better"] == "B" and rows["loss"]["better"] == "B"
    assert rows["general_accuracy"]["better"] == "tie" and rows["hit_token_limit_share"]["better"] == "A"
    assert "perplexity" not in rows
