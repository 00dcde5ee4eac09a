/* Forks three children that compute differently; the parent joins their outputs. */
#include <stdio.h>
#include <string.h>
#include "meshagent.h"

int main(void) {
    printf("before fork\n");
    fflush(stdout);
    int i = mesh_fork(3);
    if (i >= 0) {
        unsigned long acc = (unsigned long)i + 1;
        for (int k = 0; k < 100000; k++) acc = acc * 6364136223846793005ul + 1442695040888963407ul;
        char answer[128];
        char prompt[64];
        int l = snprintf(prompt, sizeof prompt, "child %d asks", i);
        int n = mesh_llm(prompt, l, answer, sizeof answer - 1);
        answer[n > 0 ? n : 0] = 0;
        printf("child %d acc=%lu llm=%s\n", i, acc, answer);
        return 0;
    }
    printf("parent continues\n");
    for (int k = 0; k < 3; k++) {
        char out[512];
        int n = mesh_join(k, out, 4);  /* too small on purpose: -(needed) */
        if (n < 0) n = mesh_join(k, out, sizeof out - 1);
        out[n] = 0;
        printf("joined %d (%d bytes):\n%s", k, n, out);
    }
    return 0;
}
