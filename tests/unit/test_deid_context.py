"""The case normalisation behind the de-identifier's second pass (client_agent/deid_context.py)."""

from __future__ import annotations

from client_agent.deid_context import case_normalised

ENGLISH = frozenset({"bed", "came", "from", "last", "say", "son", "transfer", "lives"})


def test_a_capitals_line_is_title_cased_in_place() -> None:
    text = "TRANSFER FROM OGUNLEYE PEDIATRICS\nDr. Smith saw her."

    out = case_normalised(text, ENGLISH)

    assert out == "Transfer From Ogunleye Pediatrics\nDr. Smith saw her."


def test_a_lower_case_line_capitalises_only_words_that_are_not_english() -> None:
    text = "bed 12 is agnieszka szczepańska, 100F, came in from riverbend; son yetunde says hi"

    out = case_normalised(text, ENGLISH)

    assert out == "bed 12 is Agnieszka Szczepańska, 100F, came in from Riverbend; son Yetunde says hi"


def test_a_word_whose_title_case_changes_its_length_stays() -> None:
    text = "bed is ŉana kovač\n"  # "ŉ".upper() is two characters: that word keeps its case

    out = case_normalised(text, ENGLISH)

    assert out == "bed is ŉana Kovač\n"


def test_a_mixed_case_line_is_left_alone() -> None:
    text = "Seen by Dr. Okafor at Mercy Valley Medical Center on 3 March."

    assert case_normalised(text, ENGLISH) == text
