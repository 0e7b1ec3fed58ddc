/* backoff.c - full-jitter exponential retry delays and Retry-After / HTTP-date parsing.
 *
 * HTTP-dates are parsed by hand: strptime() and friends follow the locale and
 * timegm() is not C11, while the three RFC 9110 forms are fixed-width and English. */
#include <errno.h>
#include <string.h>

#include "backoff.h"

void
backoff_seed(struct backoff_rng *r, uint64_t seed)
{
    r->s = seed;
}

static uint64_t
splitmix64(struct backoff_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint32_t
backoff_delay_ms(struct backoff_rng *r, uint32_t attempt, uint32_t base_ms, uint32_t cap_ms)
{
    uint64_t ceiling = cap_ms;

    /* base << attempt, saturating at cap without overflowing. */
    if (attempt < 32 && ((uint64_t)base_ms << attempt) < cap_ms)
        ceiling = (uint64_t)base_ms << attempt;
    return (uint32_t)(splitmix64(r) % (ceiling + 1));
}

static const char *const wkday[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
static const char *const weekday[] = {"Monday", "Tuesday", "Wednesday", "Thursday",
                                      "Friday", "Saturday", "Sunday"};
static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* Days since 1970-01-01 of a proleptic Gregorian date (the civil-from-days inverse in
 * 400-year eras, as described by Howard Hinnant's date algorithms). */
static int64_t
days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static int
is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Reads exactly n digits at *p. Returns the value or -1. */
static int
digits(const char **p, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)(*p)[i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *p += n;
    return v;
}

static int
lit(const char **p, const char *s)
{
    size_t n = strlen(s);
    if (strncmp(*p, s, n))
        return 0;
    *p += n;
    return 1;
}

/* Matches one of the names in list (n entries) at *p; returns its index or -1. */
static int
name_in(const char **p, const char *const *list, int n)
{
    for (int i = 0; i < n; i++)
        if (lit(p, list[i]))
            return i;
    return -1;
}

/* "HH:MM:SS" */
static int
clock_time(const char **p, int *h, int *mi, int *s)
{
    if ((*h = digits(p, 2)) < 0 || !lit(p, ":") || (*mi = digits(p, 2)) < 0 || !lit(p, ":") ||
        (*s = digits(p, 2)) < 0)
        return -1;
    return 0;
}

int
backoff_http_date(const char *s, time_t *t)
{
    static const unsigned mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const char *p = s;
    int day, mon, year, h, mi, sec;

    if (!s)
        return -EINVAL;
    if (name_in(&p, weekday, 7) >= 0) {
        /* RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT" */
        if (!lit(&p, ", ") || (day = digits(&p, 2)) < 0 || !lit(&p, "-") ||
            (mon = name_in(&p, months, 12)) < 0 || !lit(&p, "-") || (year = digits(&p, 2)) < 0 ||
            !lit(&p, " ") || clock_time(&p, &h, &mi, &sec) < 0 || !lit(&p, " GMT"))
            return -EINVAL;
        year += year < 70 ? 2000 : 1900;
    } else if (name_in(&p, wkday, 7) >= 0) {
        if (lit(&p, ", ")) {
            /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
            if ((day = digits(&p, 2)) < 0 || !lit(&p, " ") ||
                (mon = name_in(&p, months, 12)) < 0 || !lit(&p, " ") ||
                (year = digits(&p, 4)) < 0 || !lit(&p, " ") ||
                clock_time(&p, &h, &mi, &sec) < 0 || !lit(&p, " GMT"))
                return -EINVAL;
        } else {
            /* asctime: "Sun Nov  6 08:49:37 1994" */
            if (!lit(&p, " ") || (mon = name_in(&p, months, 12)) < 0 || !lit(&p, " "))
                return -EINVAL;
            if (*p == ' ') {
                p++;
                day = digits(&p, 1);
            } else {
                day = digits(&p, 2);
            }
            if (day < 0 || !lit(&p, " ") || clock_time(&p, &h, &mi, &sec) < 0 ||
                !lit(&p, " ") || (year = digits(&p, 4)) < 0)
                return -EINVAL;
        }
    } else {
        return -EINVAL;
    }
    if (*p)
        return -EINVAL;
    unsigned dim = mdays[mon] + (mon == 1 && is_leap(year));
    if (day < 1 || (unsigned)day > dim || h > 23 || mi > 59 || sec > 60)
        return -EINVAL;
    int64_t days = days_from_civil(year, (unsigned)mon + 1, (unsigned)day);
    *t = (time_t)(days * 86400 + h * 3600 + mi * 60 + sec);
    return 0;
}

int
backoff_retry_after(const char *value, time_t now, uint32_t cap_ms, uint32_t *delay_ms)
{
    char buf[64];
    const char *p = value;
    size_t n;

    if (!p)
        return -EINVAL;
    while (*p == ' ' || *p == '\t')
        p++;
    n = strlen(p);
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    if (n == 0 || n >= sizeof(buf))
        return -EINVAL;
    memcpy(buf, p, n);
    buf[n] = '\0';

    uint64_t ms;
    if (buf[0] >= '0' && buf[0] <= '9') {
        uint64_t secs = 0;
        for (size_t i = 0; i < n; i++) {
            if (buf[i] < '0' || buf[i] > '9')
                return -EINVAL;
            if (secs < UINT32_MAX) /* saturate: anything this long is capped anyway */
                secs = secs * 10 + (uint64_t)(buf[i] - '0');
        }
        ms = secs * 1000;
    } else {
        time_t t;
        if (backoff_http_date(buf, &t) < 0)
            return -EINVAL;
        ms = t > now ? (uint64_t)(t - now) * 1000 : 0;
    }
    *delay_ms = ms > cap_ms ? cap_ms : (uint32_t)ms;
    return 0;
}
