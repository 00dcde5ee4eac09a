"""retry — the Python version of retry.c: ask, check, roll back to retry when it fails.

    meshagent build retry.py -o retry.wasm && meshagent run retry.wasm --local

``checkpoint`` returns 0 the first time and k after the k-th rollback, like setjmp:
the retry count is the only thing that survives a rollback, so each attempt can change
its prompt. Output printed by a failed attempt is rolled back with it.
"""

import re

import meshagent_agent as mesh

MAX_RETRIES = 3


def check(answer: str) -> bool:
    """The step must produce exactly the integer 42 (digits, optional spaces and a full stop)."""
    return re.fullmatch(r"\s*42[\s.]*", answer) is not None


def main() -> int:
    print("retry agent: checking answers")
    attempt = mesh.checkpoint("attempt")
    print(f"attempt {attempt}")
    answer = mesh.llm(f"What is six times seven? Answer with digits only. (attempt {attempt})")
    if not check(answer):
        mesh.log(f"attempt {attempt} failed the check: {answer}", level="warning")
        if attempt < MAX_RETRIES:
            mesh.rollback("attempt")
        print(f"gave up after {attempt + 1} attempts; last answer: {answer}")
        return 1
    print(f"answer {answer} accepted after {attempt} rollback(s)")
    return 0
