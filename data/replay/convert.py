#!/usr/bin/env python3
"""Converts RouteLLM's GSM8K responses into data/replay/gsm8k.jsonl.gz for `triage replay`.

A one-off dev script (not needed to build or test):
    python3 data/replay/convert.py /work/shared/data data/replay/gsm8k.jsonl.gz

Inputs: routellm/gsm8k_responses.csv.gz (prompt, per-model correctness, per-model
responses; multi-line quoted fields) and gsm8k/test.jsonl.gz (the reference answers,
final number after "####"). Output: one JSON object per line, in the CSV's order:
  {"prompt": ..., "reference": "18",
   "answers": {"mixtral-8x7b-instruct": ..., "gpt-4-1106-preview": ...},
   "correct": {"mixtral-8x7b-instruct": true, "gpt-4-1106-preview": true}}
"correct" is RouteLLM's own grading, kept for training and comparison.
"""
import csv
import gzip
import json
import os
import sys

NAMES = {
    "mistralai/Mixtral-8x7B-Instruct-v0.1": "mixtral-8x7b-instruct",
    "gpt-4-1106-preview": "gpt-4-1106-preview",
}


def norm(s):
    return " ".join(s.split())


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/data"
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "gsm8k.jsonl.gz")
    csv.field_size_limit(1 << 30)

    refs = {}
    with gzip.open(os.path.join(src, "gsm8k", "test.jsonl.gz"), "rt", encoding="utf-8") as f:
        for line in f:
            t = json.loads(line)
            refs[norm(t["question"])] = t["answer"].split("####")[-1].strip().replace(",", "")

    n = 0
    with gzip.open(os.path.join(src, "routellm", "gsm8k_responses.csv.gz"), "rt", encoding="utf-8",
                   newline="") as f, open(out, "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        reader = csv.reader(f)
        header = next(reader)
        col = {h: i for i, h in enumerate(header)}
        for row in reader:
            prompt = row[col["prompt"]]
            rec = {"prompt": prompt, "reference": refs[norm(prompt)], "answers": {}, "correct": {}}
            for long, short in NAMES.items():
                rec["answers"][short] = row[col[long + "_response"]].strip()
                rec["correct"][short] = row[col[long]] == "True"
            gz.write((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))
            n += 1
    print(f"wrote {n} prompts to {out}")


if __name__ == "__main__":
    main()
