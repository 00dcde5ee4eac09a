/* lines — count lines, words and bytes of files, optionally only lines matching a regex.
 *
 *   lines [-e REGEX] [-i] [-v] [-m] [PATH...]        (default PATH: ".")
 *
 * A WASI tool for meshagent agents (see meshagent.runtime.tools): it runs in its own
 * sandbox with the agent's virtual directory mounted as "/" and "."; directories are
 * walked recursively in sorted order. Output, one line per file:
 *
 *   LINES WORDS BYTES PATH
 *
 * then "total LINES WORDS BYTES FILES". With -e only lines matching the POSIX extended
 * regular expression count (-i: ignore case, -v: invert); -m also prints each counted
 * line as "PATH:N:TEXT". Exit status: 0 if a line was counted, 1 if none, 2 on error. */
#include <dirent.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static regex_t re;
static int use_re = 0, invert = 0, print_matches = 0;
static long total_lines = 0, total_words = 0, total_bytes = 0, total_files = 0;
static int errors = 0;

static int counted(const char *line) {
    if (!use_re) return 1;
    int hit = regexec(&re, line, 0, NULL, 0) == 0;
    return invert ? !hit : hit;
}

static long words_in(const char *s) {
    long n = 0;
    int in = 0;
    for (; *s; s++) {
        int space = *s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f' || *s == '\v';
        if (!space && !in) n++;
        in = !space;
    }
    return n;
}

static void count_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "lines: cannot open %s\n", path); errors++; return; }
    static char line[65536];
    long lines = 0, words = 0, bytes = 0, number = 0;
    while (fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        number++;
        if (!counted(line)) continue;
        lines++;
        words += words_in(line);
        bytes += (long)len;
        if (print_matches) {
            if (len && line[len - 1] == '\n') line[len - 1] = 0;
            printf("%s:%ld:%s\n", path, number, line);
        }
    }
    fclose(f);
    printf("%ld %ld %ld %s\n", lines, words, bytes, path);
    total_lines += lines; total_words += words; total_bytes += bytes; total_files++;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void walk(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) { fprintf(stderr, "lines: no such file: %s\n", path); errors++; return; }
    if (!S_ISDIR(st.st_mode)) { count_file(path); return; }
    DIR *d = opendir(path);
    if (!d) { fprintf(stderr, "lines: cannot list %s\n", path); errors++; return; }
    char *names[1024];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 1024) {
        if (e->d_name[0] == '.') continue;
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof names[0], by_name);
    for (int i = 0; i < n; i++) {
        char child[2048];
        if (strcmp(path, ".") == 0) snprintf(child, sizeof child, "%s", names[i]);
        else snprintf(child, sizeof child, "%s/%s", path, names[i]);
        walk(child);
        free(names[i]);
    }
}

int main(int argc, char **argv) {
    const char *pattern = NULL;
    int flags = REG_EXTENDED | REG_NOSUB, first = argc;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-e") == 0 && i + 1 < argc) pattern = argv[++i];
        else if (strcmp(argv[i], "-i") == 0) flags |= REG_ICASE;
        else if (strcmp(argv[i], "-v") == 0) invert = 1;
        else if (strcmp(argv[i], "-m") == 0) print_matches = 1;
        else if (strcmp(argv[i], "--") == 0) { first = i + 1; break; }
        else if (argv[i][0] == '-') { fprintf(stderr, "lines: unknown option %s\n", argv[i]); return 2; }
        else { first = i; break; }
    }
    if (pattern) {
        int rc = regcomp(&re, pattern, flags);
        if (rc != 0) {
            char msg[256];
            regerror(rc, &re, msg, sizeof msg);
            fprintf(stderr, "lines: bad regex %s: %s\n", pattern, msg);
            return 2;
        }
        use_re = 1;
    }
    if (first >= argc) walk(".");
    for (int i = first; i < argc; i++) walk(argv[i]);
    printf("total %ld %ld %ld %ld\n", total_lines, total_words, total_bytes, total_files);
    if (errors) return 2;
    return total_lines > 0 ? 0 : 1;
}
