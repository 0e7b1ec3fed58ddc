/* text.c - make outside text valid UTF-8 before it is echoed (see text.h). */
#include "text.h"

#include <string.h>

static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */

size_t
text_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned cp;

    if (c < 0x80)
        return 1;
    if (c < 0xc2) /* a continuation byte, or an overlong two-byte lead */
        return 0;
    if (c < 0xe0) {
        len = 2;
        cp = c & 0x1f;
    } else if (c < 0xf0) {
        len = 3;
        cp = c & 0x0f;
    } else if (c < 0xf5) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

size_t
text_utf8_clean(char *dst, size_t cap, const char *src, size_t n)
{
    const unsigned char *s = (const unsigned char *)src;
    size_t out = 0;

    for (size_t i = 0; i < n;) {
        size_t len = s[i] ? text_utf8_seq(s + i, n - i) : 0;
        const char *piece = len ? src + i : replacement;
        size_t plen = len ? len : sizeof(replacement) - 1;

        if (out + plen >= cap)
            break;
        memcpy(dst + out, piece, plen);
        out += plen;
        i += len ? len : 1;
    }
    dst[out] = '\0';
    return out;
}

const char *
text_quote(char *dst, size_t cap, const char *src, size_t max_chars)
{
    const unsigned char *s = (const unsigned char *)src;
    size_t n = strlen(src), end = 0, chars = 0;

    /* find where the first max_chars characters (or invalid bytes) end */
    while (end < n && chars < max_chars) {
        size_t len = text_utf8_seq(s + end, n - end);
        end += len ? len : 1;
        chars++;
    }
    size_t out = text_utf8_clean(dst, cap, src, end);
    if (end < n && out + 4 <= cap)
        memcpy(dst + out, "...", 4);
    return dst;
}
