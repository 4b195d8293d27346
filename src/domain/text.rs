//! Text shown to people, in one language or in several: a plain string, or a map of
//! locale tag to string, resolved per request (exact tag, then its language, then the
//! definition's default locale).

use std::collections::BTreeMap;

use serde_json::Value;

/// The most locales one text may have.
pub const MAX_LOCALES: usize = 64;
/// The longest locale tag accepted (BCP 47 tags in use are far shorter).
pub const MAX_LOCALE_LEN: usize = 35;
/// The default locale of a definition that declares none.
pub const FALLBACK_LOCALE: &str = "en";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalizedText {
    /// The same text in every locale.
    Plain(String),
    /// Locale tag, as written, to text. Validation guarantees the default locale is there.
    Localized(BTreeMap<String, String>),
}

impl LocalizedText {
    pub fn plain(text: impl Into<String>) -> Self {
        LocalizedText::Plain(text.into())
    }

    /// The text for `locale`: the exact tag, then its language (`fr-CA` -> `fr`), then
    /// `default_locale`. Tags compare case-insensitively, and `_` reads as `-`.
    pub fn resolve(&self, locale: Option<&str>, default_locale: &str) -> &str {
        match self {
            LocalizedText::Plain(text) => text,
            LocalizedText::Localized(texts) => {
                let wanted = locale.map(normalize);
                let found = wanted
                    .as_deref()
                    .and_then(|w| self.get(w).or_else(|| self.get(language(w))))
                    .or_else(|| self.get(default_locale));
                // A stored map always has its default (validation); the first text is only
                // a guard for data written under other rules, never an error on a read.
                found.or_else(|| texts.values().next().map(String::as_str)).unwrap_or("")
            }
        }
    }

    /// The text in exactly this locale (case-insensitive); a plain text has none.
    pub fn get(&self, locale: &str) -> Option<&str> {
        match self {
            LocalizedText::Plain(_) => None,
            LocalizedText::Localized(texts) => {
                texts.iter().find(|(tag, _)| tag.eq_ignore_ascii_case(locale)).map(|(_, t)| t.as_str())
            }
        }
    }

    /// The text in `locale` when it has one; a plain text counts as the default locale's.
    pub fn text_in(&self, locale: &str, default_locale: &str) -> Option<&str> {
        match self {
            LocalizedText::Plain(text) => locale.eq_ignore_ascii_case(default_locale).then_some(text.as_str()),
            LocalizedText::Localized(_) => self.get(locale),
        }
    }

    /// The locales this text is written in; none for a plain text.
    pub fn locales(&self) -> impl Iterator<Item = &str> {
        let texts = match self {
            LocalizedText::Plain(_) => None,
            LocalizedText::Localized(texts) => Some(texts.keys().map(String::as_str)),
        };
        texts.into_iter().flatten()
    }

    /// This text with `locale` set to `text` (a plain text becomes a map, its string
    /// the default locale's).
    pub fn with(&self, locale: &str, text: &str, default_locale: &str) -> LocalizedText {
        let mut texts = match self {
            LocalizedText::Plain(plain) => BTreeMap::from([(default_locale.to_string(), plain.clone())]),
            LocalizedText::Localized(texts) => texts.clone(),
        };
        let tag = texts.keys().find(|t| t.eq_ignore_ascii_case(locale)).cloned().unwrap_or_else(|| locale.into());
        texts.insert(tag, text.to_string());
        LocalizedText::Localized(texts)
    }

    /// As written in a definition: a string, or an object of locale to string.
    pub fn to_json(&self) -> Value {
        match self {
            LocalizedText::Plain(text) => Value::String(text.clone()),
            LocalizedText::Localized(texts) => {
                Value::Object(texts.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
            }
        }
    }
}

impl From<&str> for LocalizedText {
    fn from(text: &str) -> Self {
        LocalizedText::Plain(text.into())
    }
}

impl From<String> for LocalizedText {
    fn from(text: String) -> Self {
        LocalizedText::Plain(text)
    }
}

/// The locale a subject asked for once and for all: its `locale` attribute.
pub fn subject_locale(attributes: &Value) -> Option<&str> {
    attributes.get("locale").and_then(Value::as_str)
}

/// A locale tag in the shape of BCP 47: subtags of 1 to 8 letters or digits joined by
/// `-`, the first 2 to 8 letters (`en`, `fr-CA`, `zh-Hant-TW`, `es-419`).
pub fn is_valid_locale(tag: &str) -> bool {
    let mut subtags = tag.split('-');
    tag.len() <= MAX_LOCALE_LEN
        && subtags.next().is_some_and(|l| (2..=8).contains(&l.len()) && l.chars().all(|c| c.is_ascii_alphabetic()))
        && subtags.all(|s| (1..=8).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// `fr_CA` -> `fr-CA`: the spelling some platforms send.
fn normalize(tag: &str) -> String {
    tag.replace('_', "-")
}

/// The language subtag: `fr-CA` -> `fr`.
pub fn language(tag: &str) -> &str {
    tag.split('-').next().unwrap_or(tag)
}

/// The locale a request resolves to among the ones a definition is written in: the exact
/// tag, then its language, then the default. What `resolve` picks per text, for a
/// definition whose locales are complete (validation makes them so).
pub fn choose_locale<'a>(available: &[&'a str], requested: Option<&str>, default_locale: &'a str) -> &'a str {
    let find = |want: &str| available.iter().copied().find(|a| a.eq_ignore_ascii_case(want));
    requested.map(normalize).and_then(|r| find(&r).or_else(|| find(language(&r)))).unwrap_or(default_locale)
}

/// A locale other than the default that some texts have and this text lacks, for every
/// such pair: (index into `texts`, locale). Plain texts count as the default's.
pub fn missing_translations(texts: &[&LocalizedText], default_locale: &str) -> Vec<(usize, String)> {
    let mut locales: Vec<&str> = Vec::new();
    for text in texts {
        for tag in text.locales() {
            if !tag.eq_ignore_ascii_case(default_locale) && !locales.iter().any(|l| l.eq_ignore_ascii_case(tag)) {
                locales.push(tag);
            }
        }
    }
    locales.sort_unstable();
    let mut missing = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        for locale in &locales {
            if text.get(locale).is_none() {
                missing.push((i, locale.to_string()));
            }
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(pairs: &[(&str, &str)]) -> LocalizedText {
        LocalizedText::Localized(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn resolves_the_exact_tag_then_the_language_then_the_default() {
        let t = texts(&[("en", "Hello"), ("fr", "Bonjour"), ("fr-CA", "Allô"), ("pt-BR", "Olá")]);
        assert_eq!(t.resolve(Some("fr-CA"), "en"), "Allô");
        assert_eq!(t.resolve(Some("fr-ca"), "en"), "Allô", "tags compare case-insensitively");
        assert_eq!(t.resolve(Some("fr_CA"), "en"), "Allô", "an underscore reads as a hyphen");
        assert_eq!(t.resolve(Some("fr-BE"), "en"), "Bonjour", "the language when the region is missing");
        assert_eq!(t.resolve(Some("fr"), "en"), "Bonjour");
        assert_eq!(t.resolve(Some("pt"), "en"), "Hello", "a language does not fall to one of its regions");
        assert_eq!(t.resolve(Some("de-AT"), "en"), "Hello", "then the default");
        assert_eq!(t.resolve(None, "en"), "Hello");
        assert_eq!(t.resolve(None, "fr"), "Bonjour", "the default is the definition's");
        assert_eq!(LocalizedText::plain("Hi").resolve(Some("fr"), "en"), "Hi");
    }

    #[test]
    fn the_chosen_locale_follows_the_same_chain() {
        let available = ["en", "fr", "fr-CA"];
        assert_eq!(choose_locale(&available, Some("FR-ca"), "en"), "fr-CA");
        assert_eq!(choose_locale(&available, Some("fr-BE"), "en"), "fr");
        assert_eq!(choose_locale(&available, Some("de"), "en"), "en");
        assert_eq!(choose_locale(&available, None, "en"), "en");
    }

    #[test]
    fn locale_tags() {
        for ok in ["en", "fr-CA", "zh-Hant-TW", "es-419", "gsw"] {
            assert!(is_valid_locale(ok), "{ok}");
        }
        for bad in ["", "e", "en-", "-en", "en_US", "1a", "en US", "en-toolongsubtag", &"a".repeat(40)] {
            assert!(!is_valid_locale(bad), "{bad}");
        }
    }

    #[test]
    fn a_locale_missing_a_text_the_default_has_is_reported() {
        let title = texts(&[("en", "Hello"), ("fr", "Bonjour"), ("de", "Hallo")]);
        let plain = LocalizedText::plain("Only English");
        let partial = texts(&[("en", "Bye"), ("fr", "Au revoir")]);
        let missing = missing_translations(&[&title, &plain, &partial], "en");
        assert_eq!(missing, [(1, "de".into()), (1, "fr".into()), (2, "de".into())]);
        assert!(missing_translations(&[&plain, &LocalizedText::plain("x")], "en").is_empty());
    }

    #[test]
    fn setting_a_translation_keeps_the_default() {
        let t = LocalizedText::plain("Hello").with("fr", "Bonjour", "en");
        assert_eq!(t, texts(&[("en", "Hello"), ("fr", "Bonjour")]));
        assert_eq!(t.with("FR", "Salut", "en"), texts(&[("en", "Hello"), ("fr", "Salut")]));
        assert_eq!(t.text_in("en", "en"), Some("Hello"));
        assert_eq!(LocalizedText::plain("Hello").text_in("en", "en"), Some("Hello"));
        assert_eq!(LocalizedText::plain("Hello").text_in("fr", "en"), None);
    }
}
