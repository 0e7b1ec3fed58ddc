/* grade.c - grading an answer by its final number (see grade.h). */
#include "grade.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Parses the number starting at the first digit at or after p (a '-' right before it
 * counts, if it is inside text): digits with thousands commas, an optional fraction.
 * Returns the end of the number, or NULL if there is no digit. */
static const char *
number_at(const char *text, const char *p, double *out)
{
    char buf[64];
    size_t n = 0;

    while (*p && !is_digit(*p))
        p++;
    if (!*p)
        return NULL;
    if (p > text && p[-1] == '-')
        buf[n++] = '-';
    for (; is_digit(*p) || *p == ','; p++)
        if (*p != ',' && n < sizeof(buf) - 2)
            buf[n++] = *p;
    if (*p == '.' && is_digit(p[1])) {
        if (n < sizeof(buf) - 2)
            buf[n++] = '.';
        for (p++; is_digit(*p); p++)
            if (n < sizeof(buf) - 1)
                buf[n++] = *p;
    }
    buf[n] = '\0';
    *out = strtod(buf, NULL);
    return p;
}

int
grade_final_number(const char *text, double *out)
{
    const char *p = NULL, *q;

    for (q = text; (q = strstr(q, "####")) != NULL; q += 4)
        p = q;
    if (p && number_at(text, p, out))
        return 0;
    p = NULL;
    for (q = text; (q = strstr(q, "\\boxed{")) != NULL; q += 7)
        p = q;
    if (p && number_at(text, p, out))
        return 0;
    int found = 0;
    for (q = text; (q = number_at(text, q, out)) != NULL;)
        found = 1; /* the last one wins */
    return found ? 0 : -1;
}

int
grade_is_correct(const char *answer, double reference)
{
    double got;

    return grade_final_number(answer, &got) == 0 && fabs(got - reference) < 1e-6;
}
