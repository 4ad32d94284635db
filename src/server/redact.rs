//! Redaction of secret values in everything the progress server sends out.
//!
//! A value is secret when the name of the environment variable holding it looks
//! secret (it contains `TOKEN`, `SECRET`, `PASSWORD`, `PASSWD`, `KEY` or
//! `CREDENTIAL`, case-insensitively). The values are taken from the runner's own
//! environment and from the `env:` of every category and service, so a unit that
//! prints `API_KEY=...` in a failure's output tail does not leak it to viewers.
//!
//! Redaction works on JSON text but never breaks it: the common case (no secret in
//! the text) is a substring check and the text goes out unchanged; otherwise the
//! text is parsed and only string values are rewritten, each occurrence of a secret
//! replaced by [`MASK`]. Values shorter than [`MIN_SECRET_LEN`] characters are
//! ignored: they are too short to be secret and would mangle ordinary text.

use std::borrow::Cow;

use serde_json::Value;

/// What replaces a secret.
pub const MASK: &str = "***";

/// Shorter values are not treated as secrets.
pub const MIN_SECRET_LEN: usize = 6;

/// Name fragments that mark a variable as secret (matched upper-cased).
const SECRET_NAME_PARTS: &[&str] = &["TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL"];

/// True when an environment variable called `name` probably holds a secret.
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_NAME_PARTS.iter().any(|part| upper.contains(part))
}

/// The set of secret values to hide.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Secret values, longest first (so a secret containing another is masked whole).
    secrets: Vec<String>,
    /// The same values as they appear inside a JSON string (escaped), same order.
    escaped: Vec<String>,
}

impl Redactor {
    /// A redactor for the secret-looking variables among `vars` (name, value).
    pub fn from_vars<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut secrets: Vec<String> = vars
            .into_iter()
            .filter(|(k, v)| {
                looks_secret(k.as_ref()) && v.as_ref().chars().count() >= MIN_SECRET_LEN
            })
            .map(|(_, v)| v.as_ref().to_string())
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        let escaped = secrets
            .iter()
            .map(|s| {
                let quoted = serde_json::to_string(s).unwrap_or_default();
                quoted[1..quoted.len() - 1].to_string()
            })
            .collect();
        Self { secrets, escaped }
    }

    /// A redactor for the runner's environment plus the `env:` of every category
    /// and service of `config`.
    pub fn for_run(config: &crate::config::Config) -> Self {
        let mut vars: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        for c in config.categories.values() {
            vars.extend(c.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        for s in config.services.values() {
            vars.extend(s.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Self::from_vars(vars)
    }

    /// Number of secret values known.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// True when there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` (plain, not JSON) with every secret masked.
    pub fn redact_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self.secrets.iter().any(|s| text.contains(s.as_str())) {
            return Cow::Borrowed(text);
        }
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        Cow::Owned(out)
    }

    /// `json` (a serialized JSON document) with every secret inside its string
    /// values (and object keys) masked. The result is valid JSON whenever the input is.
    pub fn redact_json<'a>(&self, json: &'a str) -> Cow<'a, str> {
        if !self.escaped.iter().any(|s| json.contains(s.as_str())) {
            return Cow::Borrowed(json);
        }
        let Ok(mut value) = serde_json::from_str::<Value>(json) else {
            // Not JSON after all: mask textually rather than leak.
            return Cow::Owned(self.redact_str(json).into_owned());
        };
        self.redact_value(&mut value);
        Cow::Owned(serde_json::to_string(&value).unwrap_or_default())
    }

    /// Mask every secret inside the strings of `value`.
    pub fn redact_value(&self, value: &mut Value) {
        match value {
            Value::String(s) => {
                if let Cow::Owned(r) = self.redact_str(s) {
                    *s = r;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_value(v)),
            Value::Object(map) => {
                let needs_key = map
                    .keys()
                    .any(|k| matches!(self.redact_str(k), Cow::Owned(_)));
                if needs_key {
                    let old = std::mem::take(map);
                    for (k, mut v) in old {
                        self.redact_value(&mut v);
                        map.insert(self.redact_str(&k).into_owned(), v);
                    }
                } else {
                    map.values_mut().for_each(|v| self.redact_value(v));
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        Redactor::from_vars([
            ("API_TOKEN", "tok-123456"),
            ("db_password", "pa\"ss\\word"),
            ("AWS_SECRET_ACCESS_KEY", "abcdefgh"),
            ("SSH_KEY", "abc"),        // too short
            ("HOME", "/home/someone"), // not secret-looking
            ("LONG_KEY", "tok-123456-and-more"),
        ])
    }

    #[test]
    fn secret_names() {
        for name in [
            "GITHUB_TOKEN",
            "api_key",
            "DB_PASSWORD",
            "client_secret",
            "PGPASSWD",
            "GOOGLE_CREDENTIALS",
        ] {
            assert!(looks_secret(name), "{name}");
        }
        for name in ["HOME", "PATH", "CARGO_TARGET_DIR", "RUST_LOG"] {
            assert!(!looks_secret(name), "{name}");
        }
    }

    #[test]
    fn masks_secrets_in_plain_text_longest_first() {
        let r = redactor();
        assert_eq!(r.len(), 4);
        assert_eq!(
            r.redact_str("x=tok-123456-and-more y=tok-123456"),
            "x=*** y=***"
        );
        assert_eq!(r.redact_str("abc /home/someone"), "abc /home/someone");
        assert!(matches!(r.redact_str("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_stays_valid_and_only_strings_change() {
        let r = Redactor::from_vars([("MY_KEY", "123456"), ("OTHER_TOKEN", "pa\"ss\\word")]);
        let event = serde_json::json!({
            "seq": 1234567,
            "type": "test_finished",
            "output_tail": "API_KEY=123456\npassword: pa\"ss\\word\n",
            "nested": [{"m": "x123456x"}],
            "123456": "key too",
        });
        let text = serde_json::to_string(&event).unwrap();
        let out = r.redact_json(&text);
        let back: Value = serde_json::from_str(&out).expect("still JSON");
        assert_eq!(back["seq"], 1234567, "numbers are untouched");
        assert_eq!(back["output_tail"], "API_KEY=***\npassword: ***\n");
        assert_eq!(back["nested"][0]["m"], "x***x");
        assert_eq!(back["***"], "key too");
        assert!(!out.contains("123456\""), "{out}");
    }

    #[test]
    fn json_without_secrets_is_borrowed() {
        let r = redactor();
        let text = r#"{"type":"warning","message":"fine"}"#;
        assert!(matches!(r.redact_json(text), Cow::Borrowed(_)));
        assert!(matches!(
            Redactor::default().redact_json(text),
            Cow::Borrowed(_)
        ));
    }
}
