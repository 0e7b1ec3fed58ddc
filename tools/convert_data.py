#!/usr/bin/env python3
"""One-off: convert the licensed sets in /work/shared/data into triage's training JSONL (data/*.jsonl.gz).

Every output line is {"prompt": ..., "outcomes": {"weak": q, "strong": q}, ...extra fields}:
`triage train` reads prompt/messages and outcomes and ignores the rest ("set", "group",
"task", "level", "weak_model", "strong_model", "synthetic"). Run from the repository root:

    python3 tools/convert_data.py [/work/shared/data]

Deterministic: same input, same bytes out (gzip mtime 0).
"""
import csv
import gzip
import io
import json
import os
import shutil
import sys

SRC = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/data"
OUT = "data"
csv.field_size_limit(1 << 30)


def write(name, rows):
    path = os.path.join(OUT, name)
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            for r in rows:
                gz.write((json.dumps(r, ensure_ascii=False, sort_keys=False) + "\n").encode())
    print(f"{path}: {len(rows)} lines", file=sys.stderr)


def q(v):
    return 1.0 if str(v).strip().lower() in ("true", "1", "1.0") else 0.0


def contaminated(name):
    with open(os.path.join(SRC, "routellm", name)) as f:
        return {json.loads(l)["eval_prompt"] for l in f if l.strip()}


def routellm(csvname, contam, setname, weak, strong):
    bad = contaminated(contam)
    rows, dropped = [], 0
    with gzip.open(os.path.join(SRC, "routellm", csvname), "rt", newline="") as f:
        for r in csv.DictReader(f):
            p = r["prompt"]
            if p in bad:
                dropped += 1
                continue
            row = {"prompt": p, "outcomes": {"weak": q(r[weak]), "strong": q(r[strong])},
                   "set": setname, "weak_model": weak, "strong_model": strong}
            if "subject" in r:
                row["group"] = r["subject"]
            rows.append(row)
    print(f"{setname}: dropped {dropped} contaminated", file=sys.stderr)
    return rows


def mmlu_pro():
    qs = {}
    with gzip.open(os.path.join(SRC, "mmlu_pro", "mmlu_pro_questions.jsonl.gz"), "rt") as f:
        for l in f:
            d = json.loads(l)
            qs[str(d["question_id"])] = d
    weak, strong = "Mixtral-8x7B-Instruct-v0.1", "gemini-1.5-pro-002"
    rows = []
    with gzip.open(os.path.join(SRC, "mmlu_pro", "mmlu_pro_correctness_matrix.csv.gz"), "rt") as f:
        for r in csv.DictReader(f):
            d = qs.get(r["question_id"])
            if d is None or r[weak] == "" or r[strong] == "":
                continue
            letters = "ABCDEFGHIJ"
            opts = "\n".join(f"{letters[i]}. {o}" for i, o in enumerate(d["options"]))
            prompt = f"{d['question']}\n{opts}\nAnswer:"
            rows.append({"prompt": prompt, "outcomes": {"weak": q(r[weak]), "strong": q(r[strong])},
                         "set": "mmlu-pro", "group": d["category"],
                         "weak_model": weak, "strong_model": strong})
    return rows


def gsm8k_test_questions():
    """GSM8K's test questions, whitespace-folded: the demo replays them, so no
    training file may hold them (RouteLLM's GSM8K set is the test set itself and is
    used only for cross-validation)."""
    with gzip.open(os.path.join(SRC, "gsm8k", "test.jsonl.gz"), "rt") as f:
        return [" ".join(json.loads(l)["question"].split()) for l in f if l.strip()]


def llmrouter(fname, queries, setname, held_out):
    weak, strong = "mistral-7b-instruct-v0.3", "llama-3.1-nemotron-51b-instruct"
    with gzip.open(os.path.join(SRC, "llmrouter", fname), "rt") as f:
        data = json.load(f)
    # the task family of each question ("task": gsm8k, mbpp, ...), from LLMRouter's query
    # file; the 6 questions listed under two tasks take the first name in sorted order
    tasks = {}
    with gzip.open(os.path.join(SRC, "llmrouter", queries), "rt") as f:
        for l in f:
            r = json.loads(l)
            tasks.setdefault(r["query"], set()).add(r["task_name"])
    rows, dropped = [], 0
    for d in data:
        text = " ".join(d["question"].split())
        if any(h in text for h in held_out):
            dropped += 1
            continue
        s = d["scores"]
        rows.append({"prompt": d["question"],
                     "outcomes": {"weak": round(float(s[weak]), 4), "strong": round(float(s[strong]), 4)},
                     "set": setname, "group": str(d.get("cluster_id", "")),
                     "task": sorted(tasks.get(d["question"], {""}))[0],
                     "weak_model": weak, "strong_model": strong})
    if dropped:
        print(f"{fname}: dropped {dropped} prompts that hold a GSM8K test question", file=sys.stderr)
    return rows


# MATH has difficulty levels but no per-model outcomes. For training we attach
# level-derived success rates of a small fast model and a strong reasoning model
# (rough priors, marked "synthetic"), so harder levels teach a higher score.
MATH_WEAK = {1: 0.80, 2: 0.65, 3: 0.50, 4: 0.35, 5: 0.18}
MATH_STRONG = {1: 0.97, 2: 0.94, 3: 0.90, 4: 0.85, 5: 0.75}


def math(fname, setname, outcomes):
    rows = []
    with gzip.open(os.path.join(SRC, "math", fname), "rt") as f:
        for l in f:
            d = json.loads(l)
            lv = d.get("level_int")
            if not isinstance(lv, int) or not 1 <= lv <= 5:
                continue
            row = {"prompt": d["problem"], "set": setname, "group": d.get("subject", ""), "level": lv}
            if outcomes:
                row["outcomes"] = {"weak": MATH_WEAK[lv], "strong": MATH_STRONG[lv]}
                row["synthetic"] = True
            rows.append(row)
    return rows


def main():
    os.makedirs(os.path.join(OUT, "licenses"), exist_ok=True)
    mix, gsm = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
    write("routellm_mmlu.jsonl.gz", routellm("mmlu_responses_all_subjects.csv.gz",
                                             "mmlu_contaminated_prompts.jsonl", "routellm-mmlu", mix, gsm))
    write("routellm_gsm8k.jsonl.gz", routellm("gsm8k_responses.csv.gz",
                                              "gsm8k_contaminated_prompts.jsonl", "routellm-gsm8k", mix, gsm))
    write("mmlu_pro.jsonl.gz", mmlu_pro())
    held_out = gsm8k_test_questions()
    write("llmrouter_train.jsonl.gz", llmrouter("dcrouter_train.json.gz", "default_query_train.jsonl.gz", "llmrouter",
                                                         held_out))
    write("llmrouter_test.jsonl.gz", llmrouter("dcrouter_test.json.gz", "default_query_test.jsonl.gz",
                                                        "llmrouter-test", []))
    write("math_train.jsonl.gz", math("math_train.jsonl.gz", "math-train", True))
    write("math_test.jsonl.gz", math("math_test.jsonl.gz", "math-test", False))
    for sub, lic in [("routellm", "LICENSE_Apache2.txt"), ("mmlu_pro", "LICENSE_Apache2.txt"),
                     ("llmrouter", "LICENSE_MIT.txt"), ("math", "LICENSE_hendrycks_math_MIT.txt"),
                     ("math", "LICENSE_aiwaves_agents_Apache2.txt"),
                     ("math", "LICENSE_math-evaluation-harness_MIT.txt")]:
        shutil.copyfile(os.path.join(SRC, sub, lic), os.path.join(OUT, "licenses", f"{sub}_{lic}"))


if __name__ == "__main__":
    main()
