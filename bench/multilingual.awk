# multilingual.awk - cross-language score statistics: reads the set (JSONL with "id", "lang",
# "prompt") then `triage score`'s output for it, line for line. Used by bench/multilingual.sh
# and tests/features/test_multilingual.sh; -v max_mad=X, -v max_bias=Y and -v max_spread=Z make
# it fail (exit 1) when the mean absolute deviation from English, a language's mean signed
# deviation from English (in absolute value) or the largest spread exceeds them.
function field(line, key,    m) {
    if (!match(line, "\"" key "\": \"[^\"]*\""))
        return ""
    m = substr(line, RSTART, RLENGTH)
    sub("^\"" key "\": \"", "", m)
    sub("\"$", "", m)
    return m
}
FNR == NR {
    id[FNR] = field($0, "id")
    lang[FNR] = field($0, "lang")
    n_in = FNR
    next
}
{
    if (!match($0, /"score": [-0-9.e]+/)) {
        print "line " FNR ": no score: " $0 > "/dev/stderr"
        bad = 1
        exit 1
    }
    s = substr($0, RSTART + 9, RLENGTH - 9) + 0
    i = id[FNR]; l = lang[FNR]
    score[i, l] = s
    if (!(i in seen)) { seen[i] = 1; ids[++n_ids] = i }
    if (!(l in lseen)) { lseen[l] = 1; langs[++n_langs] = l }
}
END {
    if (bad)
        exit 1
    if (!("en" in lseen) || n_ids == 0) {
        print "the set needs English (\"lang\": \"en\") prompts" > "/dev/stderr"
        exit 1
    }
    printf "%-6s %8s %10s %10s\n", "lang", "prompts", "mean(d)", "mean|d|"
    for (j = 1; j <= n_langs; j++) {
        l = langs[j]
        n = 0; sd = 0; ad = 0
        for (k = 1; k <= n_ids; k++) {
            i = ids[k]
            if (!((i, l) in score) || !((i, "en") in score))
                continue
            d = score[i, l] - score[i, "en"]
            n++; sd += d; ad += d < 0 ? -d : d
            if (l != "en") { all_n++; all_ad += d < 0 ? -d : d }
        }
        printf "%-6s %8d %+10.4f %10.4f\n", l, n, n ? sd / n : 0, n ? ad / n : 0
        b = n ? sd / n : 0
        if (b < 0) b = -b
        if (b > max_b) { max_b = b; max_b_lang = l }
    }
    max_sp = 0; sum_sp = 0
    for (k = 1; k <= n_ids; k++) {
        i = ids[k]
        lo = 2; hi = -1
        line = sprintf("%-16s", i)
        for (j = 1; j <= n_langs; j++) {
            l = langs[j]
            if (!((i, l) in score)) { line = line sprintf(" %s=-", l); continue }
            s = score[i, l]
            if (s < lo) lo = s
            if (s > hi) hi = s
            line = line sprintf(" %s=%.3f", l, s)
        }
        sp = hi - lo
        sum_sp += sp
        if (sp > max_sp) { max_sp = sp; max_id = i }
        if (per_prompt)
            print line sprintf("  spread %.3f", sp)
    }
    mad = all_n ? all_ad / all_n : 0
    printf "mean |score - English score| over %d non-English prompts: %.4f\n", all_n, mad
    printf "spread (max - min over languages) per prompt: mean %.4f, max %.4f (%s)\n",
           sum_sp / n_ids, max_sp, max_id
    if (max_mad != "" && mad > max_mad + 0) {
        printf "FAIL: mean |d| %.4f > %s\n", mad, max_mad
        exit 1
    }
    if (max_bias != "" && max_b > max_bias + 0) {
        printf "FAIL: |mean(d)| of %s %.4f > %s\n", max_b_lang, max_b, max_bias
        exit 1
    }
    if (max_spread != "" && max_sp > max_spread + 0) {
        printf "FAIL: max spread %.4f > %s\n", max_sp, max_spread
        exit 1
    }
}
