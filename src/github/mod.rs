//! Everything that talks to GitHub: the Actions runner protocol (`actions`) and the REST API
//! (`client`: the one octocrab client, rate limits and typed errors; PR comments, check runs and
//! deployments are built on it in `crate::report`, workflow runs in `crate::compare`).

pub mod actions;
pub mod client;
