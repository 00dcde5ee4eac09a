/* retry — asks the LLM, checks the answer, and rolls back to retry when it fails.
 *
 *   meshagent run retry.wasm --local
 *
 * mesh_checkpoint returns 0 the first time and k after the k-th rollback, like
 * setjmp: the retry count is the only thing that survives the rollback, so each
 * attempt can change its prompt. Output written by a failed attempt is rolled back
 * with it; the node's operator log keeps a trace of the failed attempts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "meshagent.h"

#define MAX_RETRIES 3

static int check(const char *answer) {
    /* The step must produce exactly the integer 42 (digits only, optional whitespace). */
    while (*answer == ' ' || *answer == '\n') answer++;
    char *end;
    long v = strtol(answer, &end, 10);
    while (*end == ' ' || *end == '\n' || *end == '.') end++;
    return end != answer && *end == 0 && v == 42;
}

int main(void) {
    printf("retry agent: checking answers\n");
    int attempt = mesh_checkpoint("attempt");
    printf("attempt %d\n", attempt);

    char prompt[256], answer[512];
    int len = snprintf(prompt, sizeof prompt,
                       "What is six times seven? Answer with digits only. (attempt %d)", attempt);
    int n = mesh_llm(prompt, len, answer, sizeof answer - 1);
    if (n < 0) n = 0;
    answer[n] = 0;

    if (!check(answer)) {
        char line[600];
        int l = snprintf(line, sizeof line, "attempt %d failed the check: %s", attempt, answer);
        mesh_log(2, line, l);
        if (attempt < MAX_RETRIES) mesh_rollback("attempt");
        printf("gave up after %d attempts; last answer: %s\n", attempt + 1, answer);
        return 1;
    }
    printf("answer %s accepted after %d rollback(s)\n", answer, attempt);
    return 0;
}
