"""``privacy``: the upstream never sees the personal data, the client's answer has it back;
regex recognisers, Presidio over the local spaCy model, options, chains, the missing extra."""

import re
import sys

import pytest

from optillm.plugins import privacy

from ..conftest import chat

EMAIL = "jane.doe@example.com"
PHONE = "+1 212-555-0199"
CARD = "4111 1111 1111 1111"
NAME = "John Smith"
SECRET = f"My name is {NAME}, mail me at {EMAIL} or call {PHONE}. Card {CARD}, IP 10.1.2.3."


def echo_placeholders(request):
    """The fake model answers by naming every placeholder it was shown."""
    seen = re.findall(r"<[A-Z_]+_\d+>", " ".join(m.text for m in request.messages))
    return "Noted: " + ", ".join(dict.fromkeys(seen))


def all_text(fake):
    return "\n".join(m.text for r in fake.history for m in r.messages)


def test_regex_only_hides_and_restores(client, fake):
    fake.when(lambda r: True, echo_placeholders)
    r = chat(client, model="privacy-fake", content=SECRET, privacy_ner=False,
             messages=[{"role": "system", "content": f"The operator is {EMAIL}."},
                       {"role": "user", "content": SECRET}])
    assert r.status_code == 200, r.get_json()
    sent = all_text(fake)
    assert len(fake.history) == 1
    for value in (EMAIL, "212-555-0199", CARD, "10.1.2.3"):
        assert value not in sent
    # the same value gets the same placeholder in the system prompt and in the query
    assert fake.history[0].messages[0].text == "The operator is <EMAIL_ADDRESS_1>."
    assert "<EMAIL_ADDRESS_1>" in fake.history[0].messages[1].text
    answer = r.get_json()["choices"][0]
    for value in (EMAIL, CARD, "10.1.2.3"):
        assert value in answer["message"]["content"]
    assert "<" not in answer["message"]["content"]
    assert answer["optillm_privacy"]["anonymized"]["EMAIL_ADDRESS"] == 1
    assert answer["optillm_privacy"]["ner"] is False


def test_ner_hides_names_with_presidio(client, fake):
    fake.when(lambda r: True, echo_placeholders)
    r = chat(client, model="privacy-fake", content=SECRET)
    assert r.status_code == 200, r.get_json()
    sent = all_text(fake)
    assert NAME not in sent and EMAIL not in sent and "<PERSON_1>" in sent
    content = r.get_json()["choices"][0]["message"]["content"]
    assert NAME in content and EMAIL in content


def test_restore_tolerates_mangled_placeholders():
    vault = privacy.Vault()
    ph = vault.placeholder("PERSON", "Ann")
    assert ph == "<PERSON_1>" and vault.placeholder("PERSON", "Ann") == ph
    assert vault.placeholder("PERSON", "Bob") == "<PERSON_2>"
    assert vault.restore("<PERSON_1> met < PERSON_2 >, PERSON_1 and [PERSON_2]; <PERSON_9>") \
        == "Ann met Bob, Ann and Bob; <PERSON_9>"


def test_regex_recognisers_and_overlaps():
    found = privacy.resolve(privacy.regex_findings(
        "card 4111-1111-1111-1111, not a card 1234 5678 9012 3456, ip 999.1.1.1"))
    kinds = [f.entity for f in found]
    # the Luhn check rejects the second number as a card, the IP check the address
    assert kinds.count("CREDIT_CARD") == 1 and found[0].entity == "CREDIT_CARD"
    assert "IP_ADDRESS" not in kinds


def test_inner_approach_runs_on_anonymised_conversation(client, fake):
    fake.when(lambda r: True, echo_placeholders)
    r = chat(client, model="privacy-fake", content=SECRET, privacy_ner=False,
             privacy_approach="re2")
    assert r.status_code == 200, r.get_json()
    assert len(fake.history) == 1 and "Read the question again" in all_text(fake)
    assert EMAIL not in all_text(fake)
    assert EMAIL in r.get_json()["choices"][0]["message"]["content"]


def test_in_a_chain(client, fake):
    # re2 answers with the e-mail address; privacy, the next stage, hides it from its call
    fake.enqueue(f"Write to {EMAIL}", "Sure: <EMAIL_ADDRESS_1>")
    r = chat(client, model="re2&privacy-fake", content="Whom do I write to?",
             privacy_ner=False)
    assert r.status_code == 200, r.get_json()
    assert len(fake.history) == 2
    assert EMAIL not in "\n".join(m.text for m in fake.history[1].messages)
    assert r.get_json()["choices"][0]["message"]["content"] == f"Sure: {EMAIL}"


def test_bad_options_are_400(client):
    assert chat(client, model="privacy-fake", privacy_approach="privacy").status_code == 400
    assert chat(client, model="privacy-fake", privacy_ner="yes").status_code == 400


def test_missing_extra_is_a_clear_error(make_app, fake, monkeypatch):
    privacy.analyzer.cache_clear()
    monkeypatch.setitem(sys.modules, "presidio_analyzer", None)
    try:
        client = make_app().test_client()  # the proxy still starts
        r = chat(client, model="privacy-fake", content=SECRET)
        assert r.status_code == 501
        err = r.get_json()["error"]
        assert err["code"] == "missing_extra" and "pip install 'optillm[privacy]'" in err["message"]
        assert "presidio-analyzer" in err["message"] and "privacy_ner=false" in err["message"]
        assert fake.history == []  # nothing reached the upstream un-anonymised
        assert chat(client, model="privacy-fake", privacy_ner=False).status_code == 200
    finally:
        privacy.analyzer.cache_clear()


@pytest.mark.parametrize("content", ["", "nothing personal here"])
def test_nothing_to_hide(client, fake, content):
    fake.enqueue("fine")
    r = chat(client, model="privacy-fake", content=content, privacy_ner=False)
    assert r.get_json()["choices"][0]["message"]["content"] == "fine"
    assert fake.history[0].messages[-1].text == content
