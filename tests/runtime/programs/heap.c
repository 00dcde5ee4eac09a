/* Heap-heavy: builds and rewrites a large tree of nodes, logging progress via host calls. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "meshagent.h"

typedef struct node { struct node *next; uint32_t len; uint8_t data[]; } node;

int main(void) {
    uint32_t x = 12345;
    node *head = 0;
    uint64_t sum = 0;
    for (int round = 0; round < 6; round++) {
        for (int i = 0; i < 4000; i++) {
            x = x * 1103515245u + 12345u;
            uint32_t len = 16 + (x >> 16) % 2048;
            node *n = malloc(sizeof(node) + len);
            n->len = len;
            memset(n->data, (int)(x & 0xff), len);
            n->next = head;
            head = n;
        }
        /* free every other node */
        node **pp = &head;
        int k = 0;
        while (*pp) {
            if (k++ % 2) { node *dead = *pp; *pp = dead->next; free(dead); }
            else pp = &(*pp)->next;
        }
        for (node *n = head; n; n = n->next) sum = sum * 31 + n->data[n->len - 1] + n->len;
        char line[64];
        int l = snprintf(line, sizeof line, "round %d", round);
        mesh_log(0, line, l);
        printf("round %d checksum %llu\n", round, (unsigned long long)sum);
    }
    return 0;
}
