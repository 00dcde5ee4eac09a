/* brainstorm — forks into three branches that each propose an idea, keeps the best.
 *
 *   meshagent run brainstorm.wasm --local -- "a name for a hiking club"
 *
 * Map-reduce over forks: each child continues the parent's conversation with a
 * different seed and prints one idea; the parent joins the children's outputs, asks
 * the LLM to rate each one, and prints the best. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "meshagent.h"

#define BRANCHES 3

static int ask(const char *prompt, char *out, int cap) {
    int n = mesh_llm(prompt, (int32_t)strlen(prompt), out, cap - 1);
    if (n < 0) { /* too long for our buffer: keep what fits */
        char *big = malloc(-n + 1);
        n = mesh_llm(prompt, (int32_t)strlen(prompt), big, -n);
        if (n > cap - 1) n = cap - 1;
        memcpy(out, big, n);
        free(big);
    }
    out[n] = 0;
    return n;
}

static int score_of(const char *text) {
    for (const char *p = text; *p; p++)
        if (*p >= '0' && *p <= '9') return *p - '0';
    return 0;
}

int main(int argc, char **argv) {
    const char *topic = argc > 1 ? argv[1] : "a product idea for an edge AI mesh";
    char prompt[1024], answer[1024];

    int branch = mesh_fork(BRANCHES);
    if (branch >= 0) {
        /* Child: its own seed and some temperature, one idea on stdout. A branch wants at
         * least a small model: on a phone each branch is auctioned, and since every bid
         * reserves its capacity, the branches spread over the peers. */
        char options[96];
        int len = snprintf(options, sizeof options, "model=size>=small;temperature=0.9;seed=%d;max_tokens=48", branch + 1);
        mesh_llm_options(options, len);
        snprintf(prompt, sizeof prompt, "Brainstorm idea %d about: %s. One line.", branch + 1, topic);
        ask(prompt, answer, sizeof answer);
        for (char *p = answer; *p; p++) if (*p == '\n') *p = ' ';
        printf("%s\n", answer);
        return 0;
    }

    /* Parent: gather, rate, keep the best. */
    char ideas[BRANCHES][1024];
    int best = -1, best_score = -1;
    for (int i = 0; i < BRANCHES; i++) {
        int n = mesh_join(i, ideas[i], sizeof ideas[i] - 1);
        if (n < 0) n = 0;
        ideas[i][n] = 0;
        if (n > 0 && ideas[i][n - 1] == '\n') ideas[i][n - 1] = 0;
        snprintf(prompt, sizeof prompt, "Rate this idea about %s from 0 to 9, answer with one digit: %s", topic, ideas[i]);
        ask(prompt, answer, sizeof answer);
        int s = score_of(answer);
        printf("idea %d (score %d): %s\n", i + 1, s, ideas[i]);
        if (s > best_score) { best_score = s; best = i; }
    }
    printf("best: %s\n", ideas[best]);
    return 0;
}
