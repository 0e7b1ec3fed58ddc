/* fuzz_judge.c - fuzz target for the LLM judge: router_judge_parse on the raw bytes, and
 * router_judge_request and router_judge_unpack on a conversation and an answer built
 * from them.
 *
 * The input splits at its first NUL: before it the messages (a JSON value, or when it
 * does not parse, the raw bytes as one user turn, unchecked UTF-8 included), after it the
 * answer (no NUL: the whole input is the answer too). Every request built must be valid
 * JSON to a strict parser and unpack again; short plain text must come back exactly. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz.h"
#include "router.h"

/* Returns 1 when the judge shows these n bytes unchanged: short valid UTF-8 without NUL,
 * no line beginning with '[', no trailing newline. */
static int
plain(const char *s, size_t n)
{
    if (n == 0 || n > 4000 || memchr(s, '\0', n) || s[n - 1] == '\n')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '[' && (i == 0 || s[i - 1] == '\n'))
            return 0;
    json_t *j = json_stringn(s, n); /* NULL when not valid UTF-8 */
    json_decref(j);
    return j != NULL;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    double q = -1;
    int rating = 0;

    if (router_judge_parse(s, size, &q, &rating) == 0 &&
        (rating < 1 || rating > 10 || q != (double)(rating - 1) / 9.0))
        abort();

    const char *nul = size ? memchr(s, '\0', size) : NULL;
    size_t mlen = nul ? (size_t)(nul - s) : size;
    const char *ans = nul ? nul + 1 : s;
    size_t alen = nul ? size - mlen - 1 : size;
    json_t *messages = json_loadb(s, mlen, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    int raw = messages == NULL;
    if (raw)
        messages = json_pack("[{s:s, s:o}]", "role", "user", "content",
                             json_stringn_nocheck(s, mlen));
    if (!messages)
        abort();
    char *body = router_judge_request(messages, ans, alen, "judge");
    if (raw && mlen > 0 && !body)
        abort(); /* a user turn with text always makes a request */
    if (body) {
        json_t *req = json_loads(body, 0, NULL);
        char *question, *answer;
        if (!req)
            abort();
        int rc = router_judge_unpack(req, &question, &answer);
        if (raw && rc != 0)
            abort();
        if (rc == 0) {
            if (raw && plain(s, mlen) &&
                (strlen(question) != mlen || memcmp(question, s, mlen) != 0))
                abort();
            if (plain(ans, alen) && (strlen(answer) != alen || memcmp(answer, ans, alen) != 0))
                abort();
            free(question);
            free(answer);
        }
        json_decref(req);
        free(body);
    }
    json_decref(messages);
    return 0;
}
