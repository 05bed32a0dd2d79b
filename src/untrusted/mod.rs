//! The rules for input wms does not trust: anything that comes from a repository, a pull request,
//! an archive, an event payload or the network. Three rules, each in one place, called by every
//! stage (data sync, image build, deploy, reports):
//!
//! - [`path`]: a repository- or archive-supplied path becomes a filesystem path only when it is
//!   relative, has no `..`, no NUL, and its parents inside the root are real directories (no
//!   symlink is followed out of the root).
//! - [`text`]: a user-controlled string reaches a log line, a terminal, a workflow command or
//!   Markdown only escaped for that place (control characters quoted, Markdown specials escaped).
//! - [`redact`]: a URL is printed only with its userinfo (user, password, token) removed.
//!
//! The trust model these serve is written down in `docs/SECURITY.md`. This module must not do I/O
//! beyond the `lstat`/`mkdir` calls the path rule needs, and never logs what it checks.

pub mod path;
pub mod redact;
pub mod text;

/// Whether `host` — a URL's host: a name, an IPv4 address or a bracketed IPv6 address — is this
/// machine: `localhost`, 127.0.0.0/8 or `::1`. Plain HTTP (credentials in the clear) is allowed
/// only there; DVC endpoints and registries share this rule.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// [`is_loopback_host`] for a `host[:port]` authority such as a registry name, parsed as a URL
/// would be (so `[::1]:5000` and other spellings of an address are normalised first).
pub fn is_loopback_authority(authority: &str) -> bool {
    reqwest::Url::parse(&format!("http://{authority}/"))
        .ok()
        .and_then(|u| u.host_str().map(is_loopback_host))
        .unwrap_or(false)
}
