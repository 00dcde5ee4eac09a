"""brainstorm — the Python version of brainstorm.c: fork into three branches, keep the best idea.

    meshagent build brainstorm.py -o brainstorm.wasm
    meshagent run brainstorm.wasm --local -- "a name for a hiking club"

Map-reduce over forks: each child continues the parent's conversation with its own
seed and prints one idea; the parent joins the children's outputs, asks the LLM to
rate each one, and prints the best.
"""

import sys

import meshagent_agent as mesh

BRANCHES = 3


def score_of(text: str) -> int:
    return next((int(c) for c in text if c.isdigit()), 0)


def main() -> int:
    topic = sys.argv[1] if len(sys.argv) > 1 else "a product idea for an edge AI mesh"
    branch = mesh.fork(BRANCHES)
    if branch >= 0:
        # A child: its own seed and some temperature, one idea on stdout.
        mesh.options(model="size>=small", temperature=0.9, seed=branch + 1, max_tokens=48)
        idea = mesh.llm(f"Brainstorm idea {branch + 1} about: {topic}. One line.")
        print(idea.replace("\n", " "))
        return 0
    best, best_score = "", -1
    for i in range(BRANCHES):
        idea = mesh.join(i).rstrip("\n")
        score = score_of(mesh.llm(f"Rate this idea about {topic} from 0 to 9, answer with one digit: {idea}"))
        print(f"idea {i + 1} (score {score}): {idea}")
        if score > best_score:
            best, best_score = idea, score
    print(f"best: {best}")
    return 0
