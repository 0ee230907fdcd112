"""`tunewise infer`: answers to --query (one or several, in order) or an interactive chat, streamed by default."""
from __future__ import annotations

import sys
from dataclasses import dataclass

from tunewise.args import InferArgs, Sampling
from tunewise.command import Command
from tunewise.flags import flag_field
from tunewise.infer.engine import Engine
from tunewise.models.generate import Reply

CHAT_HELP = "Type a message; 'clear' starts a new conversation, 'exit' quits."


def answer(engine: Engine, messages: list[dict], sampling: Sampling, stream: bool, out=None) -> Reply:
    out = out or sys.stdout  # looked up per call, so redirected stdout is honoured
    if stream:
        reply = None
        for piece in engine.stream(messages, sampling):
            if isinstance(piece, Reply):
                reply = piece
            else:
                out.write(piece)
                out.flush()
        out.write("\n")
    else:
        reply = engine.chat(messages, sampling)
        out.write(reply.text + "\n")
    if reply.finish_reason == "length":
        print(f"[the reply reached --max_new_tokens {sampling.max_new_tokens} without an end-of-turn token]",
              file=sys.stderr)
    return reply


@dataclass(frozen=True)
class InferQueries(InferArgs):
    """Chat with a base model or a fine-tuned checkpoint (`tunewise infer`)."""

    query: list[str] = flag_field([], "answer these questions and exit: one answer per line, or with several "
                                      "(--query Q1 Q2 ...) each in a conversation of its own, in order, as "
                                      "'<<< Q' / '>>> A' (one model load for all); without it an interactive chat starts")


def chat(args: InferQueries, sources: dict, argv: list[str]) -> int:
    engine = Engine.load(args.model, args.adapters, args.system, args.template, dtype=args.torch_dtype,
                         attn_implementation=args.attn_impl)
    sampling = Sampling.of(args)
    if args.query:
        several = len(args.query) > 1
        for query in args.query:
            if several:
                sys.stdout.write(f"<<< {query}\n>>> ")
            answer(engine, [{"role": "user", "content": query}], sampling, args.stream)
        return 0
    print(f"chatting with {engine.checkpoint.label}. {CHAT_HELP}")
    history: list[dict] = []
    while True:
        try:
            text = input("<<< ").strip()
        except EOFError:
            print()
            return 0
        if text in ("exit", "quit"):
            return 0
        if text == "clear":
            history = []
            print("(new conversation)")
            continue
        if not text:
            continue
        history.append({"role": "user", "content": text})
        sys.stdout.write(">>> ")
        reply = answer(engine, history, sampling, args.stream)
        history.append({"role": "assistant", "content": reply.text})


COMMAND = Command(InferQueries, chat)
