/* code_review — reviews the code base in the agent's virtual directory, using tools.
 *
 *   meshagent run code_review.wasm --local --dir ./my-project
 *
 * 1. lists the tree (tool fs.list) and searches it for risky spots (fs.search:
 *    TODO/FIXME, unbounded string calls);
 * 2. for each source file: reads it (fs.read), runs the C checker on C files (the
 *    WASI tool ccheck, declared in code_review.tools.toml and carried with the agent),
 *    and asks the LLM for the most important improvement, giving it the file, the
 *    checker's findings and the search hits;
 * 3. writes everything to REVIEW.md in its directory (fs.write) and prints it.
 *
 * Every tool result is journaled: when the agent moves or is replayed, no tool runs
 * twice. Every LLM step is private: the code never leaves the owner's devices. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "meshagent.h"

#define MAX_FILE 8192
#define MAX_ANSWER 4096
#define MAX_FILES 64

static char review[65536];
static size_t review_len = 0;
static int reviewed = 0;

static void emit(const char *fmt, const char *a, const char *b) {
    int n = snprintf(review + review_len, sizeof review - review_len, fmt, a, b);
    if (n > 0) review_len += (size_t)n < sizeof review - review_len ? (size_t)n : sizeof review - review_len - 1;
}

/* Call a tool; returns a malloc'd NUL-terminated answer (the -(bytes needed) protocol handled). */
static char *tool(const char *name, const char *args) {
    size_t cap = 16384;
    char *out = malloc(cap + 1);
    int n = mesh_tool(name, args, (int32_t)strlen(args), out, (int32_t)cap);
    if (n < 0) { /* a bigger answer: ask again with room for it (the tool does not run again) */
        out = realloc(out, (size_t)-n + 1);
        n = mesh_tool(name, args, (int32_t)strlen(args), out, -n);
    }
    out[n > 0 ? n : 0] = 0;
    return out;
}

/* The JSON string value after "key": in json (first occurrence after from), unescaped into out. */
static const char *json_string(const char *json, const char *key, char *out, size_t cap) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
    const char *p = strstr(json, pattern);
    size_t n = 0;
    if (!p) { if (cap) out[0] = 0; return NULL; }
    for (p += strlen(pattern); *p && *p != '"'; p++) {
        char c = *p;
        if (c == '\\' && p[1]) {
            p++;
            switch (*p) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'u': c = '?'; p += 4; break;
            default: c = *p;
            }
        }
        if (n + 1 < cap) out[n++] = c;
    }
    out[n] = 0;
    return p;
}

/* JSON-escape s into out. */
static void json_escape(const char *s, char *out, size_t cap) {
    size_t n = 0;
    for (; *s && n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { out[n++] = '\\'; out[n++] = (char)c; }
        else if (c == '\n') { out[n++] = '\\'; out[n++] = 'n'; }
        else if (c < 32) n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
        else out[n++] = (char)c;
    }
    out[n] = 0;
}

static int wanted(const char *path) {
    static const char *exts[] = {".c", ".h", ".py", ".rs", ".go", ".js", ".ts", ".md", ".txt", 0};
    const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    const char *dot = strrchr(name, '.');
    if (name[0] == '.' || !dot || strcmp(path, "REVIEW.md") == 0) return 0;
    for (int i = 0; exts[i]; i++)
        if (strcmp(dot, exts[i]) == 0) return 1;
    return 0;
}

static int is_c(const char *path) {
    const char *dot = strrchr(path, '.');
    return dot && (strcmp(dot, ".c") == 0 || strcmp(dot, ".h") == 0);
}

static void review_file(const char *path, const char *hits) {
    static char args[1024], content[MAX_FILE + 1], findings[2048], prompt[MAX_FILE + 4096];
    char quoted[600];
    json_escape(path, quoted, sizeof quoted);
    snprintf(args, sizeof args, "{\"path\":\"%s\",\"start\":1,\"end\":400}", quoted);
    char *read = tool("fs.read", args);
    json_string(read, "text", content, sizeof content);
    int truncated = strstr(read, "\"truncated\":true") != NULL || strlen(content) >= MAX_FILE;
    free(read);

    findings[0] = 0;
    if (is_c(path)) {
        snprintf(args, sizeof args, "{\"args\":[\"%s\"]}", quoted);
        char *checked = tool("ccheck", args);
        json_string(checked, "stdout", findings, sizeof findings);
        if (!findings[0]) json_string(checked, "error", findings, sizeof findings);
        free(checked);
        size_t fl = strlen(findings);
        if (fl && findings[fl - 1] != '\n' && fl + 1 < sizeof findings) strcpy(findings + fl, "\n");
    }

    char file_hits[1024] = "";
    size_t fh = 0;
    for (const char *line = hits; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (strncmp(line, path, strlen(path)) == 0 && line[strlen(path)] == ':' && fh + len + 2 < sizeof file_hits) {
            memcpy(file_hits + fh, line, len);
            fh += len;
            file_hits[fh++] = '\n';
            file_hits[fh] = 0;
        }
        line = end ? end + 1 : NULL;
    }

    int plen = snprintf(prompt, sizeof prompt,
                        "You are a careful code reviewer. File %s (%zu bytes%s):\n%s\n%s%s%s%s"
                        "Give the single most important improvement, in one sentence.\n",
                        path, strlen(content), truncated ? ", truncated" : "", content,
                        findings[0] ? "A checker reported:\n" : "", findings,
                        file_hits[0] ? "Risky lines found by search:\n" : "", file_hits);
    if (plen >= (int)sizeof prompt) plen = sizeof prompt - 1;

    static char answer[MAX_ANSWER + 1];
    int got = mesh_llm(prompt, plen, answer, MAX_ANSWER);
    if (got < 0) { /* answer larger than our buffer: take the first part */
        char *big = malloc((size_t)-got + 1);
        got = mesh_llm(prompt, plen, big, -got);
        if (got > MAX_ANSWER) got = MAX_ANSWER;
        memcpy(answer, big, (size_t)got);
        free(big);
    }
    answer[got] = 0;
    emit("## %s\n%s\n\n", path, answer);
    if (findings[0]) emit("checker:\n```\n%s```\n\n", findings, "");
    reviewed++;
}

int main(void) {
    const char *options = "max_tokens=96;temperature=0;privacy=private";
    mesh_llm_options(options, (int32_t)strlen(options));
    mesh_log(1, "code review started", 19);

    char *listing = tool("fs.list", "{}");
    static char hits[8192];
    char *found = tool("fs.search", "{\"pattern\":\"TODO|FIXME|XXX|\\\\b(gets|strcpy|strcat|sprintf)\\\\s*\\\\(\"}");
    size_t hn = 0;
    for (const char *p = found; (p = strstr(p, "{\"line\":")) != NULL; p++) {
        char path[512], text[512];
        int line = atoi(p + 8);
        json_string(p, "path", path, sizeof path);
        json_string(p, "text", text, sizeof text);
        int n = snprintf(hits + hn, sizeof hits - hn, "%s:%d: %s\n", path, line, text);
        if (n < 0 || (size_t)n >= sizeof hits - hn) break;
        hn += (size_t)n;
    }
    free(found);

    static char paths[MAX_FILES][512];
    int count = 0;
    for (const char *p = listing; count < MAX_FILES && (p = json_string(p, "path", paths[count], sizeof paths[0])) != NULL;)
        if (wanted(paths[count])) count++;
    free(listing);
    for (int i = 0; i < count; i++) review_file(paths[i], hits);

    char summary[128];
    snprintf(summary, sizeof summary, "reviewed %d file(s)\n", reviewed);
    emit("%s%s", summary, "");
    static char escaped[sizeof review * 2], args[sizeof review * 2 + 64];
    json_escape(review, escaped, sizeof escaped);
    snprintf(args, sizeof args, "{\"path\":\"REVIEW.md\",\"text\":\"%s\"}", escaped);
    char *written = tool("fs.write", args);
    int ok = strstr(written, "\"ok\":true") != NULL;
    free(written);
    fputs(review, stdout);
    printf("%s\n", ok ? "wrote REVIEW.md" : "could not write REVIEW.md");
    return reviewed > 0 ? 0 : 1;
}
