// In C because Swift cannot choose AVX2 at run time: the same binary uses it where the CPU has it and SSE2
// (every x86-64 CPU) elsewhere. Other architectures take the octet-by-octet path in Swift.
#include "pop3scan.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <stdint.h>

__attribute__((target("avx2,popcnt"))) static size_t plain_avx2(
    const unsigned char *p, size_t i, size_t count, size_t *lines) {
    const __m256i lf = _mm256_set1_epi8('\n'), cr = _mm256_set1_epi8('\r'), dot = _mm256_set1_epi8('.');
    size_t found = 0;
    while (i + 32 < count) {
        __m256i here = _mm256_loadu_si256((const __m256i *)(p + i));
        uint32_t ends = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(here, lf));
        if (ends) {
            __m256i before = _mm256_loadu_si256((const __m256i *)(p + i - 1));
            __m256i after = _mm256_loadu_si256((const __m256i *)(p + i + 1));
            uint32_t crs = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(before, cr));
            uint32_t dots = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(after, dot));
            if (ends & (~crs | dots)) break;
            found += (size_t)__builtin_popcount(ends);
        }
        i += 32;
    }
    *lines += found;
    return i;
}

static size_t plain_sse2(const unsigned char *p, size_t i, size_t count, size_t *lines) {
    const __m128i lf = _mm_set1_epi8('\n'), cr = _mm_set1_epi8('\r'), dot = _mm_set1_epi8('.');
    size_t found = 0;
    while (i + 16 < count) {
        __m128i here = _mm_loadu_si128((const __m128i *)(p + i));
        unsigned ends = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(here, lf));
        if (ends) {
            __m128i before = _mm_loadu_si128((const __m128i *)(p + i - 1));
            __m128i after = _mm_loadu_si128((const __m128i *)(p + i + 1));
            unsigned crs = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(before, cr));
            unsigned dots = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(after, dot));
            if (ends & (~crs | dots)) break;
            found += (size_t)__builtin_popcount(ends);
        }
        i += 16;
    }
    *lines += found;
    return i;
}

size_t pop3_plain_lines_using(int path, const unsigned char *base, size_t start, size_t count, size_t *lines) {
    if (start == 0) return start;
    if (path == 2 && __builtin_cpu_supports("avx2")) return plain_avx2(base, start, count, lines);
    if (path >= 1) return plain_sse2(base, start, count, lines);
    return start;
}

size_t pop3_plain_lines(const unsigned char *base, size_t start, size_t count, size_t *lines) {
    return pop3_plain_lines_using(2, base, start, count, lines);
}

#else

size_t pop3_plain_lines_using(int path, const unsigned char *base, size_t start, size_t count, size_t *lines) {
    (void)path;
    (void)base;
    (void)count;
    (void)lines;
    return start;
}

size_t pop3_plain_lines(const unsigned char *base, size_t start, size_t count, size_t *lines) {
    return pop3_plain_lines_using(0, base, start, count, lines);
}

#endif
