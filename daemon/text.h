/* text.h - text that came from outside, made safe to echo: valid UTF-8, cut on a
 * character boundary.
 *
 * Every string built from client, backend, config or model-file bytes that reaches a
 * JSON builder, a response header or a log line goes through here first: jansson
 * refuses invalid UTF-8, and a message cut mid-character by a fixed buffer is invalid. */
#ifndef TRIAGE_DAEMON_TEXT_H
#define TRIAGE_DAEMON_TEXT_H

#include <stddef.h>

/* Length of the well-formed UTF-8 sequence (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF) at s, which has n > 0 bytes; 0 when s does not
 * start one (an invalid or truncated sequence). */
size_t text_utf8_seq(const unsigned char *s, size_t n);

/* Copies the n bytes of src into dst (cap > 0 bytes, always NUL-terminated) as valid
 * UTF-8: a byte that does not start a well-formed sequence becomes U+FFFD, a NUL
 * byte becomes U+FFFD, and the copy stops at the last whole character that fits.
 * Returns the length written (excluding the NUL). */
size_t text_utf8_clean(char *dst, size_t cap, const char *src, size_t n);

/* Writes a short printable quotation of src for an error message into dst (cap > 0):
 * at most max_chars characters, cleaned as text_utf8_clean does, with "..." appended
 * when src was longer. Returns dst. */
const char *text_quote(char *dst, size_t cap, const char *src, size_t max_chars);

#endif
