//! `wms aws assume-role` end to end: a GitHub-like OIDC token endpoint served here (it checks
//! the audience and the bearer token, as the runner's does), moto's STS for
//! `AssumeRoleWithWebIdentity`, then `wms aws whoami` with the exported credentials.

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::servers;
use crate::util::{self, TestCommand};

const REQUEST_TOKEN: &str = "runner-request-token-1234";
const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXBvOndtcy93bXM6cmVmOnJlZnMvaGVhZHMvbWFpbiIsImF1ZCI6InN0cy5hbWF6b25hd3MuY29tIn0.c2ln";

/// A token endpoint on a loopback port: answers `{"value": JWT}` to a GET whose query has
/// `audience=sts.amazonaws.com` and whose `Authorization` is `Bearer REQUEST_TOKEN`; 401
/// otherwise. Records each request line.
struct TokenServer {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

fn token_server() -> TokenServer {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let base = servers::http_stub(move |request| {
        let ok = request
            .line
            .starts_with("GET /token?api-version=2.0&audience=sts.amazonaws.com ")
            && request
                .header("authorization")
                .and_then(|auth| auth.split_once(' '))
                .is_some_and(|(scheme, t)| {
                    scheme.eq_ignore_ascii_case("bearer") && t == REQUEST_TOKEN
                });
        log.lock().unwrap().push(request.line.clone());
        let body = if ok {
            format!("{{\"count\":1,\"value\":\"{JWT}\"}}")
        } else {
            "{\"message\":\"bad token\"}".to_string()
        };
        let status = if ok { "200 OK" } else { "401 Unauthorized" };
        (status, "application/json", body.into_bytes())
    });
    TokenServer {
        url: format!("{base}/token?api-version=2.0"),
        seen,
    }
}

/// `wms` with no ambient AWS credentials or config: only what the test gives it.
fn wms(home: &Path, args: &[&str]) -> TestCommand {
    util::wms()
        .args(args)
        .env("HOME", home)
        .env("AWS_ENDPOINT_URL", &servers::moto().url)
}

#[test]
fn github_oidc_assume_role_masks_exports_and_whoami_sees_the_role() {
    let tokens = token_server();
    let home = tempfile::tempdir().unwrap();
    let github_env = home.path().join("github_env");
    fs_err::write(&github_env, "EARLIER=1\n").unwrap();
    let out = wms(
        home.path(),
        &[
            "aws",
            "assume-role",
            "--role-arn",
            "arn:aws:iam::123456789012:role/wms-ci",
            "--region",
            "eu-west-1",
            "--session-name",
            "run-42",
        ],
    )
    .env("GITHUB_ACTIONS", "true")
    .env("GITHUB_ENV", &github_env)
    .env("ACTIONS_ID_TOKEN_REQUEST_URL", &tokens.url)
    .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN)
    .ok();
    let (stdout, stderr) = (out.stdout(), out.stderr());
    assert_eq!(
        *tokens.seen.lock().unwrap(),
        vec!["GET /token?api-version=2.0&audience=sts.amazonaws.com HTTP/1.1".to_string()]
    );

    let exported = wms::github::actions::parse_file_command(
        "GITHUB_ENV",
        &fs_err::read_to_string(&github_env).unwrap(),
    )
    .unwrap();
    let get = |k: &str| {
        exported
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{k} not exported: {exported:?}"))
    };
    assert_eq!(get("EARLIER"), "1");
    let key_id = get("AWS_ACCESS_KEY_ID");
    let secret = get("AWS_SECRET_ACCESS_KEY");
    let session = get("AWS_SESSION_TOKEN");
    assert_eq!(get("AWS_REGION"), "eu-west-1");
    assert_eq!(get("AWS_DEFAULT_REGION"), "eu-west-1");
    assert!(key_id.starts_with("ASIA"), "{key_id}");
    // Every secret is masked before anything else could print it, and never printed in clear.
    let masks: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("::add-mask::"))
        .collect();
    for s in [
        &key_id,
        &secret,
        &session,
        &REQUEST_TOKEN.to_string(),
        &JWT.to_string(),
    ] {
        assert!(masks.contains(&s.as_str()), "{s} not masked: {stdout}");
    }
    let unmasked: String = stdout
        .lines()
        .filter(|l| !l.starts_with("::add-mask::"))
        .collect();
    for s in [&key_id, &secret, &session] {
        assert!(!unmasked.contains(s.as_str()) && !stderr.contains(s.as_str()));
    }
    assert!(stderr.contains("assumed-role/wms-ci/run-42"), "{stderr}");

    // A later step: the exported credentials, the default chain, moto's STS.
    let out = wms(home.path(), &["aws", "whoami"])
        .env("AWS_ACCESS_KEY_ID", &key_id)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .env("AWS_SESSION_TOKEN", &session)
        .env("AWS_REGION", "eu-west-1")
        .ok();
    let stdout = out.stdout();
    let id: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        id["Arn"], "arn:aws:sts::123456789012:assumed-role/wms-ci/run-42",
        "{stdout}"
    );
    assert_eq!(id["Account"], "123456789012");
}

#[test]
fn assume_role_without_oidc_or_with_a_bad_token_fails_with_a_hint() {
    let home = tempfile::tempdir().unwrap();
    let role = "arn:aws:iam::123456789012:role/wms-ci";
    let no_oidc = wms(home.path(), &["aws", "assume-role", "--role-arn", role]).fails(2);

    let tokens = token_server();
    let out = wms(
        home.path(),
        &[
            "aws",
            "assume-role",
            "--role-arn",
            role,
            "--region",
            "us-east-1",
        ],
    )
    .env("ACTIONS_ID_TOKEN_REQUEST_URL", &tokens.url)
    .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "not-the-token")
    .fails(1);
    assert!(out.stdout().is_empty(), "{out}");
    let _redacted = util::redactions().bind_to_scope();
    insta::assert_snapshot!(
        "aws_assume_role_errors",
        format!("{}\n{}", no_oidc.error_line(), out.error_line())
    );
}
