/* tooluser — calls tools as its arguments say, printing each answer (tests of mesh_tool).
 *
 *   tooluser 'fs.read={"path":"a.c"}' 'cat:a.c' 'put:b.txt:hello' 'llm:prompt' ...
 *
 * NAME=JSON   mesh_tool(NAME, JSON), answer printed on one line (with a small first buffer,
 *             so answers over 64 bytes take the -(bytes needed) path)
 * cat:PATH    print a file read through WASI (sees the tools' writes)
 * put:PATH:T  write T to a file through WASI (fopen "w")
 * llm:PROMPT  one mesh_llm call (a place where a test can suspend the agent)
 * opt:OPTS    mesh_llm_options(OPTS), e.g. opt:model=size>=large
 * cp:LABEL    mesh_checkpoint(LABEL); later "0?" ops run only when it returned 0
 * rb:LABEL    mesh_rollback(LABEL), only when that checkpoint returned 0
 * 0?OP        OP, only before the first rollback */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "meshagent.h"

static void call_tool(const char *spec) {
    const char *eq = strchr(spec, '=');
    char name[128];
    snprintf(name, sizeof name, "%.*s", (int)(eq - spec), spec);
    const char *args = eq + 1;
    char small[64];
    int n = mesh_tool(name, args, (int32_t)strlen(args), small, sizeof small);
    if (n >= 0) { printf("%s -> %.*s\n", name, n, small); return; }
    char *big = malloc(-n);
    int got = mesh_tool(name, args, (int32_t)strlen(args), big, -n);
    printf("%s -> %.*s\n", name, got, big);
    free(big);
}

int main(int argc, char **argv) {
    int round = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "0?", 2) == 0) {
            if (round) continue;
            a += 2;
        }
        if (strncmp(a, "cp:", 3) == 0) {
            round = mesh_checkpoint(a + 3);
            printf("checkpoint %s %d\n", a + 3, round);
        } else if (strncmp(a, "rb:", 3) == 0) {
            if (!round) mesh_rollback(a + 3);
        } else if (strncmp(a, "cat:", 4) == 0) {
            FILE *f = fopen(a + 4, "rb");
            if (!f) { printf("cat %s: missing\n", a + 4); continue; }
            char buf[4096];
            size_t n = fread(buf, 1, sizeof buf, f);
            fclose(f);
            printf("cat %s: %.*s\n", a + 4, (int)n, buf);
        } else if (strncmp(a, "put:", 4) == 0) {
            const char *colon = strchr(a + 4, ':');
            char path[256];
            snprintf(path, sizeof path, "%.*s", (int)(colon - (a + 4)), a + 4);
            FILE *f = fopen(path, "w");
            if (!f) { printf("put %s: failed\n", path); continue; }
            fputs(colon + 1, f);
            fclose(f);
            printf("put %s: ok\n", path);
        } else if (strncmp(a, "opt:", 4) == 0) {
            printf("options %d\n", mesh_llm_options(a + 4, (int32_t)strlen(a + 4)));
        } else if (strncmp(a, "llm:", 4) == 0) {
            char out[256];
            int n = mesh_llm(a + 4, (int32_t)strlen(a + 4), out, sizeof out);
            printf("llm -> %.*s\n", n > 0 ? n : 0, out);
        } else if (strchr(a, '=')) {
            call_tool(a);
        }
        fflush(stdout);
    }
    return 0;
}
