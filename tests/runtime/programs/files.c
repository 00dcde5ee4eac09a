/* Reads every file of the virtual directory (with seeks), prints sizes and checksums. */
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static void visit(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) { printf("cannot open %s\n", dir); return; }
    char names[64][128];
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) && count < 64)
        if (e->d_name[0] != '.') snprintf(names[count++], 128, "%s", e->d_name);
    closedir(d);
    for (int i = 0; i < count; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        struct stat st;
        if (stat(path, &st) != 0) { printf("stat failed %s\n", path); continue; }
        if (S_ISDIR(st.st_mode)) { printf("dir %s\n", path); visit(path); continue; }
        FILE *f = fopen(path, "rb");
        unsigned long h = 5381; int c; long n = 0;
        while ((c = fgetc(f)) != EOF) { h = h * 33 + (unsigned)c; n++; }
        fseek(f, 0, SEEK_SET);
        char first[16] = {0};
        fread(first, 1, 8, f);
        fseek(f, -1, SEEK_END);
        int last = fgetc(f);
        fclose(f);
        printf("file %s size=%ld stat=%lld hash=%lu first=%s last=%d\n", path, n, (long long)st.st_size, h, first, last);
    }
}

int main(void) {
    visit(".");
    FILE *f = fopen("missing.txt", "r");
    printf("missing: %s\n", f ? "found" : "not found");
    f = fopen("new.txt", "w");
    printf("write: %s\n", f ? "allowed" : "refused");
    f = fopen("../../etc/passwd", "r");
    printf("escape: %s\n", f ? "allowed" : "refused");
    return 0;
}
