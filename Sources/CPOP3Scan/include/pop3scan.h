#ifndef POP3SCAN_H
#define POP3SCAN_H

#include <stddef.h>

/// The fast path through a message body (RFC 1939 §3): from `start` (inside a line, at least 1), whole
/// blocks in which every LF has a CR before it and no '.' after it. Reads the octet before `start` and the
/// one after each block, so it stops with at least one octet left before `count`. Returns where it stopped
/// (still inside a line) and adds the lines it passed to `*lines`. Returns `start` where no vector unit helps.
size_t pop3_plain_lines(const unsigned char *base, size_t start, size_t count, size_t *lines);

/// The same with one path forced, for tests: 2 AVX2 (where the CPU has it), 1 SSE2, 0 none.
/// Returns `start` when that path is not available here.
size_t pop3_plain_lines_using(int path, const unsigned char *base, size_t start, size_t count, size_t *lines);

/// Asks the CPU to bring `count` octets from `address` into its cache ahead of their use (a capture read from a
/// memory mapping: the next records are fetched while this one is decoded).
static inline void pop3_prefetch(const void *address, size_t count) {
    for (size_t offset = 0; offset < count; offset += 64) __builtin_prefetch((const char *)address + offset);
}

#endif
