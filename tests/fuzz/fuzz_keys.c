/* fuzz_keys.c - fuzz target for the key-file parser and the Authorization header check. */
#include <stdlib.h>
#include <string.h>

#include "guard/guard.h"
#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    struct auth_keys *k = auth_keys_parse((const char *)data, size, "fuzz", err, sizeof(err));

    if (k) {
        for (size_t i = 0; i < auth_keys_count(k); i++)
            if (!auth_name_valid(auth_keys_name(k, i)))
                abort();
    }
    /* The same bytes as an Authorization header value. */
    char *hdr = malloc(size + 1);
    if (!hdr)
        abort();
    memcpy(hdr, data, size);
    hdr[size] = '\0';
    const char *name = NULL;
    int r = auth_check(k, hdr, &name);
    if (r == 0 && !name)
        abort();
    free(hdr);
    auth_keys_unref(k);
    return 0;
}
