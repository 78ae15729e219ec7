//! Parse, don't validate: raw command input becomes these types or a per-field
//! error, so an invalid value cannot exist past the command API's edge.

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::sync::LazyLock;

use email_address::EmailAddress;

pub mod image;

pub const HANDLE_LENGTH: std::ops::RangeInclusive<usize> = 3..=30;
pub const DISPLAY_NAME_MAX: usize = 80;
pub const BIO_MAX: usize = 500;
pub const PASSWORD_LENGTH: std::ops::RangeInclusive<usize> = 10..=128;
pub const TITLE_MAX: usize = 200;
pub const BODY_MAX: usize = 100_000;
pub const COMMENT_MAX: usize = 10_000;
pub const TAGS_MAX: usize = 10;
pub const TAG_LENGTH: std::ops::RangeInclusive<usize> = 1..=30;
pub const SLUG_MAX: usize = 100;
pub const EMAIL_MAX: usize = 254;

static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("common_passwords.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
});

/// Per-field messages, gathered so a client learns every problem at once.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FieldErrors(BTreeMap<String, String>);

impl FieldErrors {
    pub fn new() -> FieldErrors {
        FieldErrors::default()
    }

    /// Keeps the value, or records the message under `field`.
    pub fn check<T>(&mut self, field: &str, parsed: Result<T, String>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(message) => {
                self.0.entry(field.to_owned()).or_insert(message);
                None
            }
        }
    }

    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_owned())
            .or_insert_with(|| message.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// "email, handle": for messages (the details are per field).
    pub fn field_names(&self) -> String {
        self.0
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn into_map(self) -> BTreeMap<String, String> {
        self.0
    }
}

fn char_count(value: &str) -> usize {
    value.chars().count()
}

fn has_control_chars(value: &str) -> bool {
    value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
}

/// An email address, lower-cased so that uniqueness ignores case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Email, String> {
        let value = raw.trim().to_lowercase();
        if value.is_empty() {
            return Err("is required".into());
        }
        if char_count(&value) > EMAIL_MAX {
            return Err(format!("must be at most {EMAIL_MAX} characters"));
        }
        // A deliverable address has a dot in its domain; the RFC alone allows "a@b".
        let domain_has_dot = value
            .rsplit_once('@')
            .is_some_and(|(_, domain)| domain.contains('.'));
        if !EmailAddress::is_valid(&value) || !domain_has_dot {
            return Err("must be an email address like name@example.com".into());
        }
        Ok(Email(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A handle: the user's unique, permanent name in URLs and mentions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handle(String);

impl Handle {
    pub fn parse(raw: &str) -> Result<Handle, String> {
        let value = raw.trim().to_lowercase();
        if !HANDLE_LENGTH.contains(&char_count(&value)) {
            return Err(format!(
                "must be {} to {} characters",
                HANDLE_LENGTH.start(),
                HANDLE_LENGTH.end()
            ));
        }
        if !value.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err("must start with a letter".into());
        }
        if !value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err("may contain only letters a-z, digits and underscores".into());
        }
        Ok(Handle(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<DisplayName, String> {
        let value = raw.trim();
        if value.is_empty() {
            return Err("is required".into());
        }
        if char_count(value) > DISPLAY_NAME_MAX {
            return Err(format!("must be at most {DISPLAY_NAME_MAX} characters"));
        }
        if value.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(DisplayName(value.to_owned()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// An optional bio; empty text clears it.
pub fn parse_bio(raw: &str) -> Result<Option<String>, String> {
    let value = raw.trim();
    if char_count(value) > BIO_MAX {
        return Err(format!("must be at most {BIO_MAX} characters"));
    }
    if has_control_chars(value) {
        return Err("must not contain control characters".into());
    }
    Ok((!value.is_empty()).then(|| value.to_owned()))
}

/// A password fit to be hashed: long enough, not a well-known one.
pub struct Password<'a>(&'a str);

impl<'a> Password<'a> {
    pub fn parse(raw: &'a str, email: &str, handle: &str) -> Result<Password<'a>, String> {
        let length = char_count(raw);
        if !PASSWORD_LENGTH.contains(&length) {
            return Err(format!(
                "must be {} to {} characters",
                PASSWORD_LENGTH.start(),
                PASSWORD_LENGTH.end()
            ));
        }
        let lowered = raw.to_lowercase();
        if COMMON_PASSWORDS.contains(lowered.as_str()) {
            return Err("is too common; choose a less guessable password".into());
        }
        let local_part = email.split('@').next().unwrap_or_default();
        if lowered == email
            || lowered == handle
            || (!local_part.is_empty() && lowered == local_part)
        {
            return Err("must not be your email or handle".into());
        }
        Ok(Password(raw))
    }

    pub fn expose(&self) -> &'a str {
        self.0
    }
}

pub fn parse_title(raw: &str) -> Result<String, String> {
    let value = raw.trim();
    if value.is_empty() {
        return Err("is required".into());
    }
    if char_count(value) > TITLE_MAX {
        return Err(format!("must be at most {TITLE_MAX} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(value.to_owned())
}

pub fn parse_body(raw: &str) -> Result<String, String> {
    parse_prose(raw, BODY_MAX)
}

pub fn parse_comment_body(raw: &str) -> Result<String, String> {
    parse_prose(raw, COMMENT_MAX)
}

fn parse_prose(raw: &str, max: usize) -> Result<String, String> {
    if raw.trim().is_empty() {
        return Err("is required".into());
    }
    if char_count(raw) > max {
        return Err(format!("must be at most {max} characters"));
    }
    if has_control_chars(raw) {
        return Err("must not contain control characters".into());
    }
    Ok(raw.to_owned())
}

/// Tags: lower-cased, de-duplicated, in the order given.
pub fn parse_tags(raw: &[String]) -> Result<Vec<String>, String> {
    let mut tags: Vec<String> = Vec::with_capacity(raw.len());
    for tag in raw {
        let tag = tag.trim().to_lowercase();
        if !TAG_LENGTH.contains(&char_count(&tag)) {
            return Err(format!(
                "each tag must be {} to {} characters",
                TAG_LENGTH.start(),
                TAG_LENGTH.end()
            ));
        }
        if !tag
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            || tag.starts_with('-')
            || tag.ends_with('-')
        {
            return Err(format!(
                "tag \"{tag}\" may contain only letters a-z, digits and inner hyphens"
            ));
        }
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    if tags.len() > TAGS_MAX {
        return Err(format!("at most {TAGS_MAX} tags"));
    }
    Ok(tags)
}

pub fn parse_slug(raw: &str) -> Result<String, String> {
    let value = raw.trim().to_lowercase();
    if value.is_empty() || char_count(&value) > SLUG_MAX {
        return Err(format!("must be 1 to {SLUG_MAX} characters"));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || value.starts_with('-')
        || value.ends_with('-')
        || value.contains("--")
    {
        return Err("may contain only letters a-z, digits and single inner hyphens".into());
    }
    Ok(value)
}

/// A slug derived from a title: ASCII letters and digits joined by hyphens.
pub fn slugify(title: &str) -> String {
    let mut slug = String::new();
    for word in title
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| !word.is_empty())
    {
        if slug.len() + word.len() + 1 > 80 {
            break;
        }
        if !slug.is_empty() {
            slug.push('-');
        }
        slug.push_str(&word.to_ascii_lowercase());
    }
    if slug.is_empty() {
        "post".to_owned()
    } else {
        slug
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse(" Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
        assert!(Email::parse("not-an-email").is_err());
        assert!(Email::parse("ada@localhost").is_err());
        assert!(Email::parse("").is_err());
    }

    #[test]
    fn handles_are_lowercase_letters_digits_and_underscores() {
        assert_eq!(Handle::parse("Ada_99").unwrap().as_str(), "ada_99");
        assert!(Handle::parse("ab").is_err());
        assert!(Handle::parse("9lives").is_err());
        assert!(Handle::parse("no-dashes").is_err());
        assert!(Handle::parse(&"a".repeat(31)).is_err());
    }

    #[test]
    fn common_and_short_passwords_are_refused() {
        assert!(Password::parse("short", "a@b.co", "ada").is_err());
        assert!(Password::parse("password123", "a@b.co", "ada").is_err());
        assert!(Password::parse("Password123", "a@b.co", "ada").is_err());
        assert!(Password::parse("ada@example.com", "ada@example.com", "ada").is_err());
        assert!(Password::parse("correct horse battery", "a@b.co", "ada").is_ok());
    }

    #[test]
    fn tags_are_normalised_deduplicated_and_bounded() {
        assert_eq!(
            parse_tags(&["Rust".into(), "rust".into(), "event-sourcing".into()]).unwrap(),
            vec!["rust", "event-sourcing"]
        );
        assert!(parse_tags(&["-bad".into()]).is_err());
        assert!(parse_tags(&["with space".into()]).is_err());
        let eleven: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
        assert!(parse_tags(&eleven).is_err());
    }

    #[test]
    fn slugs_come_from_titles() {
        assert_eq!(
            slugify("Hello, World! Event sourcing 101"),
            "hello-world-event-sourcing-101"
        );
        assert_eq!(slugify("¡¿!"), "post");
    }

    proptest! {
        #[test]
        fn a_derived_slug_is_always_a_valid_slug(title in ".{0,300}") {
            prop_assert!(parse_slug(&slugify(&title)).is_ok());
        }

        #[test]
        fn parsers_never_panic(text in ".{0,400}") {
            let _ = Email::parse(&text);
            let _ = Handle::parse(&text);
            let _ = DisplayName::parse(&text);
            let _ = Password::parse(&text, "a@b.co", "ada");
            let _ = parse_title(&text);
            let _ = parse_tags(std::slice::from_ref(&text));
        }
    }
}
