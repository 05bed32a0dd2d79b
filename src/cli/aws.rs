//! `wms aws assume-role` and `wms aws whoami`: flags and action inputs → settings →
//! [`crate::aws`]. In Actions the credentials are masked and exported through `$GITHUB_ENV`;
//! elsewhere `assume-role` prints `export NAME=value` lines for `eval`.

use anyhow::Context;

use crate::aws::{self, AssumeRole, Target};
use crate::env_vars;
use crate::exit::UsageError;
use crate::github::actions::{self, Actions};

/// AWS credentials: GitHub OIDC role assumption and caller identity.
#[derive(Debug, clap::Args)]
pub struct AwsArgs {
    #[command(subcommand)]
    pub command: AwsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AwsCommand {
    /// Exchange the job's GitHub OIDC token for a role's temporary credentials and export them
    /// to later steps (as aws-actions/configure-aws-credentials).
    AssumeRole(AssumeRoleArgs),
    /// Print the caller identity of the current credentials (STS GetCallerIdentity) as JSON.
    Whoami(TargetArgs),
}

#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    /// AWS region (default: the `aws-region` input, AWS_REGION, the profile).
    #[arg(long)]
    pub region: Option<String>,
    /// STS endpoint (default: AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL, AWS's).
    #[arg(long)]
    pub endpoint_url: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct AssumeRoleArgs {
    /// The role to assume (default: the `role-to-assume` input).
    #[arg(long)]
    pub role_arn: Option<String>,
    /// Session name (default: the `role-session-name` input, else `GitHubActions`).
    #[arg(long)]
    pub session_name: Option<String>,
    /// Session length in seconds (default: the `role-duration-seconds` input, else 3600).
    #[arg(long)]
    pub duration_seconds: Option<i32>,
    /// OIDC audience (default: the `audience` input, else `sts.amazonaws.com`).
    #[arg(long)]
    pub audience: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
}

impl TargetArgs {
    fn resolve(self) -> Target {
        let TargetArgs {
            region,
            endpoint_url,
        } = self;
        Target {
            region: region.or_else(|| actions::input("aws-region")),
            endpoint_url,
        }
    }
}

impl AssumeRoleArgs {
    fn resolve(self) -> Result<AssumeRole, UsageError> {
        let AssumeRoleArgs {
            role_arn,
            session_name,
            duration_seconds,
            audience,
            target,
        } = self;
        let role_arn = role_arn
            .or_else(|| actions::input("role-to-assume"))
            .ok_or_else(|| {
                UsageError::new(
                    "no role to assume; hint: pass --role-arn arn:aws:iam::ACCOUNT:role/NAME (or the `role-to-assume` input)",
                )
            })?;
        let duration_seconds = match duration_seconds {
            Some(d) => d,
            None => match actions::input("role-duration-seconds") {
                Some(v) => v.parse().map_err(|_| {
                    UsageError::new(format!(
                        "role-duration-seconds {v:?} is not a number; hint: e.g. 3600"
                    ))
                })?,
                None => aws::DEFAULT_DURATION_SECONDS,
            },
        };
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        let token_request = match (
            var(env_vars::ACTIONS_ID_TOKEN_REQUEST_URL),
            var(env_vars::ACTIONS_ID_TOKEN_REQUEST_TOKEN),
        ) {
            (Some(u), Some(t)) => (u, t),
            _ => {
                return Err(UsageError::new(
                    aws::AwsError::NoOidcEnvironment.to_string(),
                ));
            }
        };
        Ok(AssumeRole {
            role_arn,
            session_name: session_name
                .or_else(|| actions::input("role-session-name"))
                .unwrap_or_else(|| aws::DEFAULT_SESSION_NAME.into()),
            duration_seconds,
            audience: audience
                .or_else(|| actions::input("audience"))
                .unwrap_or_else(|| aws::DEFAULT_AUDIENCE.into()),
            target: target.resolve(),
            token_request,
        })
    }
}

pub fn run(args: AwsArgs) -> anyhow::Result<()> {
    match args.command {
        AwsCommand::AssumeRole(a) => run_assume_role(a),
        AwsCommand::Whoami(a) => run_whoami(a),
    }
}

fn run_assume_role(args: AssumeRoleArgs) -> anyhow::Result<()> {
    let req = args.resolve()?;
    let gh = Actions::from_env();
    let rt = aws::runtime()?;
    let (creds, region) = rt.block_on(aws::assume_role_with_github_oidc(&req, &gh))?;
    let to_github_env = std::env::var_os(env_vars::GITHUB_ENV).is_some_and(|v| !v.is_empty());
    if to_github_env {
        aws::export_to_later_steps(&gh, &creds, &region).context("exporting the credentials")?;
        eprintln!(
            "assumed {} until {}; exported AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION to later steps",
            creds.assumed_role_arn, creds.expiration
        );
    } else {
        // For `eval "$(wms aws assume-role …)"` outside Actions.
        println!(
            "export {}={}",
            env_vars::AWS_ACCESS_KEY_ID,
            creds.access_key_id
        );
        println!(
            "export {}={}",
            env_vars::AWS_SECRET_ACCESS_KEY,
            creds.secret_access_key
        );
        println!(
            "export {}={}",
            env_vars::AWS_SESSION_TOKEN,
            creds.session_token
        );
        println!("export {}={region}", env_vars::AWS_REGION);
        eprintln!(
            "assumed {} until {}",
            creds.assumed_role_arn, creds.expiration
        );
    }
    Ok(())
}

fn run_whoami(args: TargetArgs) -> anyhow::Result<()> {
    let target = args.resolve();
    let rt = aws::runtime()?;
    let id = rt.block_on(aws::caller_identity(&target))?;
    println!("{}", serde_json::to_string_pretty(&id)?);
    Ok(())
}
