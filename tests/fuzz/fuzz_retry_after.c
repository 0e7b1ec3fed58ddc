/* fuzz_retry_after.c - fuzz target for Retry-After and HTTP-date parsing. */
#include <stdlib.h>
#include <string.h>

#include "guard/guard.h"
#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    uint32_t ms;
    time_t t;

    if (!s)
        abort();
    memcpy(s, data, size);
    s[size] = '\0';
    if (backoff_retry_after(s, 784111777, 600000, &ms) == 0 && ms > 600000)
        abort();
    (void)backoff_http_date(s, &t);
    free(s);
    return 0;
}
