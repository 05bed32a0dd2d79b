//! The one redaction function for URLs: the userinfo of a URL (`user:password@`, a token as
//! `x-access-token:…@`) is replaced by `***` before the URL reaches a log line, an error, a step
//! output or a summary. [`url`] takes one URL; [`text`] finds every `scheme://…@` in free text
//! (error chains, libgit2 and HTTP client messages that quote the URL they failed on).
//!
//! Masking with `::add-mask::` (`github::actions::Actions::add_mask`) is the second line of
//! defence, for secrets that are not in a URL; this module is the first, and works outside
//! Actions too.

use std::borrow::Cow;

/// Stands in for removed credentials.
pub const REDACTED: &str = "***";

/// One URL with its userinfo replaced: `https://u:p@host/x` → `https://***@host/x`. Strings
/// without credentials come back borrowed.
pub fn url(s: &str) -> Cow<'_, str> {
    text(s)
}

/// Every URL inside `s` with its userinfo replaced.
pub fn text(s: &str) -> Cow<'_, str> {
    let mut out: Option<String> = None;
    let mut copied = 0; // bytes of `s` already handled
    let mut search = 0;
    while let Some(found) = s[search..].find("://") {
        let authority_start = search + found + 3;
        if !scheme_before(&s[..search + found]) {
            search = authority_start;
            continue;
        }
        let authority = authority(&s[authority_start..]);
        let authority_len = authority.len();
        if let Some(at) = authority.rfind('@') {
            let buf = out.get_or_insert_with(|| String::with_capacity(s.len()));
            buf.push_str(&s[copied..authority_start]);
            buf.push_str(REDACTED);
            copied = authority_start + at;
        }
        search = authority_start + authority_len;
    }
    match out {
        Some(mut buf) => {
            buf.push_str(&s[copied..]);
            Cow::Owned(buf)
        }
        None => Cow::Borrowed(s),
    }
}

/// What [`text`] removes, for `::add-mask::`: per URL in `s` with userinfo, its password, or its
/// user name when there is no password (a token given as `https://TOKEN@host`), as written.
pub fn userinfo_secrets(s: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    let mut search = 0;
    while let Some(found) = s[search..].find("://") {
        let authority_start = search + found + 3;
        let authority = authority(&s[authority_start..]);
        if scheme_before(&s[..search + found])
            && let Some(at) = authority.rfind('@')
        {
            let userinfo = &authority[..at];
            let secret = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
            if !secret.is_empty() && !secrets.iter().any(|s| s == secret) {
                secrets.push(secret.to_string());
            }
        }
        search = authority_start + authority.len();
    }
    secrets
}

/// Credentials taken out of a URL, percent-decoded (what a client sends as basic auth).
#[derive(Clone, PartialEq, Eq)]
pub struct Userinfo {
    pub user: String,
    pub password: Option<String>,
}

impl std::fmt::Debug for Userinfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Userinfo({}, {REDACTED})", self.user)
    }
}

/// A URL (`scheme://[userinfo@]host…`) without its userinfo, and the userinfo it had, so the
/// credentials can travel as a header while the URL is the one shown in messages.
pub fn take_userinfo(url: &str) -> (String, Option<Userinfo>) {
    let Some(found) = url.find("://") else {
        return (url.to_string(), None);
    };
    let authority_start = found + 3;
    let Some(at) = authority(&url[authority_start..]).rfind('@') else {
        return (url.to_string(), None);
    };
    let userinfo = &url[authority_start..authority_start + at];
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u, Some(percent_decode(p))),
        None => (userinfo, None),
    };
    let stripped = format!(
        "{}{}",
        &url[..authority_start],
        &url[authority_start + at + 1..]
    );
    let info = Userinfo {
        user: percent_decode(user),
        password,
    };
    (stripped, Some(info))
}

/// The authority at the start of `rest` (what follows `://`): up to the first '/', '?', '#' or
/// whitespace; a quote or '>' also ends it, since error messages wrap URLs in them.
fn authority(rest: &str) -> &str {
    let len = rest
        .find(|c: char| {
            matches!(c, '/' | '?' | '#' | '"' | '\'' | '>' | '<' | '`') || c.is_whitespace()
        })
        .unwrap_or(rest.len());
    &rest[..len]
}

/// `%XX` escapes decoded (invalid ones kept as written).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `before` ends with a URL scheme (RFC 3986: a letter, then letters, digits, `+-.`).
fn scheme_before(before: &str) -> bool {
    let scheme: String = before
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        .collect();
    scheme
        .chars()
        .last()
        .is_some_and(|c| c.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_removed() {
        assert_eq!(
            url("https://x-access-token:ghs_abc@github.com/o/r.git"),
            "https://***@github.com/o/r.git"
        );
        assert_eq!(
            url("http://user:p%40ss@127.0.0.1:5000"),
            "http://***@127.0.0.1:5000"
        );
        assert_eq!(url("https://tok@host"), "https://***@host");
    }

    #[test]
    fn urls_without_credentials_are_untouched() {
        let plain = "https://github.com/o/r.git and git://h/x?a=b@c";
        assert!(matches!(text(plain), Cow::Borrowed(_)));
        assert!(matches!(url("https://host/path/a@b"), Cow::Borrowed(_)));
    }

    #[test]
    fn every_url_in_a_message_is_redacted() {
        let msg = "cannot fetch 'https://a:s3cret@h1/x': error sending request for url (http://b:t0k@h2:80/y)\nretry s3://k:v@bucket/p";
        let out = text(msg);
        assert!(
            !out.contains("s3cret") && !out.contains("t0k") && !out.contains("k:v"),
            "{out}"
        );
        assert_eq!(
            out,
            "cannot fetch 'https://***@h1/x': error sending request for url (http://***@h2:80/y)\nretry s3://***@bucket/p"
        );
    }

    #[test]
    fn userinfo_secrets_are_what_masking_needs() {
        assert_eq!(
            userinfo_secrets("https://x-access-token:ghs_abc@github.com/o/r"),
            ["ghs_abc"]
        );
        assert_eq!(
            userinfo_secrets("https://ghp_tok@github.com/o/r"),
            ["ghp_tok"]
        );
        assert!(userinfo_secrets("https://github.com/o/r a@b").is_empty());
    }

    #[test]
    fn userinfo_is_taken_out_decoded() {
        let (url, info) = take_userinfo("http://al%40ce:p%3Ass@127.0.0.1:5000/x@y");
        assert_eq!(url, "http://127.0.0.1:5000/x@y");
        let info = info.unwrap();
        assert_eq!(
            (info.user.as_str(), info.password.as_deref()),
            ("al@ce", Some("p:ss"))
        );
        assert_eq!(format!("{info:?}"), "Userinfo(al@ce, ***)");
        let (url, info) = take_userinfo("https://tok@host");
        assert_eq!(
            (url.as_str(), info.unwrap().password),
            ("https://host", None)
        );
        assert_eq!(
            take_userinfo("https://host/a@b"),
            ("https://host/a@b".into(), None)
        );
        // A 100% at the end is not an escape.
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn not_a_scheme_is_left_alone() {
        assert_eq!(text("a ://u:p@h"), "a ://u:p@h");
    }
}
