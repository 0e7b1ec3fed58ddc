/* fuzz_conf.c - fuzz target for the config parser: conf_load() on the input as a file.
 *
 * conf_load() takes a path, so the input is written to a memfd and loaded through
 * /proc/self/fd/N: no disk writes, and each run starts from a fresh file offset. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conf.h"
#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    char path[64], err[1024];

    if (fd < 0) {
        fd = memfd_create("fuzz-conf", MFD_CLOEXEC);
        if (fd < 0) {
            perror("memfd_create");
            abort();
        }
        /* api_key_env = X in an input must not depend on the runner's environment. */
        clearenv();
    }
    if (ftruncate(fd, 0) < 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size))
        abort();
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    err[0] = '\0';
    struct conf *c = conf_load(path, err, sizeof(err));
    /* A failure always comes with a message (conf.h promises one). */
    if (!c && !err[0]) {
        fprintf(stderr, "conf_load failed without a message\n");
        abort();
    }
    if (c) {
        /* Touch the cross references the daemon will follow. */
        for (size_t i = 0; i < c->n_tiers; i++)
            if (c->tiers[i].backend >= c->n_backends)
                abort();
        for (size_t i = 0; i < c->n_fallback; i++)
            if (c->fallback[i] >= c->n_backends)
                abort();
        for (size_t i = 0; i < c->n_backends; i++)
            if (conf_backend_find(c, c->backends[i].name) < 0)
                abort();
    }
    conf_destroy(c);
    return 0;
}
