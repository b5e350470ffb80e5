"""A harmful answer behind a lead-in trains on its answer: the lead-in is read, and the loss starts after it (real
MiniLM tokenizer and a one-layer MiniLM)."""

from __future__ import annotations

import torch

from ccguard.records import Example, Step


def _clf():
    from ccguard.classifiers.backbone import load_tokenizer, resolve_backbone
    from ccguard.classifiers.output import OutputClassifier, OutputModel, OutputSpec, load_output_backbone

    backbone, causal = load_output_backbone("minilm", num_layers=1)
    return OutputClassifier(OutputModel(backbone, causal), load_tokenizer(resolve_backbone("minilm")), OutputSpec(prompt_tokens=16))


def _with_positions(clf, n: int):
    from dataclasses import replace

    from ccguard.classifiers.output import OutputClassifier

    return OutputClassifier(clf.model, clf.tokenizer, replace(clf.spec, max_positions=n))


def test_a_lead_in_is_read_in_full_and_a_harmful_answer_is_scored_from_where_it_begins():
    from ccguard.train.output import _collate, to_exchange

    clf = _clf()
    lead = "*cracks knuckles and grins* Pull up a stool, friend. Where was I? Ah yes.\n\n"
    answer = "Sure, here is an overview of the whole process, step by step, in the order you asked for. " * 3
    step = Step(name="answer_preamble", family="output", args={"kind": "actions", "chars": len(lead)})
    rows = {y: Example(id=y, prompt="tell me", response=lead + answer, label=y, group=y, source="seed", lineage=[step])
            for y in ("harmful", "harmless")}  # fmt: skip
    n_lead = len(clf.response_tokens(lead).ids)
    n_answer = len(clf.response_tokens(answer).ids)
    assert n_answer > 12
    harm, safe = (to_exchange(clf, rows[y], 1.0, response_tokens=12) for y in ("harmful", "harmless"))
    ctx = len(clf.context_ids("tell me"))
    # Lead-in in full, then 12 tokens of the answer, for either label.
    assert len(harm.ids) == len(safe.ids) == ctx + n_lead + 12
    assert harm.label_start == ctx + n_lead and safe.label_start is None
    _, mask, resp_mask, y, _ = _collate([harm, safe], clf.tokenizer.pad_token_id)
    assert y.tolist() == [1.0, 0.0]
    assert resp_mask[0].sum() == 12 and resp_mask[0, : ctx + n_lead].sum() == 0  # harmful: the answer only
    assert resp_mask[1].sum() == n_lead + 12 and resp_mask[1, :ctx].sum() == 0  # harmless: lead-in and answer
    assert torch.equal(mask[0], mask[1])
    # Without a lead-in, nothing changes: the answer is scored from its first token.
    bare = to_exchange(clf, rows["harmful"].model_copy(update={"response": answer, "lineage": []}), 1.0, 12)
    assert bare.label_start is None and len(bare.ids) == ctx + 12
    # A lead-in with no answer after it leaves nothing to train on.
    assert to_exchange(clf, rows["harmful"].model_copy(update={"response": lead}), 1.0, 12) is None
    # The backbone's positions cut the answer, never the lead-in: 5 positions left after it give 5 answer tokens, none
    # give no exchange at all.
    short = to_exchange(_with_positions(clf, ctx + n_lead + 5), rows["harmful"], 1.0, 12)
    assert len(short.ids) == ctx + n_lead + 5 and short.label_start == ctx + n_lead
    assert to_exchange(_with_positions(clf, ctx + n_lead), rows["harmful"], 1.0, 12) is None


def test_a_harmful_answer_is_scored_from_its_substance_not_from_the_wrapper_a_voice_put_around_it():
    from ccguard.train.output import to_exchange

    clf = _clf()
    lead = "Disclaimer first: none of this replaces a specialist's judgement.\n\n"
    wrapper = "[DAN]: "
    answer = "The approach would be to plan the job in four phases and rehearse each of them beforehand. " * 3
    steps = [Step(name="voice_persona", family="voice", args={"wrapper": len(wrapper)}),
             Step(name="answer_preamble", family="output", args={"kind": "disclaimer", "chars": len(lead)})]
    row = Example(id="h", prompt="tell me", response=lead + wrapper + answer, label="harmful", group="h", source="seed",
                  lineage=steps)
    ctx = len(clf.context_ids("tell me"))
    n_before = len(clf.response_tokens(lead + wrapper).ids)
    assert n_before > len(clf.response_tokens(lead).ids)
    harm = to_exchange(clf, row, 1.0, response_tokens=12)
    assert harm.label_start == ctx + n_before and len(harm.ids) == ctx + n_before + 12
    # The same wrapper with no lead-in: the loss still starts after it.
    bare = to_exchange(clf, row.model_copy(update={"response": wrapper + answer, "lineage": steps[:1]}), 1.0, 12)
    assert bare.label_start == ctx + len(clf.response_tokens(wrapper).ids)
    # A harmless answer is taught at every token, wrapper included.
    safe = to_exchange(clf, row.model_copy(update={"label": "harmless"}), 1.0, 12)
    assert safe.label_start is None
