/* memcpy, memmove, memcmp and bcmp for the static musl build (x86_64), linked in place of
 * musl's own by build.rs.
 *
 * musl's memcpy is `rep movsq` with a byte loop for each end, its memmove goes through it
 * or copies backwards with the direction flag set, and its memcmp compares a byte at a
 * time. Profiled under load, they took 5-7% of `tf serve`'s CPU time against 3-4% for
 * glibc's vector routines. These use SSE2, which every x86_64 CPU has, and overlapping
 * loads for the ends, so that the short calls, most of them, run no loop at all.
 *
 * packaging/musl_mem_check.c compares them with the C library's at every length up to
 * 600 bytes, alignment and overlap; packaging/check-static.sh runs it.
 */
#include <emmintrin.h>
#include <stddef.h>
#include <stdint.h>

/* The check compiles this file with its own names, beside the C library's. */
#ifndef MEM
#define MEM(name) name
#endif

typedef uint64_t __attribute__((may_alias, aligned(1))) u64u;
typedef uint32_t __attribute__((may_alias, aligned(1))) u32u;
typedef uint16_t __attribute__((may_alias, aligned(1))) u16u;

static inline __m128i load(const unsigned char *p)
{
	return _mm_loadu_si128((const __m128i *)p);
}

static inline void store(unsigned char *p, __m128i v)
{
	_mm_storeu_si128((__m128i *)p, v);
}

/* memcpy and memmove both: every block is loaded whole before it is stored, and the block
 * the loop reaches last in the source is loaded before the loop and stored after it, so
 * overlapping buffers copy correctly in either direction. */
static inline void *move(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;
	if (n <= 16) {
		if (n >= 8) {
			uint64_t a = *(const u64u *)s, b = *(const u64u *)(s + n - 8);
			*(u64u *)d = a;
			*(u64u *)(d + n - 8) = b;
		} else if (n >= 4) {
			uint32_t a = *(const u32u *)s, b = *(const u32u *)(s + n - 4);
			*(u32u *)d = a;
			*(u32u *)(d + n - 4) = b;
		} else if (n >= 2) {
			uint16_t a = *(const u16u *)s, b = *(const u16u *)(s + n - 2);
			*(u16u *)d = a;
			*(u16u *)(d + n - 2) = b;
		} else if (n == 1) {
			*d = *s;
		}
		return dst;
	}
	if (n <= 32) {
		__m128i a = load(s), b = load(s + n - 16);
		store(d, a);
		store(d + n - 16, b);
		return dst;
	}
	if (n <= 64) {
		__m128i a = load(s), b = load(s + 16), c = load(s + n - 32), e = load(s + n - 16);
		store(d, a);
		store(d + 16, b);
		store(d + n - 32, c);
		store(d + n - 16, e);
		return dst;
	}
	if ((uintptr_t)d - (uintptr_t)s >= n) {
		/* Forwards: d is below s, or past its end. */
		__m128i t0 = load(s + n - 64), t1 = load(s + n - 48);
		__m128i t2 = load(s + n - 32), t3 = load(s + n - 16);
		for (size_t i = 0; i < n - 64; i += 64) {
			__m128i a = load(s + i), b = load(s + i + 16);
			__m128i c = load(s + i + 32), e = load(s + i + 48);
			store(d + i, a);
			store(d + i + 16, b);
			store(d + i + 32, c);
			store(d + i + 48, e);
		}
		store(d + n - 64, t0);
		store(d + n - 48, t1);
		store(d + n - 32, t2);
		store(d + n - 16, t3);
	} else {
		/* Backwards: d is above s and overlaps it. */
		__m128i h0 = load(s), h1 = load(s + 16), h2 = load(s + 32), h3 = load(s + 48);
		for (size_t i = n; i > 64; i -= 64) {
			__m128i a = load(s + i - 64), b = load(s + i - 48);
			__m128i c = load(s + i - 32), e = load(s + i - 16);
			store(d + i - 64, a);
			store(d + i - 48, b);
			store(d + i - 32, c);
			store(d + i - 16, e);
		}
		store(d, h0);
		store(d + 16, h1);
		store(d + 32, h2);
		store(d + 48, h3);
	}
	return dst;
}

void *MEM(memcpy)(void *restrict dst, const void *restrict src, size_t n)
{
	return move(dst, src, n);
}

void *MEM(memmove)(void *dst, const void *src, size_t n)
{
	return move(dst, src, n);
}

/* Bit i set where byte i of the 16 at l and r differ. */
static inline unsigned differing(const unsigned char *l, const unsigned char *r)
{
	return ~(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(load(l), load(r))) & 0xffff;
}

static inline int order(uint64_t l, uint64_t r)
{
	return l == r ? 0 : l < r ? -1 : 1;
}

int MEM(memcmp)(const void *vl, const void *vr, size_t n)
{
	const unsigned char *l = vl, *r = vr;
	if (n >= 16) {
		/* The last block overlaps the one before; its bytes there are equal by then. */
		for (size_t i = 0;; i += 16) {
			if (i + 16 > n)
				i = n - 16;
			unsigned mask = differing(l + i, r + i);
			if (mask) {
				size_t k = i + __builtin_ctz(mask);
				return l[k] - r[k];
			}
			if (i + 16 == n)
				return 0;
		}
	}
	/* Big-endian words order like the bytes they hold. */
	if (n >= 8) {
		uint64_t a = __builtin_bswap64(*(const u64u *)l), b = __builtin_bswap64(*(const u64u *)r);
		if (a == b) {
			a = __builtin_bswap64(*(const u64u *)(l + n - 8));
			b = __builtin_bswap64(*(const u64u *)(r + n - 8));
		}
		return order(a, b);
	}
	if (n >= 4) {
		uint32_t a = __builtin_bswap32(*(const u32u *)l), b = __builtin_bswap32(*(const u32u *)r);
		if (a == b) {
			a = __builtin_bswap32(*(const u32u *)(l + n - 4));
			b = __builtin_bswap32(*(const u32u *)(r + n - 4));
		}
		return order(a, b);
	}
	for (; n; n--, l++, r++)
		if (*l != *r)
			return *l - *r;
	return 0;
}

/* Rust compares slices for equality with bcmp. */
int MEM(bcmp)(const void *l, const void *r, size_t n)
{
	return MEM(memcmp)(l, r, n);
}
