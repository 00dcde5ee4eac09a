/* chat — the built-in agent behind a node's OpenAI-compatible API.
 *
 * Each POST /v1/chat/completions runs one chat agent, so the request is placed,
 * sealed and moved like any other agent (privacy classes, auctions, handoffs).
 * The node renders the request's messages into a transcript and puts two files
 * in the agent's virtual directory:
 *
 *   /options.txt   mesh_llm_options text: "model=NAME;max_tokens=N;temperature=T;seed=S;privacy=CLASS"
 *   /prompt.txt    the conversation so far, ending with "Assistant:"
 *
 * The agent makes one LLM step with those options and prints the reply, byte for
 * byte, on stdout. Exit codes: 0 ok, 2 missing input, 3 options refused, 4 no reply. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "meshagent.h"

/* Read a whole file of the virtual directory; NULL if it cannot be opened. */
static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
        }
    }
    fclose(f);
    if (!buf) return NULL;
    buf[n] = 0;
    *len = n;
    return buf;
}

int main(void) {
    size_t opts_len = 0, prompt_len = 0;
    char *opts = slurp("/options.txt", &opts_len);
    char *prompt = slurp("/prompt.txt", &prompt_len);
    if (!opts || !prompt) {
        fprintf(stderr, "chat: /options.txt and /prompt.txt are required\n");
        return 2;
    }
    if (mesh_llm_options(opts, (int32_t)opts_len) != 0) {
        fprintf(stderr, "chat: options refused: %s\n", opts);
        return 3;
    }
    int32_t cap = 4096;
    char *out = malloc((size_t)cap);
    int32_t n = mesh_llm(prompt, (int32_t)prompt_len, out, cap);
    if (n < 0) {
        /* Too small: nothing was consumed; ask again with the size the host told. */
        cap = -n;
        out = realloc(out, (size_t)cap);
        n = mesh_llm(prompt, (int32_t)prompt_len, out, cap);
    }
    if (n < 0) {
        fprintf(stderr, "chat: no reply\n");
        return 4;
    }
    fwrite(out, 1, (size_t)n, stdout);
    fflush(stdout);
    return 0;
}
