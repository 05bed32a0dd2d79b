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
