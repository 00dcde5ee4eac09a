/* steps — a test agent that makes several LLM steps and prints each answer.
 *
 *   steps [N [PAUSE_MS [TAG [OPTIONS]]]]
 *                                N steps (default 6), PAUSE_MS milliseconds between them (default 300);
 *                                TAG starts the first prompt, so agents with different tags share no
 *                                prompt prefix (a node reuses the KV of a finished agent's prefix,
 *                                which may change near-tie answers of the tiny test models);
 *                                OPTIONS are more mesh_llm_options (e.g. "deadline=0.01")
 *
 * Used by the handoff crash tests and the chaos runner: it is slow enough to be
 * caught mid-run by a migration, and its output (greedy answers of the node's
 * model) is the same wherever each step ran, so a disturbed run can be compared
 * with an undisturbed one. Every step may run anywhere (privacy=any). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "meshagent.h"

static size_t printable(char *s) {
    size_t n = 0;
    for (char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        s[n++] = (c >= 32 && c < 127) ? (char)c : ' ';
    }
    s[n] = 0;
    return n;
}

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 6;
    int pause_ms = argc > 2 ? atoi(argv[2]) : 300;
    const char *tag = argc > 3 ? argv[3] : "";
    static char prompt[512], answer[1024];
    const char *opts = "privacy=any;max_tokens=12";
    mesh_llm_options(opts, (int32_t)strlen(opts));
    if (argc > 4 && mesh_llm_options(argv[4], (int32_t)strlen(argv[4])) != 0) {
        fprintf(stderr, "steps: invalid options %s\n", argv[4]);
        return 2;
    }
    for (int i = 0; i < steps; i++) {
        snprintf(prompt, sizeof prompt, "%s%sStep %d of %d of a careful plan:", tag, *tag ? " " : "", i + 1, steps);
        int n = mesh_llm(prompt, (int32_t)strlen(prompt), answer, sizeof answer - 1);
        if (n < 0) n = 0;
        answer[n] = 0;
        printable(answer);
        printf("step %d: %s\n", i + 1, answer);
        fflush(stdout);
        if (pause_ms > 0) usleep((useconds_t)pause_ms * 1000);
    }
    printf("done after %d steps\n", steps);
    return 0;
}
