from careloop.engine.i18n import missing_translations, normalise_locale, t


def test_every_message_exists_in_both_languages() -> None:
    assert missing_translations() == {"zh-CN": [], "en": []}


def test_locale_negotiation_and_fallback() -> None:
    assert normalise_locale("en-US,en;q=0.9") == "en"
    assert normalise_locale("zh-TW") == "zh-CN"
    assert normalise_locale(None) == "zh-CN"
    assert t("common.required", "fr") == "此项为必填项"
    assert t("no.such.key", "en") == "no.such.key"
