/* summarise — a long-context summariser whose heavy step needs a large model.
 *
 *   meshagent run summarise.wasm --dir ./notes -- notes.txt
 *
 * Step 1 (private): read the document from the agent's directory and extract its
 * key lines with whatever model this device holds — the document never leaves
 * the owner's devices for this step.
 * Step 2 (heavy): summarise the whole document with a large model
 * (model=size>=large). On a phone this step is auctioned: the agent moves,
 * sealed, to the peer that wins (a GPU box), and continues there.
 * Step 3 (private again): turn the summary into a title on the owner's devices:
 * the agent comes back.
 *
 * Without --dir, a built-in text is summarised. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "meshagent.h"

static const char *BUILTIN =
    "Edge devices hold most of the world's idle compute. Phones, laptops and small "
    "boxes sit next to the people who own them, and their data stays private when "
    "it is processed there. Larger models need more memory and faster accelerators "
    "than a phone has, so some steps must run elsewhere. A mesh that moves an agent, "
    "sealed, to the device that fits each step gives both privacy and speed.";

static int ask(const char *prompt, char *out, int cap) {
    int n = mesh_llm(prompt, (int32_t)strlen(prompt), out, cap - 1);
    if (n < 0) {
        char *big = malloc(-n + 1);
        n = mesh_llm(prompt, (int32_t)strlen(prompt), big, -n);
        if (n > cap - 1) n = cap - 1;
        memcpy(out, big, n);
        free(big);
    }
    if (n < 0) n = 0;
    out[n] = 0;
    return n;
}

static void set_options(const char *opts) { mesh_llm_options(opts, (int32_t)strlen(opts)); }

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
    static char doc[16384];
    size_t len = 0;
    if (argc > 1) {
        char path[512];
        snprintf(path, sizeof path, "/%s", argv[1]);
        FILE *f = fopen(path, "r");
        if (!f) { fprintf(stderr, "cannot open %s\n", path); return 2; }
        len = fread(doc, 1, sizeof doc - 1, f);
        fclose(f);
    } else {
        len = strlen(BUILTIN);
        memcpy(doc, BUILTIN, len);
    }
    doc[len] = 0;

    static char prompt[20000], key[1024], summary[2048], title[256];

    set_options("model=size=tiny;privacy=private;max_tokens=24");
    snprintf(prompt, sizeof prompt, "Key points of this document:\n%s\n", doc);
    ask(prompt, key, sizeof key);
    printable(key);
    printf("key points (private, %zu bytes read): %s\n", len, key);

    set_options("model=size>=large;privacy=any;max_tokens=48");
    snprintf(prompt, sizeof prompt, "Summarise in three sentences. Key points: %s\n", key);
    ask(prompt, summary, sizeof summary);
    printable(summary);
    printf("summary (large model): %s\n", summary);

    set_options("model=size=tiny;privacy=private;max_tokens=12");
    snprintf(prompt, sizeof prompt, "A short title for: %s\n", summary);
    ask(prompt, title, sizeof title);
    printable(title);
    printf("title (private): %s\n", title);
    return 0;
}
