import pytest

from ccguard.errors import CcguardError
from ccguard.records import Example, assign_splits, read_examples, render_prompt, write_jsonl


def _ex(i: int, group: str) -> Example:
    return Example(id=f"e{i}", prompt=f"text {i}", label="harmless", source="seed", group=group)


def test_variants_of_one_base_share_a_split():
    exs = [_ex(i, f"g{i % 50}") for i in range(500)]
    out = assign_splits(exs, seed=1)
    by_group: dict[str, set[str]] = {}
    for e in out:
        by_group.setdefault(e.group, set()).add(e.split)
    assert all(len(s) == 1 for s in by_group.values())
    assert {e.split for e in out} == {"train", "val", "test"}
    assert [e.split for e in assign_splits(exs, seed=1)] == [e.split for e in out]


def test_jsonl_round_trip_and_bad_line(tmp_path):
    p = tmp_path / "x.jsonl"
    write_jsonl(p, [_ex(1, "a"), _ex(2, "b")])
    assert [e.id for e in read_examples(p)] == ["e1", "e2"]
    p.write_text(p.read_text() + '{"id": "e3", "prompt": \n')
    with pytest.raises(CcguardError, match=r"x\.jsonl:3: invalid JSON"):
        read_examples(p)


def test_render_chat_prompt():
    from ccguard.records import Message

    text = render_prompt([Message(role="system", content="be nice"), Message(role="user", content="hi")])
    assert text == "system: be nice\nuser: hi"
