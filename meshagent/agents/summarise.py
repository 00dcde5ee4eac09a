"""summarise — the Python version of summarise.c: a summariser whose heavy step needs a large model.

    meshagent build summarise.py -o summarise.wasm
    meshagent run summarise.wasm --dir ./notes -- notes.txt

Step 1 (private): read the document (tool fs.read) and extract its key points with
whatever model this device holds. Step 2 (heavy): summarise with a large model
(``model="size>=large"``): on a phone the step is auctioned and the agent moves,
sealed, to the peer that wins, and continues there by replay. Step 3 (private
again): a title, back on the owner's devices. Without a file, a built-in text.
"""

import sys

import meshagent_agent as mesh

BUILTIN = (
    "Edge devices hold most of the world's idle compute. Phones, laptops and small "
    "boxes sit next to the people who own them, and their data stays private when "
    "it is processed there. Larger models need more memory and faster accelerators "
    "than a phone has, so some steps must run elsewhere. A mesh that moves an agent, "
    "sealed, to the device that fits each step gives both privacy and speed."
)


def printable(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else " " for c in text)


def main() -> int:
    if len(sys.argv) > 1:
        try:
            doc = mesh.tool("fs.read", path=sys.argv[1])["text"]
        except mesh.ToolError as exc:
            print(f"cannot open {sys.argv[1]}: {exc}", file=sys.stderr)
            return 2
    else:
        doc = BUILTIN
    mesh.options(model="size=tiny", privacy="private", max_tokens=24)
    key = printable(mesh.llm(f"Key points of this document:\n{doc}\n"))
    print(f"key points (private, {len(doc.encode())} bytes read): {key}")

    mesh.options(model="size>=large", privacy="any", max_tokens=48)
    summary = printable(mesh.llm(f"Summarise in three sentences. Key points: {key}\n"))
    print(f"summary (large model): {summary}")

    mesh.options(model="size=tiny", privacy="private", max_tokens=12)
    title = printable(mesh.llm(f"A short title for: {summary}\n"))
    print(f"title (private): {title}")
    return 0
