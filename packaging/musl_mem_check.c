/* Compares packaging/musl_mem.c with the C library's memcpy, memmove, memcmp and bcmp at
 * every length up to MAX bytes, at every alignment and overlap in reach of a block:
 * results, and every byte around the destination. Exits 1 on the first difference.
 *
 *   cc -O2 -fno-builtin -o check packaging/musl_mem_check.c && ./check
 */
#define MEM(name) tf_##name
#include "musl_mem.c"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX = 600, SPAN = 80, SIZE = 2 * SPAN + 2 * MAX + 64 };

static unsigned char ours[SIZE], theirs[SIZE], original[SIZE];

static void fill(unsigned char *buffer, size_t size, unsigned seed)
{
	for (size_t i = 0; i < size; i++) {
		seed = seed * 1103515245 + 12345;
		buffer[i] = seed >> 16;
	}
}

static int fail(const char *what, size_t n, long a, long b)
{
	fprintf(stderr, "musl_mem_check: %s differs from the C library's at n=%zu (%ld, %ld)\n", what, n, a, b);
	return 1;
}

static int sign(int x)
{
	return (x > 0) - (x < 0);
}

/* Within one buffer, so that source and destination overlap in both directions. */
static int check_copies(void)
{
	fill(original, SIZE, 1);
	for (size_t n = 0; n <= MAX; n++)
		for (size_t from = SPAN; from < SPAN + 16; from++)
			for (size_t to = from - SPAN; to <= from + SPAN; to++) {
				memcpy(ours, original, SIZE);
				memcpy(theirs, original, SIZE);
				int apart = to + n <= from || from + n <= to;
				if (apart) {
					if (tf_memcpy(ours + to, ours + from, n) != ours + to)
						return fail("memcpy's result", n, from, to);
					memcpy(theirs + to, theirs + from, n);
					if (memcmp(ours, theirs, SIZE))
						return fail("memcpy", n, from, to);
					memcpy(ours, original, SIZE);
					memcpy(theirs, original, SIZE);
				}
				if (tf_memmove(ours + to, ours + from, n) != ours + to)
					return fail("memmove's result", n, from, to);
				memmove(theirs + to, theirs + from, n);
				if (memcmp(ours, theirs, SIZE))
					return fail("memmove", n, from, to);
			}
	return 0;
}

/* Equal buffers, then one byte changed at each place, up and down (0x00, 0x7f, 0x80, 0xff
 * among the values: memcmp compares unsigned bytes). */
static int check_compares(void)
{
	static const unsigned char values[] = {0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff};
	unsigned char *l = ours, *r = theirs;
	for (size_t n = 0; n <= MAX; n++)
		for (size_t la = 0; la < 16; la++)
			for (size_t ra = 0; ra < 16; ra += 5) {
				fill(l + la, n, (unsigned)n);
				fill(r + ra, n, (unsigned)n);
				if (tf_memcmp(l + la, r + ra, n) || tf_bcmp(l + la, r + ra, n))
					return fail("memcmp of equal bytes", n, la, ra);
				for (size_t at = 0; at < n; at++) {
					unsigned char kept = r[ra + at];
					for (size_t v = 0; v < sizeof values; v++) {
						r[ra + at] = values[v];
						int want = sign(memcmp(l + la, r + ra, n));
						int got = sign(tf_memcmp(l + la, r + ra, n));
						if (got != want)
							return fail("memcmp", n, at, values[v]);
						if (!tf_bcmp(l + la, r + ra, n) != !want)
							return fail("bcmp", n, at, values[v]);
					}
					r[ra + at] = kept;
				}
			}
	return 0;
}

int main(void)
{
	if (check_copies() || check_compares())
		return 1;
	printf("musl_mem_check: memcpy, memmove, memcmp and bcmp agree with the C library's up to %d bytes\n", MAX);
	return 0;
}
