#!/usr/bin/env python3
"""A GGUF file run by llama.cpp itself, through its C API: tokenize, greedy decode, logits. Runs in .venv-llamacpp
(scripts/setup_llamacpp.sh: llama-cpp-cffi's prebuilt CPU llama.cpp), on the standard library and cffi alone, so
it imports nothing of tunewise.

    .venv-llamacpp/bin/python src/tunewise/export/llamacpp_run.py MODEL.gguf PROMPTS.json [--max_tokens 40]
        [--top_k 20] [--all_logits] [--threads N] [--vocab_only]
    .venv-llamacpp/bin/python src/tunewise/export/llamacpp_run.py --version

PROMPTS.json is a list; each item is either a rendered prompt (a string, tokenized as it stands: special tokens
such as <|im_start|> parsed, no BOS added unless the file says so) or {"messages": [{"role", "content"}, ...]},
rendered first by llama.cpp's own llama_chat_apply_template with the template stored in the file (this llama.cpp
does not run the Jinja: it recognises the template's family, e.g. ChatML, and writes that family's format).
Prints one JSON object: llama.cpp's build, and for each prompt the text it tokenized, its token ids, the greedy reply
(ids and text, up to --max_tokens, ending at an end-of-generation token) and the logits at the last prompt position
(the first generated token's): the --top_k largest, or all of them with --all_logits. An item
{"ids": [...], "labels": [...]} (token ids and transformers-style labels, -100 for none) is scored instead: the
summed negative log-likelihood of its labelled tokens, for a perplexity.

The wheel's own Python package (`import llama`) imports transformers<5 and Hugging Face Hub on import, so the
compiled module is loaded by its path instead. Its libstdc++ symbol __cxa_call_terminate (GCC 14) is absent from
older systems' libstdc++ (Debian 12's GCC 12): the module is opened with lazy binding, which leaves that symbol,
called only on the path where a noexcept function throws (std::terminate), unresolved until then; a process that
got there would stop with "symbol lookup error" instead of the abort it would end in anyway.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import math
import os
import sys


class LlamaCppError(Exception):
    """llama.cpp refused: the message carries the tail of llama.cpp's own log, which says why."""


def _module_path() -> str:
    spec = importlib.util.find_spec("llama")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise LlamaCppError("no llama-cpp-cffi in this Python: run it with .venv-llamacpp/bin/python "
                            "(bash scripts/setup_llamacpp.sh makes it)")
    found = sorted(glob.glob(os.path.join(spec.submodule_search_locations[0], "_llama_cpp_cpu.*.so")))
    if not found:
        raise LlamaCppError(f"{spec.submodule_search_locations[0]}: no _llama_cpp_cpu module (llama-cpp-cffi's CPU "
                            "build) in it")
    return found[0]


def load_library():
    """(lib, ffi, build) of llama.cpp's CPU build; llama.cpp's log goes to LOG (shown when something fails)."""
    path = _module_path()
    flags = sys.getdlopenflags()
    sys.setdlopenflags(os.RTLD_LAZY | os.RTLD_LOCAL)
    try:
        spec = importlib.util.spec_from_file_location("_llama_cpp_cpu", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.setdlopenflags(flags)
    lib, ffi = module.lib, module.ffi

    @ffi.def_extern(name="llama_cpp_cffi_ggml_log_callback")
    def _log(level, text, user_data):
        LOG.append(ffi.string(text).decode("utf-8", "replace"))

    lib.llama_log_set(lib.llama_cpp_cffi_ggml_log_callback, ffi.NULL)
    lib.llama_backend_init()
    return lib, ffi, _build_info(ffi, path, lib)


LOG: list[str] = []


def _log_tail(lines: int = 12) -> str:
    text = "".join(LOG).strip().splitlines()
    return "\n".join(text[-lines:]) or "(llama.cpp logged nothing)"


def _build_info(ffi, path: str, lib) -> dict:
    """llama.cpp's build number and commit (exported data symbols the module's own cdef leaves out)."""
    import cffi

    data = cffi.FFI()
    data.cdef("extern int LLAMA_BUILD_NUMBER; extern const char * LLAMA_COMMIT;")
    handle = data.dlopen(path, data.RTLD_LAZY | data.RTLD_NOLOAD)
    return {"build": int(handle.LLAMA_BUILD_NUMBER), "commit": data.string(handle.LLAMA_COMMIT).decode(),
            "system_info": ffi.string(lib.llama_print_system_info()).decode().strip(), "module": path}


class Model:
    """A GGUF model loaded by llama.cpp (CPU, no offload)."""

    def __init__(self, lib, ffi, path: str, threads: int, vocab_only: bool = False, n_ctx: int = 1024):
        self.lib, self.ffi, self.threads, self.n_ctx = lib, ffi, threads, n_ctx
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0
        params.vocab_only = vocab_only
        LOG.clear()
        self.model = lib.llama_model_load_from_file(path.encode(), params)
        if self.model == ffi.NULL:
            raise LlamaCppError(f"llama.cpp could not load {path}:\n{_log_tail()}")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)

    def close(self):
        self.lib.llama_model_free(self.model)

    def meta(self, key: str) -> str | None:
        buf = self.ffi.new("char[]", 1 << 16)
        n = self.lib.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return None if n < 0 else self.ffi.string(buf).decode("utf-8", "replace")

    def chat_template(self) -> str | None:
        t = self.lib.llama_model_chat_template(self.model, self.ffi.NULL)
        return None if t == self.ffi.NULL else self.ffi.string(t).decode("utf-8", "replace")

    def render(self, messages: list[dict]) -> str:
        """llama_chat_apply_template with the file's template (llama.cpp recognises its family)."""
        ffi, lib = self.ffi, self.lib
        template = self.chat_template()
        if template is None:
            raise LlamaCppError("the file holds no tokenizer.chat_template to render messages with")
        keep = [(ffi.new("char[]", m["role"].encode()), ffi.new("char[]", m["content"].encode())) for m in messages]
        chat = ffi.new("struct llama_chat_message[]", len(keep))
        for i, (role, content) in enumerate(keep):
            chat[i].role, chat[i].content = role, content
        tmpl = ffi.new("char[]", template.encode())
        size = 4096
        while True:
            buf = ffi.new("char[]", size)
            n = lib.llama_chat_apply_template(tmpl, chat, len(keep), True, buf, size)
            if n < 0:
                raise LlamaCppError("llama_chat_apply_template does not recognise the file's chat template "
                                    f"(returned {n})")
            if n <= size:
                return ffi.unpack(buf, n).decode("utf-8")
            size = n

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        raw = text.encode("utf-8")
        size = len(raw) + 8
        while True:
            out = self.ffi.new("int32_t[]", size)
            n = self.lib.llama_tokenize(self.vocab, raw, len(raw), out, size, add_special, True)
            if n >= 0:
                return list(out[0:n])
            size = -n

    def detokenize(self, ids: list[int]) -> str:
        """The text of the ids, special tokens left out (as transformers' decode(skip_special_tokens=True))."""
        if not ids:
            return ""
        tokens = self.ffi.new("int32_t[]", ids)
        size = 16 * len(ids) + 16
        while True:
            buf = self.ffi.new("char[]", size)
            n = self.lib.llama_detokenize(self.vocab, tokens, len(ids), buf, size, True, False)
            if n >= 0:
                return self.ffi.unpack(buf, n).decode("utf-8", "replace")
            size = -n

    def _context(self):
        params = self.lib.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = self.n_ctx
        params.n_threads = params.n_threads_batch = self.threads
        params.no_perf = True
        ctx = self.lib.llama_init_from_model(self.model, params)
        if ctx == self.ffi.NULL:
            raise LlamaCppError(f"llama.cpp could not make a context:\n{_log_tail()}")
        return ctx

    def _logits(self, ctx, i: int) -> list[float]:
        return self.ffi.unpack(self.lib.llama_get_logits_ith(ctx, i), self.n_vocab)

    def _prefill(self, ctx, ids: list[int], positions: set[int]) -> dict[int, list[float]]:
        """Decode `ids` as one batch into a fresh context; the logits at `positions`."""
        if not ids or len(ids) > self.n_ctx:
            raise LlamaCppError(f"a prompt of {len(ids)} tokens: expected 1 to n_ctx {self.n_ctx}")
        batch = self.lib.llama_batch_init(len(ids), 0, 1)
        try:
            for i, t in enumerate(ids):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = t, i, 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = i in positions
            batch.n_tokens = len(ids)
            self._decode(ctx, batch)
        finally:
            self.lib.llama_batch_free(batch)
        return {i: self._logits(ctx, i) for i in sorted(positions)}

    def generate(self, ids: list[int], max_tokens: int, all_positions: bool) -> dict:
        """Greedy decoding after the prompt `ids`; the logits at the last prompt position (every prompt position
        with `all_positions`)."""
        lib = self.lib
        if len(ids) + max_tokens > self.n_ctx:
            raise LlamaCppError(f"a prompt of {len(ids)} tokens and {max_tokens} new ones do not fit n_ctx "
                                f"{self.n_ctx}")
        ctx = self._context()
        try:
            found = self._prefill(ctx, ids, set(range(len(ids))) if all_positions else {len(ids) - 1})
            first = found[len(ids) - 1]
            reply, finish, logits = [], "length", first
            one = self.ffi.new("int32_t[1]")
            for _ in range(max_tokens):
                token = max(range(self.n_vocab), key=logits.__getitem__)  # the first of equal maxima, as argmax
                if lib.llama_vocab_is_eog(self.vocab, token):
                    finish = "stop"
                    break
                reply.append(token)
                one[0] = token
                self._decode(ctx, lib.llama_batch_get_one(one, 1))
                logits = self._logits(ctx, -1)
        finally:
            lib.llama_free(ctx)
        return {"reply_ids": reply, "reply": self.detokenize(reply), "finish_reason": finish,
                "first_logits": first, "prompt_logits": [found[i] for i in range(len(ids))] if all_positions else None}

    def score(self, ids: list[int], labels: list[int]) -> dict:
        """The summed negative log-likelihood of the labelled tokens (labels as transformers takes them: the
        label at position i, -100 for none, is predicted from position i - 1)."""
        if len(labels) != len(ids):
            raise LlamaCppError(f"{len(ids)} ids but {len(labels)} labels")
        wanted = {i - 1 for i in range(1, len(ids)) if labels[i] != -100}
        ctx = self._context()
        try:
            found = self._prefill(ctx, ids, wanted)
        finally:
            self.lib.llama_free(ctx)
        nll = []
        for i in sorted(wanted):
            logits = found[i]
            high = max(logits)
            nll.append(high + math.log(math.fsum(math.exp(x - high) for x in logits)) - logits[labels[i + 1]])
        return {"nll_sum": math.fsum(nll), "nll_tokens": len(nll)}

    def _decode(self, ctx, batch) -> None:
        rc = self.lib.llama_decode(ctx, batch)
        if rc != 0:
            raise LlamaCppError(f"llama_decode returned {rc}:\n{_log_tail()}")


def top(logits: list[float], k: int) -> list[list]:
    order = sorted(range(len(logits)), key=lambda i: (-logits[i], i))[:k]
    return [[i, logits[i]] for i in order]


def run(args) -> dict:
    lib, ffi, build = load_library()
    if args.version:
        return {"llama_cpp": build}
    prompts = json.loads(open(args.prompts, encoding="utf-8").read())
    model = Model(lib, ffi, args.model, args.threads, args.vocab_only, args.n_ctx)
    try:
        add_bos = lib.llama_vocab_get_add_bos(model.vocab)
        out = {"llama_cpp": build, "model": {
            "path": args.model, "n_vocab": model.n_vocab, "add_bos": bool(add_bos),
            "architecture": model.meta("general.architecture"), "file_type": model.meta("general.file_type"),
            "tokenizer_pre": model.meta("tokenizer.ggml.pre"), "has_chat_template": model.chat_template() is not None,
            "eos": lib.llama_vocab_eos(model.vocab)}, "results": []}
        for item in prompts:
            if isinstance(item, dict) and "labels" in item:
                out["results"].append({"ids": item["ids"], **model.score(item["ids"], item["labels"])})
                continue
            if isinstance(item, dict):
                text, source = model.render(item["messages"]), "llama_chat_apply_template"
            else:
                text, source = item, "given"
            result = {"text": text, "rendered_by": source, "ids": model.tokenize(text, add_special=bool(add_bos))}
            if not args.vocab_only:
                done = model.generate(result["ids"], args.max_tokens, args.all_logits)
                result.update({k: done[k] for k in ("reply_ids", "reply", "finish_reason")})
                result["first_logits_top"] = top(done["first_logits"], args.top_k)
                if args.all_logits:
                    result["first_logits"], result["prompt_logits"] = done["first_logits"], done["prompt_logits"]
            out["results"].append(result)
    finally:
        model.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="the GGUF file")
    parser.add_argument("prompts", nargs="?", help="JSON list: rendered prompt strings or {'messages': [...]}")
    parser.add_argument("--max_tokens", type=int, default=40, help="greedy tokens at most per prompt (0: none)")
    parser.add_argument("--top_k", type=int, default=20, help="largest first-position logits to print")
    parser.add_argument("--all_logits", action="store_true", help="every logit of every prompt position too")
    parser.add_argument("--threads", type=int, default=1,
                        help="llama.cpp's threads (their workers spin while they wait for each other: on busy shared "
                             "cores 2 threads ran tunewise-tiny 170x slower than 1)")
    parser.add_argument("--n_ctx", type=int, default=1024)
    parser.add_argument("--vocab_only", action="store_true", help="load the tokenizer alone: token ids only")
    parser.add_argument("--version", action="store_true", help="print llama.cpp's build and exit")
    args = parser.parse_args(argv)
    if not args.version and not (args.model and args.prompts):
        parser.error("give MODEL.gguf and PROMPTS.json (or --version)")
    try:
        out = run(args)
    except (LlamaCppError, OSError, ValueError, KeyError) as e:
        print(f"llamacpp_run: {e}", file=sys.stderr)
        return 2
    json.dump(out, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
