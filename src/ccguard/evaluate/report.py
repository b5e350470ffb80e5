"""Evaluation of a trained classifier on the run's splits, and the report files."""

from __future__ import annotations

import html
import json
import re
from collections import defaultdict
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ccguard.constitution import Constitution
from ccguard.evaluate.metrics import auprc, auroc, flagged_rate, tpr_at_fpr
from ccguard.policy import is_refusal_exchange, stop_char
from ccguard.records import Example, atomic_write_text, render_prompt

_LANG_WORDS = {
    "es": {"cómo", "qué", "para", "los", "las", "una", "por", "con", "puedo", "hacer", "quiero", "el", "es"},
    "fr": {"comment", "pour", "les", "une", "des", "est", "que", "je", "faire", "avec", "dans", "le", "la"},
    "de": {"wie", "ich", "und", "der", "die", "das", "ein", "eine", "kann", "mit", "für", "nicht", "ist"},
    "en": {"how", "the", "and", "what", "can", "for", "with", "you", "is", "to", "of", "make", "do"},
}


def guess_language(text: str) -> str:
    """A cheap guess among the seed languages (en, es, fr, de, zh), for per-language breakdowns."""
    if sum("\u4e00" <= c <= "\u9fff" for c in text[:400]) >= 3:
        return "zh"
    words = re.findall(r"[a-zäöüßéèêàçñóíúá]+", text[:600].lower())
    hits = {lang: sum(w in ws for w in words) for lang, ws in _LANG_WORDS.items()}
    best = max(hits, key=lambda k: hits[k])
    return best if hits[best] else "other"


def split_metrics(examples: list[Example], scores: list[float], threshold: float) -> dict[str, Any]:
    y = [int(e.label == "harmful") for e in examples]
    pos = [s for s, t in zip(scores, y, strict=True) if t]
    neg = [s for s, t in zip(scores, y, strict=True) if not t]
    return {
        "n": len(examples),
        "auroc": auroc(y, scores),
        "auprc": auprc(y, scores),
        "tpr": flagged_rate(pos, threshold).model_dump(),
        "fpr": flagged_rate(neg, threshold).model_dump(),
        "tpr_at_fpr": {f"{f:g}": tpr_at_fpr(y, scores, f) for f in (0.001, 0.01, 0.05)},
    }


def _by_key(examples: list[Example], scores: dict[str, list[float]], threshold: float, keys) -> dict[str, Any]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        for k in keys(e):
            groups[k].append(i)
    out = {}
    for k in sorted(groups):
        idx = groups[k]
        row: dict[str, Any] = {}
        for name, s in scores.items():
            row[name] = {
                "harmful_flagged": flagged_rate([s[i] for i in idx if examples[i].label == "harmful"], threshold).model_dump(),
                "harmless_flagged": flagged_rate([s[i] for i in idx if examples[i].label == "harmless"], threshold).model_dump(),
            }
        out[k] = row
    return out


def evaluate_input(clf: Any, val: list[Example], val_scores: list[float], test: list[Example], threshold: float) -> dict[str, Any]:
    """Test-split metrics with per-family, per-category and long-prompt breakdowns."""
    texts = [render_prompt(e.prompt) for e in test]
    scored = clf.score(texts)
    s_views = [s.score for s in scored]
    # Without views: the raw view's own windows, scored in the same pass.
    s_raw = [s.score if s.raw is None else s.raw for s in scored]
    metrics: dict[str, Any] = {
        "threshold": threshold,
        "val": split_metrics(val, val_scores, threshold),
        "test": split_metrics(test, s_views, threshold),
        "test_without_views": split_metrics(test, s_raw, threshold),
    }
    fam_scores = {"views": s_views, "raw": s_raw}
    metrics["by_family"] = _by_key(test, fam_scores, threshold, lambda e: [s.family for s in e.lineage] or ["none"])
    metrics["by_transform"] = _by_key(test, fam_scores, threshold, lambda e: [s.name for s in e.lineage] or ["none"])
    metrics["by_category"] = _by_key(test, {"views": s_views}, threshold, lambda e: [e.category or "?"])
    metrics["by_language"] = _by_key(test, {"views": s_views}, threshold, lambda e: [guess_language(e.base or render_prompt(e.prompt))])

    # Long prompts: sliding windows (max) against head+tail truncation, on the same examples.
    long_idx = [i for i, s in enumerate(scored) if s.n_windows > 1]
    if long_idx:
        sub = [test[i] for i in long_idx]
        ht = [s.score for s in clf.score([texts[i] for i in long_idx], replace(clf.spec, strategy="head_tail"))]
        metrics["long_prompts"] = {
            "n": len(long_idx),
            "windows": split_metrics(sub, [s_views[i] for i in long_idx], threshold),
            "head_tail": split_metrics(sub, ht, threshold),
        }
    return metrics


def stop_stats(examples: list[Example], scores: list[Any], threshold: float, chunk_tokens: int) -> dict[str, Any]:
    """Where streaming halts harmful responses: the fraction of each flagged response released before the stop."""
    fracs = []
    for e, s in zip(examples, scores, strict=True):
        if e.label != "harmful" or not e.response:
            continue
        stop = stop_char(s.token_scores, s.token_starts, threshold, chunk_tokens)
        if stop is not None:
            fracs.append(stop / max(1, len(e.response)))
    arr = np.asarray(fracs) if fracs else np.zeros(0)
    return {
        "n_halted": len(fracs),
        "median_released_fraction": float(np.median(arr)) if len(arr) else None,
        "p75_released_fraction": float(np.quantile(arr, 0.75)) if len(arr) else None,
        "halted_within_first_25pct": float((arr <= 0.25).mean()) if len(arr) else None,
    }


def evaluate_output(
    clf: Any, val: list[Example], val_scores: list[Any], test: list[Example], threshold: float,
    harmful_categories: Collection[str] = (),
) -> dict[str, Any]:
    """Output-classifier metrics: per split (and on the test split without refusals of harmful requests, whose halting
    refuses no harmless user), where streaming halts, and per response kind and augmentation."""

    scores = clf.score([render_prompt(e.prompt) for e in test], [e.response or "" for e in test])
    maxes = [s.score for s in scores]
    refusal = [is_refusal_exchange(e, harmful_categories) for e in test]
    return {
        "threshold": threshold,
        "val": split_metrics(val, [s.score for s in val_scores], threshold),
        "test": split_metrics(test, maxes, threshold),
        "test_answers": split_metrics([e for e, r in zip(test, refusal, strict=True) if not r],
                                      [s for s, r in zip(maxes, refusal, strict=True) if not r], threshold),
        "refusals_flagged": flagged_rate([s for s, r in zip(maxes, refusal, strict=True) if r], threshold).model_dump(),
        "stop": stop_stats(test, scores, threshold, clf.spec.chunk_tokens),
        "truncated": sum(s.truncated for s in scores),
        "by_source": _by_key(test, {"score": maxes}, threshold, lambda e: [e.source]),
        "by_augmentation": _by_key(test, {"score": maxes}, threshold, lambda e: [s.name for s in e.lineage] or ["none"]),
    }


def _pct(rate: dict[str, Any] | None) -> str:
    if not rate or rate.get("rate") is None:
        return "n/a"
    return f"{100 * rate['rate']:.1f}% [{100 * rate['lo']:.1f}–{100 * rate['hi']:.1f}] (n={rate['n']})"


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def render_markdown(const: Constitution, manifest: Any, m: dict[str, Any]) -> str:
    cal = m["calibration"]
    lines = [
        f"# ccguard report: {const.name}",
        "",
        f"Constitution `{const.name}` v{const.version} (sha256 `{const.content_hash[:16]}`), profile "
        f"`{manifest.config.get('profile')}`, run time {m.get('run_seconds', 0):.0f}s.",
        "",
        "## Input classifier",
        "",
        (
            f"Threshold **{cal['threshold']:.4f}**, two-sided: target FPR {100 * cal['target_fpr']:.2f}% on "
            f"{cal['everyday_set']}, capped at {100 * cal['hard_fpr_cap']:.1f}% on {cal['calibration_set']}"
            + (f" and {100 * cal['family_fpr']:.1f}% within each transform family" if cal.get("family_fpr") else "")
            + f". **Binding: {cal['binding']}.** Achieved: everyday FPR {_pct(cal['fpr'])}, hard-neighbour FPR "
            f"{_pct(cal['hard'])}, TPR {_pct(cal['tpr'])}."
        ) if cal.get("hard") else (
            f"Threshold **{cal['threshold']:.4f}**, calibrated on {cal['calibration_set']} at target FPR "
            f"{100 * cal['target_fpr']:.2f}%"
            + (f" overall and {100 * cal['family_fpr']:.1f}% within each transform family" if cal.get("family_fpr") else "")
            + f" (binding: {cal.get('binding', 'overall')}): achieved FPR {_pct(cal['fpr'])}, TPR {_pct(cal['tpr'])}."
        ),
        "",
        *([f"Harmless sides of held-out intent pairs flagged (reported, not bound; design/028): {_pct(cal['contrast'])}.", ""]
          if cal.get("contrast") else []),
        "Validation FPR per benign family at this threshold: "
        + ", ".join(f"{k} {_pct(v)}" for k, v in (cal.get("by_family") or {}).items()) + ".",
        "",
        "| split | AUROC | AUPRC | TPR @ threshold | FPR @ threshold | TPR @ 0.1% FPR | TPR @ 1% FPR | TPR @ 5% FPR |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("val", "test", "test_without_views"):
        s = m[name]
        t = s["tpr_at_fpr"]
        lines.append(
            f"| {name} | {_f(s['auroc'])} | {_f(s['auprc'])} | {_pct(s['tpr'])} | {_pct(s['fpr'])} | "
            f"{_f(t['0.001'])} | {_f(t['0.01'])} | {_f(t['0.05'])} |"
        )
    lines += [
        "",
        "## Per transform family (test split)",
        "",
        "An example counts once for each family in its lineage. *raw* scores the prompt as written; *views* also "
        "scores its decoded views and takes the maximum.",
        "",
        "| family | harmful flagged (views) | harmful flagged (raw) | harmless flagged (views) | harmless flagged (raw) |",
        "|---|---|---|---|---|",
    ]
    for fam, row in m["by_family"].items():
        lines.append(
            f"| {fam} | {_pct(row['views']['harmful_flagged'])} | {_pct(row['raw']['harmful_flagged'])} | "
            f"{_pct(row['views']['harmless_flagged'])} | {_pct(row['raw']['harmless_flagged'])} |"
        )
    lines += ["", "## Per transform (test split)", "", "| transform | harmful flagged (views) | harmful flagged (raw) | harmless flagged (views) |", "|---|---|---|---|"]
    for name, row in m["by_transform"].items():
        lines.append(
            f"| {name} | {_pct(row['views']['harmful_flagged'])} | {_pct(row['raw']['harmful_flagged'])} | "
            f"{_pct(row['views']['harmless_flagged'])} |"
        )
    if m.get("by_language"):
        lines += ["", "## Per language (test split, guessed from the base text)", "",
                  "| language | harmful flagged | harmless flagged |", "|---|---|---|"]
        for lang, row in m["by_language"].items():
            r = row["views"]
            lines.append(f"| {lang} | {_pct(r['harmful_flagged'])} | {_pct(r['harmless_flagged'])} |")
    lines += ["", "## Per category (test split)", "", "| category | flagged |", "|---|---|"]
    for cat, row in m["by_category"].items():
        r = row["views"]
        lines.append(f"| {cat} | {_pct(r['harmful_flagged'] if r['harmful_flagged']['n'] else r['harmless_flagged'])} |")
    if "long_prompts" in m:
        lp = m["long_prompts"]
        lines += [
            "",
            f"## Long prompts (test examples longer than one window, n={lp['n']})",
            "",
            "| strategy | AUROC | TPR @ threshold | FPR @ threshold |",
            "|---|---|---|---|",
        ]
        for k in ("windows", "head_tail"):
            s = lp[k]
            lines.append(f"| {k} | {_f(s['auroc'])} | {_pct(s['tpr'])} | {_pct(s['fpr'])} |")
    if "output" in m:
        o = m["output"]
        oc = o["calibration"]
        st = o["stop"]
        lines += [
            "",
            "## Streaming output classifier",
            "",
            (
                f"Threshold **{oc['threshold']:.4f}**, calibrated on {oc['everyday_set']} at target FPR "
                f"{100 * oc['target_fpr']:.2f}%: achieved FPR {_pct(oc['fpr'])}, TPR {_pct(oc['tpr'])}. Refusals and "
                f"deflections of harmful requests halted: {_pct(oc['hard'])} (halting one changes no harmless user's "
                "answer; test split below: " + _pct(o.get("refusals_flagged")) + ")."
            ) if oc.get("everyday_set") else (
                f"Threshold **{oc['threshold']:.4f}**, calibrated on {oc['calibration_set']} at target FPR "
                f"{100 * oc['target_fpr']:.2f}%: achieved FPR {_pct(oc['fpr'])}, TPR {_pct(oc['tpr'])}."
            ),
            "",
            "A response's score is the maximum over its prefixes, so a flagged response is one streaming would have "
            "halted.",
            "",
            "| split | AUROC | AUPRC | TPR @ threshold | FPR @ threshold | TPR @ 1% FPR | TPR @ 5% FPR |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in ("val", "test", "test_answers"):
            if name not in o:
                continue
            s = o[name]
            t = s["tpr_at_fpr"]
            lines.append(f"| {name} | {_f(s['auroc'])} | {_f(s['auprc'])} | {_pct(s['tpr'])} | {_pct(s['fpr'])} | {_f(t['0.01'])} | {_f(t['0.05'])} |")
        med = st["median_released_fraction"]
        lines += [
            "",
            f"Halting on the test split: {st['n_halted']} harmful responses halted; median fraction released before the "
            f"halt {_f(med)}, 75th percentile {_f(st['p75_released_fraction'])}; halted within the first 25% of the "
            f"response: {_f(st['halted_within_first_25pct'])}.",
            "",
            "| response kind | flagged |",
            "|---|---|",
        ]
        for k, row in o["by_source"].items():
            r = row["score"]
            lines.append(f"| {k} | {_pct(r['harmful_flagged'] if r['harmful_flagged']['n'] else r['harmless_flagged'])} |")
        lines += ["", "| output augmentation | harmful flagged | harmless flagged |", "|---|---|---|"]
        for k, row in o["by_augmentation"].items():
            r = row["score"]
            lines.append(f"| {k} | {_pct(r['harmful_flagged'])} | {_pct(r['harmless_flagged'])} |")
    if "cascade" in m:
        lines += cascade_lines(m["cascade"])
    if "shortcut_audit" in m:
        lines += _shortcut_lines(m["shortcut_audit"])
    lines.append("")
    return "\n".join(lines)


def cascade_lines(stage: dict[str, Any]) -> list[str]:
    """The input cascade: each stage alone and the cascade, on val and test."""
    lines = [
        "",
        "## Input cascade",
        "",
        f"Stage 2: `{stage['backbone']}` "
        + (f"layers {stage['layers']}" if stage.get("layers") else "fine-tuned input classifier")
        + f", ensemble weight {stage['weight']}. Stage-1 scores "
        f"above {stage['escalate_threshold']:.4f} (target: {100 * stage['escalation_target']:.1f}% of everyday "
        f"traffic) are escalated; the cascade's threshold {stage['threshold']:.4f} is calibrated like stage 1's "
        f"(binding: {stage['calibration']['binding']}). `ccguard eval` also shows stage 2 alone.",
        "",
        "| split | system | AUROC | TPR @ 0.1% FPR | TPR @ 1% FPR | TPR @ threshold | FPR @ threshold | everyday FPR |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split in ("val", "test"):
        sm = stage["metrics"][split]
        for name in ("stage1", "cascade"):
            r = sm[name]
            lines.append(f"| {split} | {name} | {_f(r['auroc'])} | {_f(r['tpr_at_0.1pct_fpr'])} | {_f(r['tpr_at_1pct_fpr'])} | "
                         f"{_pct(r['tpr'])} | {_pct(r['fpr'])} | {_pct(r['everyday_fpr'])} |")
    e = stage["metrics"]["test"]["escalation"]
    lines += ["", f"Escalated on test: {_f(e['everyday'])} of everyday, {_f(e['harmless'])} of harmless and "
              f"{_f(e['harmful'])} of harmful prompts."]
    return lines


def _shortcut_lines(sa: dict[str, Any]) -> list[str]:
    """The shortcut audit: how well a bag of words on topic-masked training text predicts the label."""
    lines = [
        "",
        "## Shortcut audit (training data)",
        "",
        "Topic words (the constitution's entities and its categories' policy vocabulary) and numbers are masked, then "
        "TF-IDF + logistic regression is fitted on the train split and scored on val+test. A masked AUROC well above "
        "0.5 means the data's style gives the label away, and the classifiers can learn that instead of the content. "
        "'Function words only' masks every word but English function words on both sides, so no topic word is left "
        "on either label's side.",
        "",
        "| side | masked AUROC | unmasked AUROC | masked AUROC, base only | topic words deleted | function words only "
        "| target | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for side in ("input", "output"):
        a = sa[side]
        lines.append(
            f"| {side} | {_f(a['auroc_masked'])} | {_f(a['auroc_unmasked'])} | {_f(a['auroc_masked_base'])} | "
            f"{_f(a.get('auroc_topic_deleted'))} | {_f(a.get('auroc_function_words'))} | ≤ {a['target']:.2f} | "
            f"{'pass' if a['passed'] else '**FAIL**'} |"
        )
    for side, d in sa.get("training_weights", {}).items():
        if not d.get("applied"):
            continue
        lines += ["", f"Training weights ({side}, `debias` {d['strength']:g}): each training row counts by how little "
                  f"the masked model, fitted out of fold, predicts its label. Its AUROC is {_f(d.get('style_auroc_oof'))} "
                  f"out of fold and {_f(d.get('style_auroc_weighted'))} with the rows weighted as training weighs them "
                  f"({d['effective_rows']:.0%} of the rows in effective size)."]
    for side in ("input", "output"):
        for label in ("harmful", "harmless"):
            feats = sa[side]["top_features"][label]
            lines += ["", f"Most {label}-predictive masked n-grams ({side}): "
                      + (", ".join(f"`{f['ngram']}` ({f['weight']:+.2f})" for f in feats) or "none") + "."]
    for side in ("input", "output"):
        groups = sa[side].get("by_group") or []
        if groups:
            lines += ["", f"Most separable groups ({side}; each against every row of the other label): "
                      + ", ".join(f"{g['group']} ({g['label']}, n={g['n']}) {g['auroc']:.3f}" for g in groups[:6]) + "."]
    return lines


def write_report(report_dir: Path, const: Constitution, manifest: Any, metrics: dict[str, Any],
                 images: dict[str, Path] | None = None) -> None:
    """metrics.json, report.md and a self-contained report.html (``images`` are embedded under their captions)."""
    report_dir = Path(report_dir)
    atomic_write_text(report_dir / "metrics.json", json.dumps(metrics, indent=2))
    md = render_markdown(const, manifest, metrics)
    for caption, path in (images or {}).items():
        md += f"\n\n![{caption}]({Path(path).name})"
    atomic_write_text(report_dir / "report.md", md)
    atomic_write_text(report_dir / "report.html", render_html(f"ccguard report: {const.name}", render_markdown(const, manifest, metrics),
                                                              list((images or {}).items())))


_STYLE = (
    "body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.6em 0 1.2em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}"
    "th{background:#f2f2f2}tr:nth-child(even) td{background:#fafafa}"
    "code{font:12.5px ui-monospace,monospace;background:#f4f4f4;padding:0 .2em}pre{background:#f6f6f6;padding:1em;overflow:auto}"
    "figure{display:inline-block;margin:.5em;vertical-align:top}img{max-width:520px}figcaption{font-size:12px;color:#555}"
)


def render_html(title: str, md: str, images: list[tuple[str, Path]]) -> str:
    """A self-contained HTML report: the Markdown rendered as HTML (real tables, headings and lists; raw HTML in it
    is escaped, since reports quote prompts) and each plot embedded as a figure under its caption."""
    import base64

    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(md)
    figures = "".join(
        f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{base64.b64encode(Path(p).read_bytes()).decode()}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for caption, p in images
    )
    plots = f"<section id='plots'><h2>Plots</h2>{figures}</section>" if figures else ""
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{plots}<main>{body}</main></body></html>")
