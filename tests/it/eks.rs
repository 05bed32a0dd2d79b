//! EKS credentials for `wms deploy --eks-cluster` (#13): the token is decoded and checked the way
//! aws-iam-authenticator checks it (`pkg/token/token.go`: https, STS host, path `/`, action,
//! whitelisted parameters, expiry, signed `x-k8s-aws-id`, length), its signature is recomputed
//! here with an independent SigV4 (hmac + sha2) and compared with what botocore (aws-cli's
//! `eks get-token`) signs for the same inputs; `DescribeCluster` runs against the real moto
//! server; the client built from it is checked over real TLS against the cluster's CA.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wms::deploy::eks::{self, Cluster, EksAuth, EksError, TokenSource};

use crate::{servers, util};

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
/// Has `+`, `/` and `=`, which must be percent-encoded in the URL and in the signature.
const SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+x/y=";
const REGION: &str = "eu-west-1";
const CLUSTER: &str = "wms-prod";
/// 2026-11-30T12:00:00Z.
const SIGNED_AT: u64 = 1_796_040_000;

/// The query parameters aws-iam-authenticator accepts (`pkg/token/token.go`, lower-cased).
const ALLOWED_PARAMS: &[&str] = &[
    "action",
    "version",
    "x-amz-algorithm",
    "x-amz-credential",
    "x-amz-date",
    "x-amz-expires",
    "x-amz-security-token",
    "x-amz-signature",
    "x-amz-signedheaders",
];

fn creds(session_token: Option<&str>) -> Credentials {
    Credentials::new(
        AKID,
        SECRET,
        session_token.map(str::to_string),
        None,
        "test",
    )
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The presigned URL inside a token.
fn decode(token: &str) -> reqwest::Url {
    let b64 = token
        .strip_prefix("k8s-aws-v1.")
        .unwrap_or_else(|| panic!("no k8s-aws-v1. prefix: {token}"));
    assert!(!b64.contains('='), "base64url without padding");
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64)
        .expect("base64url");
    reqwest::Url::parse(std::str::from_utf8(&url).expect("utf-8")).expect("a URL")
}

fn query(url: &reqwest::Url) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for (k, v) in url.query_pairs() {
        assert!(
            map.insert(k.to_string(), v.to_string()).is_none(),
            "duplicate {k}"
        );
    }
    map
}

/// Runs `args[0]` as a Python script (boto3/botocore from the venv) with the rest as its
/// arguments, away from any AWS configuration of the machine.
fn boto(args: &[&str]) -> Vec<u8> {
    util::python_command()
        .arg("-c")
        .args(args)
        .env("AWS_STS_REGIONAL_ENDPOINTS", "regional")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .ok()
        .output
        .stdout
}

// ---- an independent SigV4 (AWS "Signature Version 4 signing process"), test side only ----

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// RFC 3986 encoding as SigV4 wants it: only `A-Za-z0-9-_.~` stay.
fn uri_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The SigV4 signature of a presigned GET `url` whose signed headers are `headers`
/// (lower-case name → value), for `service`, from the query's own date and scope.
fn presigned_signature(
    url: &reqwest::Url,
    headers: &BTreeMap<&str, String>,
    service: &str,
) -> String {
    let q = query(url);
    let mut canonical_query: Vec<(String, String)> = q
        .iter()
        .filter(|(k, _)| k.as_str() != "X-Amz-Signature")
        .map(|(k, v)| (uri_encode(k), uri_encode(v)))
        .collect();
    canonical_query.sort();
    let canonical_query = canonical_query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical_headers: String = headers
        .iter()
        .map(|(k, v)| format!("{k}:{}\n", v.trim()))
        .collect();
    let signed_headers = headers.keys().copied().collect::<Vec<_>>().join(";");
    let canonical_request = format!(
        "GET\n{}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{}",
        url.path(),
        sha256_hex(b"")
    );
    let amz_date = &q["X-Amz-Date"];
    let date = &amz_date[..8];
    let region = q["X-Amz-Credential"].split('/').nth(2).unwrap().to_string();
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let k_date = hmac(format!("AWS4{SECRET}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    hex::encode(hmac(&k_signing, string_to_sign.as_bytes()))
}

/// The headers a token signs: the STS host and the cluster id.
fn sts_headers() -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("host", "sts.eu-west-1.amazonaws.com".to_string()),
        ("x-k8s-aws-id", CLUSTER.to_string()),
    ])
}

/// Every check aws-iam-authenticator makes on a token, plus the signature recomputed here.
fn check_token_like_the_authenticator(token: &str, signed_at: u64) {
    assert!(token.len() <= eks::MAX_TOKEN_BYTES, "{} bytes", token.len());
    let url = decode(token);
    assert_eq!(url.scheme(), "https");
    assert_eq!(url.host_str(), Some("sts.eu-west-1.amazonaws.com"));
    assert_eq!(url.port(), None);
    assert_eq!(url.path(), "/");
    let q = query(&url);
    for k in q.keys() {
        assert!(
            ALLOWED_PARAMS.contains(&k.to_ascii_lowercase().as_str()),
            "parameter {k} is not on the authenticator's list"
        );
    }
    assert_eq!(q["Action"], "GetCallerIdentity");
    assert_eq!(q["Version"], "2011-06-15");
    assert_eq!(q["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
    let d = wms::calendar::utc(signed_at);
    let amz_date = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        d.year, d.month, d.day, d.hour, d.minute, d.second
    );
    assert_eq!(q["X-Amz-Date"], amz_date);
    assert_eq!(
        q["X-Amz-Credential"],
        format!("{AKID}/{}/{REGION}/sts/aws4_request", &amz_date[..8])
    );
    let expires: u64 = q["X-Amz-Expires"].parse().unwrap();
    assert!(expires <= 900, "X-Amz-Expires {expires}");
    assert_eq!(expires, eks::PRESIGN_EXPIRES.as_secs());
    let signed: Vec<&str> = q["X-Amz-SignedHeaders"].split(';').collect();
    assert!(
        signed.contains(&"host") && signed.contains(&"x-k8s-aws-id"),
        "{signed:?}"
    );
    assert_eq!(q["X-Amz-Security-Token"], SESSION_TOKEN);
    let headers = sts_headers();
    assert_eq!(signed, headers.keys().copied().collect::<Vec<_>>());
    assert_eq!(
        q["X-Amz-Signature"],
        presigned_signature(&url, &headers, "sts"),
        "the signature is not SigV4 of the canonical request with the test credentials"
    );
}

#[test]
fn eks_token_is_a_presigned_sts_url_the_authenticator_accepts() {
    let token = eks::token(&creds(Some(SESSION_TOKEN)), REGION, CLUSTER, at(SIGNED_AT)).unwrap();
    check_token_like_the_authenticator(&token, SIGNED_AT);

    // Signed for another cluster, the signature differs: the header is really signed.
    let other = eks::token(&creds(Some(SESSION_TOKEN)), REGION, "other", at(SIGNED_AT)).unwrap();
    assert_ne!(
        query(&decode(&token))["X-Amz-Signature"],
        query(&decode(&other))["X-Amz-Signature"]
    );
}

/// The same inputs through botocore the way aws-cli's `eks get-token` presigns (the
/// `x-k8s-aws-id` header injected before signing, ExpiresIn=60, GET), with its clock frozen.
#[test]
fn eks_token_signs_what_aws_cli_get_token_signs() {
    const PRESIGN: &str = r#"
import datetime, sys
import botocore.auth, botocore.session
at = datetime.datetime.fromtimestamp(int(sys.argv[1]), datetime.timezone.utc)
class Frozen(datetime.datetime):
    @classmethod
    def utcnow(cls): return at.replace(tzinfo=None)
    @classmethod
    def now(cls, tz=None): return at if tz else at.replace(tzinfo=None)
botocore.auth.datetime.datetime = Frozen
region, cluster, akid, secret, token = sys.argv[2:7]
c = botocore.session.get_session().create_client("sts", region_name=region,
    aws_access_key_id=akid, aws_secret_access_key=secret, aws_session_token=token)
def take(params, context, **kw):
    if "x-k8s-aws-id" in params: context["x-k8s-aws-id"] = params.pop("x-k8s-aws-id")
def inject(request, **kw):
    if "x-k8s-aws-id" in request.context: request.headers["x-k8s-aws-id"] = request.context["x-k8s-aws-id"]
c.meta.events.register("provide-client-params.sts.GetCallerIdentity", take)
c.meta.events.register("before-sign.sts.GetCallerIdentity", inject)
print(c.generate_presigned_url("get_caller_identity", Params={"x-k8s-aws-id": cluster}, ExpiresIn=60, HttpMethod="GET"))
"#;
    let out = boto(&[
        PRESIGN,
        &SIGNED_AT.to_string(),
        REGION,
        CLUSTER,
        AKID,
        SECRET,
        SESSION_TOKEN,
    ]);
    let theirs = reqwest::Url::parse(String::from_utf8(out).unwrap().trim()).unwrap();
    let ours =
        decode(&eks::token(&creds(Some(SESSION_TOKEN)), REGION, CLUSTER, at(SIGNED_AT)).unwrap());
    assert_eq!(ours.host_str(), theirs.host_str());
    assert_eq!(ours.path(), theirs.path());
    assert_eq!(
        query(&ours),
        query(&theirs),
        "same parameters and the same signature as botocore"
    );
    // And the test's own SigV4 agrees with botocore's, so the check above means something.
    let headers = sts_headers();
    assert_eq!(
        query(&theirs)["X-Amz-Signature"],
        presigned_signature(&theirs, &headers, "sts")
    );
}

#[test]
fn eks_token_without_a_session_token_has_no_security_token_parameter() {
    let token = eks::token(&creds(None), REGION, CLUSTER, at(SIGNED_AT)).unwrap();
    let url = decode(&token);
    let q = query(&url);
    assert!(!q.contains_key("X-Amz-Security-Token"));
    let headers = sts_headers();
    assert_eq!(
        q["X-Amz-Signature"],
        presigned_signature(&url, &headers, "sts")
    );
}

#[test]
fn eks_token_over_4096_bytes_is_refused_with_a_hint() {
    let huge = "A".repeat(4000);
    let err = eks::token(&creds(Some(&huge)), REGION, CLUSTER, at(SIGNED_AT)).unwrap_err();
    assert!(matches!(err, EksError::TokenTooLong { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("4096") && msg.contains("hint:") && !msg.contains('\n'),
        "{msg}"
    );
}

#[test]
fn eks_token_bad_cluster_or_region_is_refused_before_signing() {
    for (cluster, region) in [
        ("a/../b", REGION),
        ("x\r\nx-evil: 1", REGION),
        (CLUSTER, "eu-west-1.evil.example"),
    ] {
        let err = eks::token(&creds(None), region, cluster, at(SIGNED_AT)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("hint:") && !msg.contains('\n'), "{msg}");
    }
}

#[test]
fn eks_token_is_re_signed_once_it_is_14_minutes_old() {
    let source =
        TokenSource::new(creds(Some(SESSION_TOKEN)), REGION, CLUSTER, at(SIGNED_AT)).unwrap();
    let first = source.token_at(at(SIGNED_AT)).unwrap();
    // Younger than 14 minutes: the same token.
    assert_eq!(
        source.token_at(at(SIGNED_AT + 13 * 60 + 59)).unwrap(),
        first
    );
    // 14 minutes: a new one, dated now, still valid for the cluster's 15 minutes.
    let later = SIGNED_AT + 14 * 60;
    let second = source.token_at(at(later)).unwrap();
    assert_ne!(second, first);
    check_token_like_the_authenticator(&second, later);
    assert_eq!(source.signed_at(), at(later));
    // The clock moved back: a token dated in the future is not reused.
    let third = source.token_at(at(later - 60)).unwrap();
    check_token_like_the_authenticator(&third, later - 60);
}

// ---- DescribeCluster against the real moto server ----

/// Creates `name` in moto's EKS with boto3 (a real AWS client) and returns moto's answer.
fn moto_create_cluster(name: &str) -> serde_json::Value {
    const CREATE: &str = r#"
import json, sys, boto3
eks = boto3.client("eks", endpoint_url=sys.argv[1], region_name=sys.argv[2],
    aws_access_key_id="testing", aws_secret_access_key="testing")
c = eks.create_cluster(name=sys.argv[3], roleArn="arn:aws:iam::123456789012:role/eks",
    resourcesVpcConfig={"subnetIds": []})["cluster"]
print(json.dumps({"endpoint": c["endpoint"], "ca": c["certificateAuthority"]["data"], "status": c["status"]}))
"#;
    let out = boto(&[CREATE, &servers::moto().url, REGION, name]);
    serde_json::from_slice(&out).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn moto_sdk_config() -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .endpoint_url(&servers::moto().url)
        .region(aws_config::Region::new(REGION))
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build()
}

/// `DescribeCluster` of `name` against moto with the test credentials.
fn describe_on_moto(name: &str) -> Result<Cluster, EksError> {
    runtime().block_on(eks::describe_cluster(
        &moto_sdk_config(),
        &creds(None),
        REGION,
        name,
    ))
}

fn unique(prefix: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{}", std::process::id(), n % 1_000_000_000)
}

#[test]
fn describe_cluster_against_moto_gives_the_endpoint_and_ca() {
    let name = unique("wms-eks");
    let created = moto_create_cluster(&name);
    let cluster = describe_on_moto(&name).unwrap();
    assert_eq!(cluster.name, name);
    assert_eq!(cluster.endpoint, created["endpoint"].as_str().unwrap());
    assert_eq!(
        cluster.certificate_authority,
        created["ca"].as_str().unwrap()
    );
    assert_eq!(cluster.status.as_deref(), created["status"].as_str());
    let url = cluster.cluster_url().unwrap();
    assert_eq!(url.scheme_str(), Some("https"));
    assert!(
        url.host()
            .unwrap()
            .ends_with(".eu-west-1.eks.amazonaws.com"),
        "{url}"
    );
    // moto's CA is random letters, not base64 of PEM: refused, naming the field.
    let msg = cluster.ca_certificates().unwrap_err().to_string();
    assert!(
        msg.contains("certificateAuthority.data")
            && msg.contains(&name)
            && msg.contains("hint:")
            && !msg.contains('\n'),
        "{msg}"
    );
}

#[test]
fn describe_cluster_of_an_unknown_cluster_is_one_line_with_a_hint() {
    let name = unique("missing");
    let err = describe_on_moto(&name).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&name)
            && msg.contains("404")
            && msg.contains("ResourceNotFoundException")
            && msg.contains("--region")
            && !msg.contains('\n'),
        "{msg}"
    );
}

// ---- the client: real TLS with the cluster's CA, a fresh token on every request ----

/// A CA and a server certificate for 127.0.0.1 signed by it, made with the openssl CLI.
struct Pki {
    ca_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

/// Runs `openssl` in `dir` with whitespace-separated `args` (none of them has a space).
fn openssl(dir: &Path, args: &str) {
    util::TestCommand::external("openssl")
        .current_dir(dir)
        .args(args.split_whitespace())
        .ok();
}

fn make_pki(dir: &Path) -> Pki {
    let p256 = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    openssl(
        dir,
        &format!(
            "req -x509 {p256} -keyout ca.key -out ca.pem -days 2 -subj /CN=wms-test-ca -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign"
        ),
    );
    openssl(
        dir,
        &format!("req {p256} -keyout server.key -out server.csr -subj /CN=127.0.0.1"),
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out server.pem",
    );
    openssl(dir, "x509 -in server.pem -outform der -out server.der");
    openssl(
        dir,
        "pkcs8 -topk8 -nocrypt -in server.key -outform der -out server.key.der",
    );
    Pki {
        ca_pem: std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
        cert_der: std::fs::read(dir.join("server.der")).unwrap(),
        key_der: std::fs::read(dir.join("server.key.der")).unwrap(),
    }
}

/// An https endpoint on loopback that answers `GET /version` as a Kubernetes API server does
/// (the `version.Info` JSON) and records each request's `Authorization` header. It only stands
/// in for the API server's TLS and authentication front; the API itself is tests/it/kubeapi.
fn tls_version_server(pki: &Pki, rt: &tokio::runtime::Runtime) -> (u16, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![rustls::pki_types::CertificateDer::from(
            pki.cert_der.clone(),
        )],
        rustls::pki_types::PrivateKeyDer::Pkcs8(pki.key_der.clone().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if tls.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let auth = head
                        .lines()
                        .find_map(|l| l.to_ascii_lowercase().starts_with("authorization:").then(|| l[14..].trim().to_string()))
                        .unwrap_or_default();
                    log.lock().unwrap().push(auth);
                    let body = r#"{"major":"1","minor":"37","gitVersion":"v1.37.0","gitCommit":"0","gitTreeState":"clean","buildDate":"2026-01-01T00:00:00Z","goVersion":"go1.26","compiler":"gc","platform":"linux/amd64"}"#;
                    let resp = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                    if tls.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

fn bearer_token(auth: &str) -> &str {
    auth.strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a bearer token: {auth:?}"))
}

#[test]
fn eks_client_trusts_the_cluster_ca_and_sends_a_fresh_token() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (port, seen) = tls_version_server(&pki, &rt);
    let cluster = Cluster {
        name: CLUSTER.into(),
        endpoint: format!("https://127.0.0.1:{port}"),
        certificate_authority: base64::engine::general_purpose::STANDARD.encode(&pki.ca_pem),
        status: Some("ACTIVE".into()),
    };
    assert_eq!(cluster.ca_certificates().unwrap().len(), 1);

    // A token source whose token was signed 15 minutes ago: the first request re-signs it.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let stale_at = now - 15 * 60;
    let tokens = Arc::new(
        TokenSource::new(creds(Some(SESSION_TOKEN)), REGION, CLUSTER, at(stale_at)).unwrap(),
    );
    let stale = tokens.token_at(at(stale_at)).unwrap();
    let auth = EksAuth::from_token_source(cluster.clone(), REGION, Arc::clone(&tokens), None);
    let version = rt
        .block_on(async { auth.client().unwrap().apiserver_version().await })
        .expect("TLS with the cluster's CA and a GET /version");
    assert_eq!(version.git_version, "v1.37.0");
    let sent = seen.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let token = bearer_token(&sent[0]);
    assert_ne!(token, stale, "a 15-minute-old token was sent");
    let signed = query(&decode(token))["X-Amz-Date"].clone();
    let signed_secs = tokens
        .signed_at()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(signed_secs >= now, "re-signed now, not at {signed}");
    check_token_like_the_authenticator(token, signed_secs);

    // The same CA does not vouch for another CA's server: TLS fails.
    let other_dir = tempfile::tempdir().unwrap();
    let other = make_pki(other_dir.path());
    let wrong = Cluster {
        certificate_authority: base64::engine::general_purpose::STANDARD.encode(&other.ca_pem),
        ..cluster
    };
    let auth = EksAuth::from_token_source(wrong, REGION, tokens, None);
    assert!(
        rt.block_on(async { auth.client().unwrap().apiserver_version().await })
            .is_err()
    );
}
