/* ccheck — a small C source checker, as a WASI tool for meshagent agents.
 *
 *   ccheck [PATH...]        (default PATH: "."; directories: every .c and .h file)
 *
 * Reports, as "PATH:LINE: error|warning: MESSAGE":
 *   errors    unbalanced (), [] or {}; an unterminated comment, string or character
 *   warnings  gets/strcpy/strcat/sprintf (unbounded writes), lines over 100 columns,
 *             trailing whitespace, no newline at the end of the file, TODO/FIXME
 * Comments, strings and character literals are skipped when counting brackets.
 * Last line: "checked FILES file(s): ERRORS error(s), WARNINGS warning(s)".
 * Exit status: 1 if there was an error, else 0; 2 if a path could not be read. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_SOURCE (1 << 20)

static int files = 0, n_errors = 0, n_warnings = 0, unreadable = 0;

static void report(const char *path, int line, const char *kind, const char *msg) {
    printf("%s:%d: %s: %s\n", path, line, kind, msg);
    if (kind[0] == 'e') n_errors++; else n_warnings++;
}

static int ident_char(char c) { return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

static void check_calls(const char *path, int line, const char *text) {
    static const char *unsafe[] = {"gets", "strcpy", "strcat", "sprintf", 0};
    for (int i = 0; unsafe[i]; i++) {
        size_t n = strlen(unsafe[i]);
        for (const char *p = strstr(text, unsafe[i]); p; p = strstr(p + 1, unsafe[i])) {
            if ((p > text && ident_char(p[-1])) || ident_char(p[n])) continue;
            const char *q = p + n;
            while (*q == ' ') q++;
            if (*q != '(') continue;
            char msg[128];
            snprintf(msg, sizeof msg, "%s() can overflow its buffer; use a bounded variant", unsafe[i]);
            report(path, line, "warning", msg);
        }
    }
}

static void check_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "ccheck: cannot open %s\n", path); unreadable++; return; }
    char *src = malloc(MAX_SOURCE + 1);
    size_t n = fread(src, 1, MAX_SOURCE, f);
    fclose(f);
    src[n] = 0;
    files++;

    char stack[256];
    int stack_line[256], depth = 0, line = 1;
    enum { CODE, LINE_COMMENT, BLOCK_COMMENT, STRING, CHAR } state = CODE;
    int start_line = 0;
    const char *line_start = src;
    for (size_t i = 0; i <= n; i++) {
        char c = src[i];
        if (c == '\n' || c == 0) {
            size_t len = (size_t)(src + i - line_start);
            char text[512];
            snprintf(text, sizeof text, "%.*s", (int)(len < 511 ? len : 511), line_start);
            if (len > 100) report(path, line, "warning", "line longer than 100 columns");
            if (len && (line_start[len - 1] == ' ' || line_start[len - 1] == '\t')) report(path, line, "warning", "trailing whitespace");
            if (strstr(text, "TODO") || strstr(text, "FIXME")) report(path, line, "warning", "unfinished work (TODO/FIXME)");
            if (state == CODE || state == LINE_COMMENT) check_calls(path, line, text);
            if (c == 0) break;
            if (state == LINE_COMMENT) state = CODE;
            if (state == STRING || state == CHAR) {
                if (i == 0 || src[i - 1] != '\\') {
                    report(path, line, "error", state == STRING ? "unterminated string" : "unterminated character literal");
                    state = CODE;
                }
            }
            line++;
            line_start = src + i + 1;
            continue;
        }
        switch (state) {
        case CODE:
            if (c == '/' && src[i + 1] == '/') { state = LINE_COMMENT; i++; }
            else if (c == '/' && src[i + 1] == '*') { state = BLOCK_COMMENT; start_line = line; i++; }
            else if (c == '"') { state = STRING; }
            else if (c == '\'') { state = CHAR; }
            else if (c == '(' || c == '[' || c == '{') {
                if (depth < 256) { stack[depth] = c; stack_line[depth] = line; }
                depth++;
            } else if (c == ')' || c == ']' || c == '}') {
                char want = c == ')' ? '(' : c == ']' ? '[' : '{';
                if (depth == 0) { report(path, line, "error", "closing bracket without an opening one"); }
                else {
                    depth--;
                    if (depth < 256 && stack[depth] != want) {
                        char msg[96];
                        snprintf(msg, sizeof msg, "'%c' closes '%c' opened on line %d", c, stack[depth], stack_line[depth]);
                        report(path, line, "error", msg);
                    }
                }
            }
            break;
        case BLOCK_COMMENT:
            if (c == '*' && src[i + 1] == '/') { state = CODE; i++; }
            break;
        case STRING:
        case CHAR:
            if (c == '\\' && src[i + 1] && src[i + 1] != '\n') i++;
            else if ((state == STRING && c == '"') || (state == CHAR && c == '\'')) state = CODE;
            break;
        case LINE_COMMENT:
            break;
        }
    }
    if (state == BLOCK_COMMENT) report(path, start_line, "error", "unterminated comment");
    for (int d = depth < 256 ? depth : 256; d > 0; d--) {
        char msg[64];
        snprintf(msg, sizeof msg, "'%c' is never closed", stack[d - 1]);
        report(path, stack_line[d - 1], "error", msg);
    }
    if (n > 0 && src[n - 1] != '\n') report(path, line - 1 > 0 ? line - 1 : 1, "warning", "no newline at end of file");
    free(src);
}

static int is_c(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && (strcmp(dot, ".c") == 0 || strcmp(dot, ".h") == 0);
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void walk(const char *path, int explicit) {
    struct stat st;
    if (stat(path, &st) != 0) { fprintf(stderr, "ccheck: no such file: %s\n", path); unreadable++; return; }
    if (!S_ISDIR(st.st_mode)) { if (explicit || is_c(path)) check_file(path); return; }
    DIR *d = opendir(path);
    if (!d) { unreadable++; return; }
    char *names[1024];
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) && count < 1024) {
        if (e->d_name[0] == '.') continue;
        names[count++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, count, sizeof names[0], by_name);
    for (int i = 0; i < count; i++) {
        char child[2048];
        if (strcmp(path, ".") == 0) snprintf(child, sizeof child, "%s", names[i]);
        else snprintf(child, sizeof child, "%s/%s", path, names[i]);
        walk(child, 0);
        free(names[i]);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) walk(".", 0);
    for (int i = 1; i < argc; i++) walk(argv[i], 1);
    printf("checked %d file(s): %d error(s), %d warning(s)\n", files, n_errors, n_warnings);
    if (unreadable) return 2;
    return n_errors ? 1 : 0;
}
