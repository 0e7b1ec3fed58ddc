/* fuzz.h - the libFuzzer entry point every fuzz_*.c defines; replay.c drives it without libFuzzer. */
#ifndef TRIAGE_FUZZ_H
#define TRIAGE_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* Runs one input (borrowed, size bytes). Returns 0; crashes or sanitizer reports are
 * the failures. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
