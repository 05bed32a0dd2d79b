//! Command-line interfaces of the three binaries, as clap `…Args` structs plus a `run` per
//! command that resolves settings and calls the capability modules. Binaries only dispatch here.

pub mod aws;
pub mod compare;
pub mod data;
pub mod deploy;
pub mod detect;
pub mod export;
pub mod gate;
pub mod image;
pub mod promote;
pub mod report;
pub mod serve;
#[cfg(feature = "train")]
pub mod train;
