//! `wms aws …` (work in progress, issue #6).

/// AWS credentials: GitHub OIDC role assumption and caller identity.
#[derive(Debug, clap::Args)]
pub struct AwsArgs {}

pub fn run(_args: AwsArgs) -> anyhow::Result<()> {
    anyhow::bail!("wms aws is not implemented yet (issue #6)")
}
