//! `wms gate` and `wms promote` (work in progress, issue #6).

/// Compare a candidate's metrics with production's.
#[derive(Debug, clap::Args)]
pub struct GateArgs {}

/// Register a run's model as a new version and move the `production` alias to it.
#[derive(Debug, clap::Args)]
pub struct PromoteArgs {}

pub fn run_gate(_args: GateArgs) -> anyhow::Result<()> {
    anyhow::bail!("wms gate is not implemented yet (issue #6)")
}

pub fn run_promote(_args: PromoteArgs) -> anyhow::Result<()> {
    anyhow::bail!("wms promote is not implemented yet (issue #6)")
}
