/* main.c - triaged: placeholder entry point until the daemon lands. */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "conf.h"

int
main(int argc, char **argv)
{
    char err[512];

    if (argc == 3 && !strcmp(argv[1], "--check-config")) {
        struct conf *c = conf_load(argv[2], err, sizeof(err));
        if (!c) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        conf_destroy(c);
        printf("%s: OK\n", argv[2]);
        return 0;
    }
    printf("triaged %s\n", TRIAGE_VERSION);
    return 0;
}
