"""code_review — the Python version of code_review.c: review a code base with tools and the LLM.

    meshagent build code_review.py -o code_review.wasm
    meshagent run code_review.wasm --local --dir ./my-project

Lists the tree and searches it for risky spots (tools fs.list, fs.search), reads each
source file (fs.read), runs the C checker on C files (the WASI tool ccheck, declared in
code_review.tools.toml like the C version's), asks the LLM for the most important
improvement (a private step: the code never leaves the owner's devices), and writes
REVIEW.md (fs.write). Every tool result is journaled: replay and migration never run a
tool twice.
"""

import meshagent_agent as mesh

SOURCES = (".c", ".h", ".py", ".rs", ".go", ".js", ".ts", ".md", ".txt")
RISKY = r"TODO|FIXME|XXX|\b(gets|strcpy|strcat|sprintf)\s*\("


def wanted(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return not name.startswith(".") and name.endswith(SOURCES) and path != "REVIEW.md"


def main() -> int:
    mesh.options(max_tokens=96, temperature=0, privacy="private")
    mesh.log("code review started")
    files = [f["path"] for f in mesh.tool("fs.list")["files"] if wanted(f["path"])]
    hits: dict[str, list[str]] = {}
    for m in mesh.tool("fs.search", pattern=RISKY)["matches"]:
        hits.setdefault(m["path"], []).append(f'{m["path"]}:{m["line"]}: {m["text"]}')
    sections = []
    for path in files:
        read = mesh.tool("fs.read", path=path, start=1, end=400)
        text = read["text"][:8192]
        prompt = f"You are a careful code reviewer. File {path} ({len(text)} bytes):\n{text}\n"
        findings = ""
        if path.endswith((".c", ".h")):
            checked = mesh.tool("ccheck", args=[path])
            findings = str(checked.get("stdout") or checked.get("error") or "")
            prompt += "A checker reported:\n" + findings
        if hits.get(path):
            prompt += "Risky lines found by search:\n" + "\n".join(hits[path]) + "\n"
        prompt += "Give the single most important improvement, in one sentence.\n"
        section = f"## {path}\n{mesh.llm(prompt)}\n"
        if findings:
            section += f"\nchecker:\n```\n{findings}```\n"
        sections.append(section)
    review = "\n".join(sections) + f"\nreviewed {len(files)} file(s)\n"
    mesh.tool("fs.write", path="REVIEW.md", text=review)
    print(review, end="")
    print("wrote REVIEW.md")
    return 0 if files else 1
