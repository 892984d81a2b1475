"""Subject and body -> request type and the rule that matched, as tables."""

import pytest

from ticketure_mail.config import DEFAULT_TYPE_RULES, TypeRule
from ticketure_mail.model import RequestType
from ticketure_mail.request_types import TypeRules, own_words

DEFAULTS = TypeRules(DEFAULT_TYPE_RULES)
S, W, P, A = (RequestType.STANDARD, RequestType.WEB_REFINEMENT, RequestType.PRODUCT_FEEDBACK,
              RequestType.API_REQUEST)


@pytest.mark.parametrize(
    ("subject", "body", "expected", "rule", "where"),
    [
        ("Printer on floor 2 is jammed", "Hello, please help.", S, None, None),
        ("Need an API key", "", A, "api-request", "subject"),
        ("need an api-key", "", A, "api-request", "subject"),  # a hyphen stands for the space
        ("Question", "Can you set up a webhook for refunds?", A, "api-request", "body"),
        ("Change the fonts on the homepage", "", W, "web-refinement", "subject"),
        ("Typo on the checkout page", "", W, "web-refinement", "subject"),
        ("Found a bug", "", P, "product-feedback", "subject"),
        ("CMS does not save", "", P, "platform-part", "subject"),
        # Whole words only: no "API" in "rapid", no "bug" in "debugging", no "font" in "fontaine".
        ("Rapid help needed", "We are debugging at Fontaine Hall.", S, None, None),
        # The first rule in the config's order wins: a cart rule question that mentions an integration.
        ("Cart rule change for the API integration", "", S, "standard-support", "subject"),
        # A rule that looks in the subject only ignores the body (CRM in a signature line).
        ("Hello", "Thanks.\nJo Bloggs, CRM manager", S, None, None),
        # Quoted text and signatures are someone else's words.
        ("Re: order", "Thanks!\n> we found a bug in the webhook\n", S, None, None),
        ("Order", "Thanks!\n-- \nJo, integration lead", S, None, None),
        ("Order", "Thanks!\n\nOn Mon, 3 Dec 2026, Jo <jo@x.com> wrote:\nthe font is wrong", S, None, None),
        ("Order", "the font is wrong\n-----Original Message-----\nbug", W, "web-refinement", "body"),
    ],
)
def test_default_rules(subject: str, body: str, expected: RequestType, rule: str | None, where: str | None) -> None:
    match = DEFAULTS.classify(subject, body)
    assert (match.request_type, match.rule, match.where) == (expected, rule, where)


def test_the_word_is_reported_as_written() -> None:
    match = DEFAULTS.classify("Please change the COLOURS", "")
    assert match.word == "COLOURS"


def test_configured_fragments_are_escaped() -> None:
    rules = TypeRules([TypeRule("cpp", "api_request", ("C++", "a.b", "(beta)"))])
    assert rules.classify("Our C++ client", "").rule == "cpp"
    assert rules.classify("axb", "").rule is None  # "." is a dot, not any character
    assert rules.classify("the (beta) site", "").rule == "cpp"
    assert rules.classify("the beta site", "").rule is None


def test_order_decides_between_rules() -> None:
    first = TypeRule("web", "web_refinement", ("font",))
    second = TypeRule("bug", "product_feedback", ("bug",))
    assert TypeRules([first, second]).classify("font bug", "").rule == "web"
    assert TypeRules([second, first]).classify("font bug", "").rule == "bug"


def test_a_rule_may_look_in_the_body_only() -> None:
    rules = TypeRules([TypeRule("body-only", "api_request", ("endpoint",), ("body",))])
    assert rules.classify("endpoint", "").rule is None
    assert rules.classify("hi", "which endpoint?").rule == "body-only"


def test_a_separator_only_word_matches_itself_not_everything() -> None:
    rules = TypeRules([TypeRule("dash", "api_request", ("-",))])
    assert rules.classify("no dashes here", "").rule is None


def test_own_words_keeps_what_the_sender_wrote() -> None:
    assert own_words("mine\n> theirs\nmine too\n-- \nsig") == "mine\nmine too"
