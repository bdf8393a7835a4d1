//! The strings that name things (queues, agents, tags, clients, secrets, jobs) become
//! database keys, path segments, cookie values, metric labels and headings in the pages.
//! This is the one place their limits are set: a bounded length, and no control
//! characters (a newline in a queue name breaks logs and metrics; a 5 MB one, the pages).

/// What a name names; each kind has its own length limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Queue,
    Agent,
    Tag,
    /// A client id (an OIDC user's is an e-mail address, up to 254 characters).
    Client,
    /// The path of a secret in its owner's store.
    SecretPath,
    /// A job's `name`, and the short descriptive fields agents report about themselves.
    Label,
}

/// Why a name was refused, worded like the reference's validation messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong(usize),
    ControlCharacter,
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameError::Empty => write!(f, "Shorter than minimum length 1."),
            NameError::TooLong(max) => write!(f, "Longer than maximum length {max}."),
            NameError::ControlCharacter => write!(f, "Must not contain control characters."),
        }
    }
}

impl NameKind {
    /// The most characters (not bytes) a name of this kind may have.
    pub const fn max_chars(self) -> usize {
        match self {
            NameKind::Queue | NameKind::Agent | NameKind::Tag => 200,
            NameKind::Client | NameKind::SecretPath => 256,
            NameKind::Label => 1024,
        }
    }

    /// Whether the empty string is a valid name of this kind. Tags and labels may be
    /// empty, as the reference allows.
    const fn may_be_empty(self) -> bool {
        matches!(self, NameKind::Tag | NameKind::Label)
    }

    /// What to call a name of this kind in an error message.
    pub const fn describe(self) -> &'static str {
        match self {
            NameKind::Queue => "queue name",
            NameKind::Agent => "agent name",
            NameKind::Tag => "tag",
            NameKind::Client => "client id",
            NameKind::SecretPath => "secret path",
            NameKind::Label => "label",
        }
    }

    pub fn check(self, name: &str) -> Result<(), NameError> {
        if name.is_empty() && !self.may_be_empty() {
            return Err(NameError::Empty);
        }
        // Bytes bound characters from above: most names skip the count.
        if name.len() > self.max_chars() && name.chars().count() > self.max_chars() {
            return Err(NameError::TooLong(self.max_chars()));
        }
        if name.chars().any(char::is_control) {
            return Err(NameError::ControlCharacter);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_in_characters_and_free_of_control_characters() {
        let longest = "é".repeat(NameKind::Queue.max_chars());
        assert_eq!(NameKind::Queue.check(&longest), Ok(()));
        assert_eq!(
            NameKind::Queue.check(&format!("{longest}x")),
            Err(NameError::TooLong(200))
        );
        assert_eq!(NameKind::Queue.check(""), Err(NameError::Empty));
        assert_eq!(NameKind::Tag.check(""), Ok(()));
        for bad in ["a\nb", "tab\t", "nul\0", "del\u{7f}", "c1\u{85}"] {
            assert_eq!(
                NameKind::Agent.check(bad),
                Err(NameError::ControlCharacter),
                "{bad:?}"
            );
        }
        assert_eq!(NameKind::Client.check("dev@lab.example"), Ok(()));
    }
}
