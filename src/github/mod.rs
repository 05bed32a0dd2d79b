//! Everything that talks to GitHub: the Actions runner protocol (`actions`) and, later, the REST
//! API (PR comments, check runs, deployments).

pub mod actions;
