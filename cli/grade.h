/* grade.h - grading an answer by its final number against a reference (GSM8K style), the
 * rule `triage demo` scores with and `triage replay --judge` judges by. */
#ifndef TRIAGE_CLI_GRADE_H
#define TRIAGE_CLI_GRADE_H

/* Extracts the final answer of a solution (NUL-terminated, borrowed): the number after the
 * last "####", else in the last \boxed{}, else the last number in the text. Numbers may
 * have thousands commas, a fraction and a '-' right before them. Returns 0 with *out set,
 * or -1 when there is no number. */
int grade_final_number(const char *text, double *out);

/* Returns 1 when answer's final number equals reference (within 1e-6), else 0. */
int grade_is_correct(const char *answer, double reference);

#endif
