//! Validated input types: each is parsed once at the edge (HTTP body or socket payload)
//! and carried as a type from then on, so storage and handlers never re-check.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// A user's role, as carried in tokens and stored on the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    Student,
    Professor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Student => "STUDENT",
            Self::Professor => "PROFESSOR",
            Self::Admin => "ADMIN",
        }
    }
}

impl FromStr for Role {
    type Err = AppError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "STUDENT" => Ok(Self::Student),
            "PROFESSOR" => Ok(Self::Professor),
            "ADMIN" => Ok(Self::Admin),
            _ => Err(AppError::validation("role must be STUDENT, PROFESSOR or ADMIN")),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Generates a newtype over `String` whose only constructor is `parse`.
macro_rules! validated_string {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

validated_string!(
    /// A lower-cased email address of plausible shape (at most 254 characters).
    Email
);
validated_string!(
    /// A password of 10-128 characters.
    Password
);
validated_string!(
    /// A display name: 1-100 characters after trimming, no control characters.
    DisplayName
);
validated_string!(
    /// A course title: 1-200 characters after trimming, no control characters.
    CourseTitle
);
validated_string!(
    /// Message content: 1-`max` characters after trimming; newline and tab are the only
    /// control characters allowed. The trimmed text is what is stored and delivered.
    MessageContent
);
validated_string!(
    /// An idempotency key chosen by the client: 1-64 of `A-Z a-z 0-9 _ -`.
    ClientMsgId
);
validated_string!(
    /// A chat channel within a course: 1-64 of `A-Z a-z 0-9 _ -`.
    ChannelId
);
validated_string!(
    /// A course document's id: 1-128 of `A-Z a-z 0-9 _ - . :`.
    DocumentId
);
validated_string!(
    /// A notification title (1-200 characters) or body (1-4,000), as `MessageContent`.
    NotificationText
);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, AppError> {
        let email = raw.trim().to_lowercase();
        let valid = email.len() <= 254
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && matches!(email.split_once('@'), Some((local, domain))
                if !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
                    && !domain.ends_with('.') && !domain.contains('@'));
        if valid { Ok(Self(email)) } else { Err(AppError::validation("email is not a valid address")) }
    }
}

impl Password {
    pub fn parse(raw: &str) -> Result<Self, AppError> {
        match raw.chars().count() {
            10..=128 => Ok(Self(raw.to_owned())),
            _ => Err(AppError::validation("password must be 10 to 128 characters")),
        }
    }
}

/// Trims, then checks length and control characters; shared by the text types below.
fn parse_text(raw: &str, field: &str, max: usize, allow_newlines: bool) -> Result<String, AppError> {
    let text = raw.trim();
    let len = text.chars().count();
    if len == 0 {
        return Err(AppError::validation(format!("{field} must not be empty")));
    }
    if len > max {
        return Err(AppError::validation(format!("{field} must be at most {max} characters")));
    }
    let allowed = |c: char| allow_newlines && (c == '\n' || c == '\t');
    if text.chars().any(|c| c.is_control() && !allowed(c)) {
        return Err(AppError::validation(format!("{field} must not contain control characters")));
    }
    Ok(text.to_owned())
}

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, AppError> {
        parse_text(raw, "displayName", 100, false).map(Self)
    }
}

impl CourseTitle {
    pub fn parse(raw: &str) -> Result<Self, AppError> {
        parse_text(raw, "title", 200, false).map(Self)
    }
}

impl MessageContent {
    pub fn parse(raw: &str, max_chars: usize) -> Result<Self, AppError> {
        parse_text(raw, "content", max_chars, true).map(Self)
    }
}

/// Checks an identifier chosen by a client: ASCII letters, digits, `_`, `-` and `extra`.
fn parse_key(raw: &str, field: &str, max: usize, extra: &[u8]) -> Result<String, AppError> {
    let valid = (1..=max).contains(&raw.len())
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || extra.contains(&b));
    if valid {
        Ok(raw.to_owned())
    } else {
        let extra: String = extra.iter().map(|&b| format!(" {}", b as char)).collect();
        Err(AppError::validation(format!("{field} must be 1 to {max} characters of A-Z a-z 0-9 _ -{extra}")))
    }
}

impl ClientMsgId {
    pub fn parse(raw: &str) -> Result<Self, AppError> {
        parse_key(raw, "clientMsgId", 64, &[]).map(Self)
    }
}

impl ChannelId {
    pub fn parse(raw: &str) -> Result<Self, AppError> {
        parse_key(raw, "channelId", 64, &[]).map(Self)
    }
}

impl DocumentId {
    pub fn parse(raw: &str) -> Result<Self, AppError> {
        parse_key(raw, "documentId", 128, b".:").map(Self)
    }
}

impl NotificationText {
    pub fn title(raw: &str) -> Result<Self, AppError> {
        parse_text(raw, "title", 200, false).map(Self)
    }

    pub fn body(raw: &str) -> Result<Self, AppError> {
        parse_text(raw, "message", 4000, true).map(Self)
    }
}

/// Parses a path or payload id; a malformed id is a validation error, per the contract.
pub fn parse_id(raw: &str, field: &str) -> Result<uuid::Uuid, AppError> {
    uuid::Uuid::parse_str(raw).map_err(|_| AppError::validation(format!("{field} must be a UUID")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(Email::parse(" Ada@Example.ORG ").unwrap().as_str(), "ada@example.org");
        for bad in ["", "ada", "ada@", "@example.org", "ada@example", "a b@example.org", "a@b@c.org", "ada@.org"] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn passwords_are_counted_in_characters() {
        assert!(Password::parse("123456789").is_err());
        assert!(Password::parse("1234567890").is_ok());
        assert!(Password::parse(&"é".repeat(128)).is_ok());
        assert!(Password::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn content_is_trimmed_bounded_and_free_of_control_characters() {
        assert_eq!(MessageContent::parse("  hi\n there\t ", 10).unwrap().as_str(), "hi\n there");
        assert!(MessageContent::parse(" \n\t ", 10).is_err());
        assert!(MessageContent::parse("bell\u{7}", 10).is_err());
        assert!(MessageContent::parse(&"x".repeat(11), 10).is_err());
        assert!(MessageContent::parse(&"é".repeat(10), 10).is_ok());
        assert!(DisplayName::parse("two\nlines").is_err());
    }

    #[test]
    fn client_msg_ids_are_restricted() {
        assert!(ClientMsgId::parse("abc_DEF-123").is_ok());
        assert!(ClientMsgId::parse("").is_err());
        assert!(ClientMsgId::parse(&"a".repeat(65)).is_err());
        assert!(ClientMsgId::parse("has space").is_err());
        assert!(ClientMsgId::parse("ünï").is_err());
        assert!(DocumentId::parse("chapter-1.pdf:page:3").is_ok());
        assert!(DocumentId::parse("../etc/passwd").is_err());
        assert!(ChannelId::parse("general").is_ok());
    }

    #[test]
    fn roles_round_trip() {
        for role in [Role::Student, Role::Professor, Role::Admin] {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("SERVICE".parse::<Role>().is_err());
    }

    proptest::proptest! {
        /// Every parser of client input answers any string with a value or a
        /// refusal, never a panic, and what it accepts is within its bounds.
        #[test]
        fn parsers_take_any_input_without_panicking(raw in ".{0,300}") {
            if let Ok(email) = Email::parse(&raw) {
                proptest::prop_assert!(email.as_str().len() <= 254);
            }
            let _ = Password::parse(&raw);
            let _ = DisplayName::parse(&raw);
            let _ = CourseTitle::parse(&raw);
            if let Ok(content) = MessageContent::parse(&raw, 100) {
                proptest::prop_assert!(content.as_str().chars().count() <= 100);
            }
            let _ = ClientMsgId::parse(&raw);
            let _ = ChannelId::parse(&raw);
            let _ = DocumentId::parse(&raw);
            let _ = NotificationText::title(&raw);
            let _ = NotificationText::body(&raw);
            let _ = parse_id(&raw, "field");
            let _ = raw.parse::<Role>();
        }
    }
}
