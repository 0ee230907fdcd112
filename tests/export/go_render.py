"""Rendering a Go text/template the way Ollama does (template.Execute over .System and .Messages), with Go itself:

- `go_template` (PyPI: go-template, in the dev extra): Go 1.11's text/template compiled into a shared library,
  called in a subprocess because a template error panics and aborts the process;
- `go` (a Go toolchain on PATH, e.g. Debian's golang-go 1.19): a 20-line program run with `go run`.

Both take the values as Ollama builds them (tunewise.export.ollama.ollama_view).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

GO_PROGRAM = r'''package main

import (
	"encoding/json"
	"os"
	"text/template"
)

func main() {
	src, _ := os.ReadFile(os.Args[1])
	tmpl := template.Must(template.New("").Option("missingkey=zero").Parse(string(src)))
	var cases []map[string]any
	data, _ := os.ReadFile(os.Args[2])
	if err := json.Unmarshal(data, &cases); err != nil {
		panic(err)
	}
	var out []string
	for _, values := range cases {
		var b []byte
		w := &buffer{&b}
		if err := tmpl.Execute(w, values); err != nil {
			panic(err)
		}
		out = append(out, string(b))
	}
	enc, _ := json.Marshal(out)
	os.Stdout.Write(enc)
}

type buffer struct{ b *[]byte }

func (w *buffer) Write(p []byte) (int, error) { *w.b = append(*w.b, p...); return len(p), nil }
'''

_GO_TEMPLATE_DRIVER = r'''
import json, sys
import go_template
template, cases, folder = sys.argv[1], json.loads(open(sys.argv[2]).read()), sys.argv[3]
out = []
for i, values in enumerate(cases):
    vals, result = f"{folder}/values-{i}.yml", f"{folder}/out-{i}.txt"
    with open(vals, "w", encoding="utf-8") as f:
        json.dump(values, f, ensure_ascii=False)  # JSON is YAML: the library reads its values as YAML
    go_template.render_template(template, vals, result)
    out.append(open(result, encoding="utf-8").read())
print(json.dumps(out))
'''


def values(system: str, messages: list[dict]) -> dict:
    return {"System": system, "Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages],
            "Response": ""}


def renderers() -> list[str]:
    return ["go_template"] + (["go"] if shutil.which("go") else [])


def render(renderer: str, template: str, cases: list[dict]) -> list[str]:
    """The template's text for each values dict in `cases`, rendered by Go's text/template."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "t.tmpl").write_text(template, encoding="utf-8")
        (folder / "cases.json").write_text(json.dumps(cases, ensure_ascii=False), encoding="utf-8")
        if renderer == "go_template":
            cmd = [sys.executable, "-c", _GO_TEMPLATE_DRIVER, str(folder / "t.tmpl"), str(folder / "cases.json"),
                   str(folder)]
            env = None
        else:
            (folder / "main.go").write_text(GO_PROGRAM)
            cmd = ["go", "run", str(folder / "main.go"), str(folder / "t.tmpl"), str(folder / "cases.json")]
            env = {**os.environ, "GOCACHE": str(folder / "cache"), "GOPATH": str(folder / "gopath"),
                   "GO111MODULE": "off", "GOFLAGS": ""}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"{renderer} failed ({done.returncode}): {done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])
