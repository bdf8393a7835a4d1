//! Hides secret values in phase output: each occurrence becomes `**<first 6 hex digits of
//! its SHA-256>**`, the reference's format, so the same secret always reads the same.
//! Unlike the reference, values are matched literally, not as regular expressions, and
//! empty values are ignored rather than failing the job.

use std::borrow::Cow;

use regex_lite::{Captures, Regex};
use sha2::{Digest, Sha256};

pub enum Masker {
    /// All secrets in one alternation, longest first.
    Pattern(Regex),
    /// Secrets too large for a pattern, replaced one after the other, longest first.
    Literal(Vec<String>),
}

impl Masker {
    /// `None` when there is nothing to hide.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Option<Masker> {
        let mut values: Vec<&str> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        if values.is_empty() {
            return None;
        }
        // Longest first, so a secret that contains another is hidden whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        let alternation: Vec<String> = values.iter().map(|v| regex_lite::escape(v)).collect();
        Some(match Regex::new(&alternation.join("|")) {
            Ok(pattern) => Masker::Pattern(pattern),
            Err(_) => Masker::Literal(values.into_iter().map(str::to_string).collect()),
        })
    }

    pub fn mask<'t>(&self, text: &'t str) -> Cow<'t, str> {
        match self {
            Masker::Pattern(pattern) => {
                pattern.replace_all(text, |found: &Captures| mask_of(&found[0]))
            }
            Masker::Literal(values) => {
                let mut masked = Cow::Borrowed(text);
                for value in values {
                    if masked.contains(value.as_str()) {
                        masked = Cow::Owned(masked.replace(value.as_str(), &mask_of(value)));
                    }
                }
                masked
            }
        }
    }
}

fn mask_of(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let hex: String = digest.iter().take(3).map(|b| format!("{b:02x}")).collect();
    format!("**{hex}**")
}

#[cfg(test)]
mod tests {
    use super::Masker;

    #[test]
    fn secrets_become_their_hash_prefix() {
        let masker = Masker::new(["hunter2", "", "a.b"]).unwrap();
        // sha256("hunter2") = f52fbd32…
        assert_eq!(masker.mask("pw=hunter2!"), "pw=**f52fbd**!");
        // Literal: the dot is not "any character".
        assert_eq!(masker.mask("axb"), "axb");
        assert!(Masker::new(["", ""]).is_none());
    }
}
