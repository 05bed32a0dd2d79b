//! `wms build-image`: flags, or the `build-image` action's `INPUT_*` when a flag is absent,
//! resolved into [`ImageSettings`]; the build itself is [`crate::oci`]. Outputs: `digest`,
//! `image` (`name@digest`), `tags`, `compressed_size` as step outputs and as one JSON object on
//! the last line of stdout; the layers and their sizes in the job summary.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::env_vars;
use crate::exit::UsageError;
use crate::github::actions::{self, Actions};
use crate::oci::{self, Base, ImageInputs};
use crate::untrusted::text::md_code;

/// `org.opencontainers.image.licenses` unless `--licenses` says otherwise.
pub const DEFAULT_LICENSES: &str = "MIT OR Apache-2.0";

#[derive(Debug, clap::Args)]
pub struct BuildImageArgs {
    /// The ONNX model to serve (from `wms export-onnx`). Action input: `model`.
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// REGISTRY/REPO:TAG to name the image (repeatable). Action input: `tags` (one per line).
    #[arg(long = "tag", value_name = "REF")]
    pub tags: Vec<String>,
    /// The base image: REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:… pulled from its registry
    /// (OCI or Docker v2; an index resolves to linux/amd64) and supplying glibc and libstdc++;
    /// or `scratch`: no base, no registry, the image carries the runtime libraries of this
    /// machine as its loader resolves them [default: gcr.io/distroless/cc-debian12:nonroot,
    /// Google's distroless image with glibc, libstdc++, CA certificates and user 65532, pulled
    /// over https]. Credentials as for --push. Action input: `base`.
    #[arg(long, value_name = "REF|scratch")]
    pub base: Option<String>,
    /// config.properties for wms-serve [default: the one in torchserve/]. Action input: `config`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Write the image into this OCI image layout directory. Action input: `oci-layout`.
    #[arg(long, value_name = "DIR")]
    pub oci_layout: Option<PathBuf>,
    /// Push to every --tag's registry. Action input: `push` (true/false).
    #[arg(long)]
    pub push: bool,
    /// Plain HTTP, for a registry on loopback (refused for any other host). Action input:
    /// `insecure`.
    #[arg(long)]
    pub insecure: bool,
    /// Registry user name; the password or token is read from stdin (--password-stdin).
    #[arg(long, value_name = "USER", requires = "password_stdin")]
    pub username: Option<String>,
    /// Read the registry password or token from stdin (never from a flag: it would show in the
    /// process list and the shell history).
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// Target platform; only linux/amd64 today. Action input: `platform`.
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
    /// The wms-serve binary to package [default: the one next to this `wms`].
    #[arg(long, value_name = "FILE")]
    pub serve_binary: Option<PathBuf>,
    /// `org.opencontainers.image.revision` [default: the model's git sha, else $GITHUB_SHA].
    #[arg(long, value_name = "SHA")]
    pub revision: Option<String>,
    /// `org.opencontainers.image.source` [default: $GITHUB_SERVER_URL/$GITHUB_REPOSITORY].
    #[arg(long, value_name = "URL")]
    pub source: Option<String>,
    /// `org.opencontainers.image.licenses` [default: MIT OR Apache-2.0].
    #[arg(long, value_name = "SPDX")]
    pub licenses: Option<String>,
    /// Log in through ECR GetAuthorizationToken (AWS credentials of the environment or of
    /// `wms aws assume-role`) even where the registry host is not
    /// `<account>.dkr.ecr.<region>.amazonaws.com`, whose registries always do. Action input:
    /// `ecr`.
    #[arg(long)]
    pub ecr: bool,
}

/// What the command does, after flags, action inputs and the environment are merged.
#[derive(Debug, Clone)]
pub struct ImageSettings {
    pub inputs: ImageInputs,
    pub tags: Vec<ImageRef>,
    pub oci_layout: Option<PathBuf>,
    pub push: Option<PushSettings>,
    /// How to reach the base's registry, when the base comes from one.
    pub pull: Option<PushSettings>,
}

/// How to push, when pushing.
#[derive(Debug, Clone)]
pub struct PushSettings {
    pub insecure: bool,
    /// `--username` with the password from stdin, for every registry.
    pub login: Option<(String, String)>,
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
    pub docker_config: Option<PathBuf>,
    /// ECR GetAuthorizationToken for every registry, not only ECR hosts (`--ecr`).
    pub ecr: bool,
}

/// `REGISTRY/REPO:TAG` split into the name and the tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub name: String,
    pub tag: String,
}

impl ImageRef {
    /// Parses a tag reference; digests and missing tags are usage errors (a tag names what we
    /// push; downstream pins the digest we print).
    pub fn parse(text: &str) -> Result<Self, UsageError> {
        let bad = |why: &str| {
            UsageError::new(format!(
                "--tag {}: {why}; hint: write REGISTRY/REPO:TAG, e.g. 127.0.0.1:5000/meters:v3",
                crate::untrusted::text::for_log(text)
            ))
        };
        if text.contains('@') {
            return Err(bad("a digest cannot be a tag"));
        }
        let slash = text.rfind('/').map_or(0, |i| i + 1);
        let Some(colon) = text[slash..].rfind(':').map(|i| i + slash) else {
            return Err(bad("no tag"));
        };
        let (name, tag) = (&text[..colon], &text[colon + 1..]);
        // The distribution spec's tag grammar: [A-Za-z0-9_][A-Za-z0-9._-]{0,127}.
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && !tag.starts_with(['.', '-'])
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        let name_ok = !name.is_empty()
            && name.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'.' | b'_' | b'-' | b'/' | b':')
            });
        if !tag_ok {
            return Err(bad(
                "the tag must be 1-128 of [A-Za-z0-9_.-], not starting with . or -",
            ));
        }
        if !name_ok {
            return Err(bad("the repository name must be lowercase [a-z0-9._-/]"));
        }
        Ok(ImageRef {
            name: name.into(),
            tag: tag.into(),
        })
    }
}

impl ImageSettings {
    /// Flags win; an absent flag falls back to the action input of the same name (`input`),
    /// then to the environment (`env`).
    pub fn resolve(
        args: BuildImageArgs,
        input: impl Fn(&str) -> Option<String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, UsageError> {
        let BuildImageArgs {
            model,
            tags,
            base,
            config,
            oci_layout,
            push,
            insecure,
            username,
            password_stdin,
            platform,
            serve_binary,
            revision,
            source,
            licenses,
            ecr,
        } = args;
        let model = model
            .or_else(|| input("model").map(PathBuf::from))
            .ok_or_else(|| {
                UsageError::new("no model; hint: pass --model model.onnx (from `wms export-onnx`)")
            })?;
        let tags: Vec<String> = if tags.is_empty() {
            input("tags")
                .map(|t| {
                    t.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default()
        } else {
            tags
        };
        let tags = tags
            .iter()
            .map(|t| ImageRef::parse(t))
            .collect::<Result<Vec<_>, _>>()?;
        let base_flag = base.or_else(|| input("base"));
        let platform = platform
            .or_else(|| input("platform"))
            .unwrap_or_else(|| oci::PLATFORM.into());
        if platform != oci::PLATFORM {
            return Err(UsageError::new(format!(
                "--platform {}: only {} can be built; hint: omit --platform",
                crate::untrusted::text::for_log(&platform),
                oci::PLATFORM
            )));
        }
        let oci_layout = oci_layout.or_else(|| input("oci-layout").map(PathBuf::from));
        let pushing = actions::flag_or_input(push, "push", &input)?;
        let insecure = actions::flag_or_input(insecure, "insecure", &input)?;
        let (base, base_access) = resolve_base(base_flag.as_deref(), insecure)?;
        let pull = base_access.is_some();
        // One password for every registry; stdin can be read once.
        let login = match (username, password_stdin) {
            (Some(user), true) if pushing || pull => Some((user, read_password_stdin()?)),
            _ => None,
        };
        let docker_config = env(env_vars::DOCKER_CONFIG)
            .map(|d| PathBuf::from(d).join("config.json"))
            .or_else(|| env(env_vars::HOME).map(|h| PathBuf::from(h).join(".docker/config.json")));
        let access = PushSettings {
            insecure,
            login,
            docker_config,
            ecr: actions::flag_or_input(ecr, "ecr", &input)?,
        };
        let pull = base_access.map(|b| PushSettings {
            insecure: b.insecure,
            // The default base is public: the push credentials are not offered to its registry.
            login: if b.explicit {
                access.login.clone()
            } else {
                None
            },
            ..access.clone()
        });
        let push = if pushing {
            if tags.is_empty() {
                return Err(UsageError::new(
                    "--push without --tag; hint: name where to push with --tag REGISTRY/REPO:TAG",
                ));
            }
            if insecure
                && let Some(t) = tags
                    .iter()
                    .find(|t| !oci::registry::Target::new(&t.name, &t.tag).is_loopback())
            {
                return Err(UsageError::new(format!(
                    "--insecure with {}: plain HTTP is only allowed to a registry on this machine (127.0.0.1, ::1, localhost); hint: push over https",
                    t.name
                )));
            }
            Some(access)
        } else {
            None
        };
        if oci_layout.is_none() && push.is_none() {
            return Err(UsageError::new(
                "nowhere to put the image; hint: pass --oci-layout DIR and/or --push",
            ));
        }
        let created = match env(env_vars::SOURCE_DATE_EPOCH) {
            Some(v) => v.trim().parse::<u64>().map_err(|_| {
                UsageError::new(format!(
                    "{}={}: not a number of seconds; hint: use `git log -1 --format=%ct`",
                    env_vars::SOURCE_DATE_EPOCH,
                    crate::untrusted::text::for_log(&v)
                ))
            })?,
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let config = config.or_else(|| input("config").map(PathBuf::from));
        let serve_binary = match serve_binary {
            Some(p) => p,
            None => sibling_binary("wms-serve")?,
        };
        let ort_library =
            crate::ort_runtime::locate().map_err(|e| UsageError::new(e.to_string()))?;
        let source = source.or_else(|| {
            let server = env(env_vars::GITHUB_SERVER_URL)?;
            let repo = env(env_vars::GITHUB_REPOSITORY)?;
            Some(format!("{server}/{repo}"))
        });
        Ok(ImageSettings {
            inputs: ImageInputs {
                model,
                config,
                serve_binary,
                ort_library,
                base,
                created,
                revision: revision.or_else(|| env(env_vars::GITHUB_SHA)),
                source,
                licenses: licenses.unwrap_or_else(|| DEFAULT_LICENSES.into()),
                layer_cache: oci::blob::GzipCache::new(layer_cache_dir(&env)),
            },
            tags,
            oci_layout,
            push,
            pull,
        })
    }
}

/// How a registry base is pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BaseAccess {
    /// Plain HTTP: only with `--insecure` and a base on loopback.
    insecure: bool,
    /// `--base` named it (not [`oci::DEFAULT_BASE`]).
    explicit: bool,
}

/// `--base` (flag or input): `scratch`, a reference, or, when absent, [`oci::DEFAULT_BASE`].
/// `--insecure` is for registries on loopback: the default base is pulled over https whatever it
/// says; an explicit non-loopback base with it is a usage error.
fn resolve_base(
    flag: Option<&str>,
    insecure: bool,
) -> Result<(Base, Option<BaseAccess>), UsageError> {
    let reference = match flag {
        Some("scratch") => return Ok((Base::Scratch, None)),
        None => oci::pull::BaseRef::parse(oci::DEFAULT_BASE).expect("the default base parses"),
        Some(other) => oci::pull::BaseRef::parse(other).map_err(|why| {
            UsageError::new(format!(
                "--base {}: {why}; hint: write REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:…, e.g. {}, or scratch",
                crate::untrusted::text::for_log(other),
                oci::DEFAULT_BASE
            ))
        })?,
    };
    let explicit = flag.is_some();
    if insecure && explicit && !reference.is_loopback() {
        return Err(UsageError::new(format!(
            "--insecure with --base {reference}: plain HTTP is only allowed to a registry on this machine (127.0.0.1, ::1, localhost); hint: pull the base over https"
        )));
    }
    let access = BaseAccess {
        insecure: insecure && reference.is_loopback(),
        explicit,
    };
    Ok((Base::Registry(reference), Some(access)))
}

/// `$WMS_CACHE_DIR/layers`, else `$XDG_CACHE_HOME/wms/layers`, else `~/.cache/wms/layers`.
fn layer_cache_dir(env: &impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env(env_vars::WMS_CACHE_DIR)
        .map(PathBuf::from)
        .or_else(|| env(env_vars::XDG_CACHE_HOME).map(|d| PathBuf::from(d).join("wms")))
        .or_else(|| env(env_vars::HOME).map(|h| PathBuf::from(h).join(".cache/wms")))
        .map(|d| d.join("layers"))
}

/// The password from stdin, without its trailing newline.
fn read_password_stdin() -> Result<String, UsageError> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text)
        .map_err(|e| UsageError::new(format!("--password-stdin: cannot read stdin: {e}")))?;
    let password = text.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err(UsageError::new(
            "--password-stdin: stdin was empty; hint: pipe the password or token in, e.g. `echo \"$TOKEN\" | wms build-image …`",
        ));
    }
    Ok(password)
}

/// How to talk to `registry`: its credentials ([`credentials_for`], masked before anything can
/// print them) and the timeout per request.
fn registry_options(
    gh: &Actions,
    registry: &str,
    access: &PushSettings,
) -> anyhow::Result<oci::registry::RegistryOptions> {
    let (credentials, tried) = credentials_for(registry, access)?;
    if let Some(c) = &credentials {
        gh.add_mask(&c.password);
    }
    Ok(oci::registry::RegistryOptions {
        insecure: access.insecure,
        credentials,
        tried,
        timeout: std::time::Duration::from_secs(300),
    })
}

/// Credentials for `registry`: `--username`/`--password-stdin`, else ECR GetAuthorizationToken
/// for an ECR host (or any host with `--ecr`), else the Docker config's `auths` entry. Returns
/// them with every source looked at (for a 401 message).
fn credentials_for(
    registry: &str,
    push: &PushSettings,
) -> anyhow::Result<(Option<oci::registry::Credentials>, Vec<String>)> {
    let mut tried = Vec::new();
    if let Some((username, password)) = &push.login {
        tried.push("--username/--password-stdin".to_string());
        return Ok((
            Some(oci::registry::Credentials {
                username: username.clone(),
                password: password.clone(),
                source: "--password-stdin".into(),
            }),
            tried,
        ));
    }
    if push.ecr || oci::ecr::parse_host(registry).is_some() {
        tried.push("ECR GetAuthorizationToken".to_string());
        // ECR's answer is authoritative for its registries: a Docker config entry for an ECR
        // host is at best a token from an earlier `docker login`, expired after 12 hours.
        let credentials = oci::ecr::login(registry, &Actions::from_env())?;
        return Ok((Some(credentials), tried));
    }
    if let Some(path) = &push.docker_config {
        tried.push(path.display().to_string());
        if let Some(c) = docker_config_auth(path, registry)? {
            return Ok((Some(c), tried));
        }
    }
    tried.push("anonymous".into());
    Ok((None, tried))
}

/// The `auths.<registry>.auth` (base64 `user:password`) of a Docker `config.json`.
fn docker_config_auth(
    path: &Path,
    registry: &str,
) -> anyhow::Result<Option<oci::registry::Credentials>> {
    use base64::Engine as _;
    let bytes = match fs_err::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let config: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON; hint: fix or remove it", path.display()))?;
    let auths = &config["auths"];
    let entry = [
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
    ]
    .iter()
    .find_map(|k| auths.get(k))
    .and_then(|e| e["auth"].as_str());
    let Some(encoded) = entry else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .and_then(|d| {
            d.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        });
    let Some((username, password)) = decoded else {
        anyhow::bail!(
            "{}: auths.{registry}.auth is not base64 of user:password; hint: run `docker login {registry}` again",
            path.display()
        );
    };
    Ok(Some(oci::registry::Credentials {
        username,
        password,
        source: path.display().to_string(),
    }))
}

/// Pulls a registry base (`None` for `scratch`) with the credentials of its registry.
fn pull_base(
    gh: &Actions,
    settings: &ImageSettings,
) -> anyhow::Result<Option<oci::pull::BaseImage>> {
    let (Base::Registry(reference), Some(access)) = (&settings.inputs.base, &settings.pull) else {
        return Ok(None);
    };
    let opts = registry_options(gh, &reference.registry, access)?;
    let base = oci::pull::pull(reference, &opts)?;
    tracing::info!(base = %reference, digest = base.digest, layers = base.layers.len(), "base pulled");
    Ok(Some(base))
}

/// A binary installed next to the running `wms`.
fn sibling_binary(name: &str) -> Result<PathBuf, UsageError> {
    let exe = std::env::current_exe()
        .map_err(|e| UsageError::new(format!("cannot find the running wms: {e}")))?;
    let path = exe.with_file_name(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(UsageError::new(format!(
            "{} not found next to wms; hint: pass --serve-binary PATH",
            path.display()
        )))
    }
}

pub fn run(args: BuildImageArgs) -> anyhow::Result<()> {
    let gh = Actions::from_env();
    let settings = ImageSettings::resolve(args, crate::github::actions::input, |k| {
        std::env::var(k).ok().filter(|v| !v.is_empty())
    })?;
    // A bad model is named before a base is pulled (the default base needs the network).
    oci::read_model(&settings.inputs.model).context("cannot build the image")?;
    let base = pull_base(&gh, &settings)?;
    let image = oci::build(&settings.inputs, base.as_ref()).context("cannot build the image")?;
    let sbom = oci::sbom::build(&oci::sbom::SbomInputs {
        image: &image,
        name: settings.tags.first().map(|t| t.name.as_str()),
        model: &settings.inputs.model,
        serve_binary: &settings.inputs.serve_binary,
        ort_library: &settings.inputs.ort_library,
        created: settings.inputs.created,
        licenses: &settings.inputs.licenses,
    })?;
    if let Some(dir) = &settings.oci_layout {
        let refs: Vec<String> = settings.tags.iter().map(|t| t.tag.clone()).collect();
        oci::layout::write_layout(dir, &image, &refs)
            .with_context(|| format!("cannot write {}", dir.display()))?;
        // An untagged image stays the layout's only entry: `skopeo … oci:DIR` and other
        // readers without a ref name refuse a layout with two.
        if refs.is_empty() {
            tracing::info!(layout = %dir.display(), "SBOM not added to an untagged layout; pass --tag to add it");
        } else {
            oci::sbom::write_layout(dir, &sbom)?;
        }
        tracing::info!(layout = %dir.display(), digest = image.digest(), "image written");
    }
    let mut pushed = oci::registry::PushReport::default();
    let mut referrers = Vec::new();
    if let Some(push) = &settings.push {
        let targets: Vec<oci::registry::Target> = settings
            .tags
            .iter()
            .map(|t| oci::registry::Target::new(&t.name, &t.tag))
            .collect();
        let mut registries: Vec<&str> = targets.iter().map(|t| t.registry.as_str()).collect();
        registries.sort_unstable();
        registries.dedup();
        for registry in registries {
            let opts = registry_options(&gh, registry, push)?;
            let mine: Vec<_> = targets
                .iter()
                .filter(|t| t.registry == registry)
                .cloned()
                .collect();
            let report = oci::registry::push(&image, &mine, &opts)
                .with_context(|| format!("cannot push to {registry}"))?;
            // After the image: the SBOM's `subject` must name a manifest the registry has.
            referrers.extend(oci::sbom::push(&sbom, &mine, &opts)?);
            tracing::info!(
                registry,
                uploaded = report.uploaded.len(),
                mounted = report.mounted.len(),
                existing = report.existing.len(),
                "pushed"
            );
            pushed.uploaded.extend(report.uploaded);
            pushed.mounted.extend(report.mounted);
            pushed.existing.extend(report.existing);
            pushed.retries += report.retries;
        }
        pushed.manifest_digest = image.digest().to_string();
    }
    report(
        &gh,
        &settings,
        &image,
        settings.oci_layout.as_deref(),
        &pushed,
        (&sbom.digest, &referrers),
    )
}

fn report(
    gh: &Actions,
    settings: &ImageSettings,
    image: &oci::BuiltImage,
    layout: Option<&Path>,
    pushed: &oci::registry::PushReport,
    (sbom_digest, referrers): (&str, &[(String, oci::sbom::Referrers)]),
) -> anyhow::Result<()> {
    let image_ref = settings
        .tags
        .first()
        .map(|t| format!("{}@{}", t.name, image.digest()))
        .unwrap_or_default();
    let tags: Vec<String> = settings
        .tags
        .iter()
        .map(|t| format!("{}:{}", t.name, t.tag))
        .collect();
    let size = image.compressed_size();
    gh.set_output("digest", image.digest())?;
    gh.set_output("image", &image_ref)?;
    gh.set_output("tags", &tags.join("\n"))?;
    gh.set_output("compressed_size", &size.to_string())?;
    gh.set_output("sbom_digest", sbom_digest)?;
    let mut summary = format!(
        "### Image {}\n\n| layer | digest | compressed | uncompressed |\n|---|---|---:|---:|\n",
        md_code(image.digest())
    );
    for l in &image.layers {
        summary.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            l.role,
            md_code(&l.digest[..19]),
            l.size,
            l.uncompressed_size
        ));
    }
    summary.push_str(&format!("\nCompressed size: {size} bytes.\n"));
    gh.append_summary(&summary)?;
    let json = serde_json::json!({
        "digest": image.digest(),
        "image": image_ref,
        "tags": tags,
        "compressed_size": size,
        "layers": image.layers,
        "oci_layout": layout.map(|p| p.display().to_string()),
        "pushed": settings.push.as_ref().map(|_| pushed),
        "sbom_digest": sbom_digest,
        "sbom_referrers": referrers
            .iter()
            .map(|(repository, how)| serde_json::json!({"repository": repository, "via": how}))
            .collect::<Vec<_>>(),
    });
    println!("{json}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_base_is_distroless_cc_pulled_over_https() {
        let (base, access) = resolve_base(None, true).unwrap();
        let Base::Registry(r) = base else {
            panic!("the default base is a registry image")
        };
        assert_eq!(r.to_string(), oci::DEFAULT_BASE);
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("gcr.io", "distroless/cc-debian12")
        );
        assert_eq!(
            access,
            Some(BaseAccess {
                insecure: false,
                explicit: false
            })
        );
        assert_eq!(
            resolve_base(Some("scratch"), true).unwrap(),
            (Base::Scratch, None)
        );
        let (_, access) = resolve_base(Some("127.0.0.1:5000/base/cc:1"), true).unwrap();
        assert_eq!(
            access,
            Some(BaseAccess {
                insecure: true,
                explicit: true
            })
        );
        let err = resolve_base(Some(oci::DEFAULT_BASE), true).unwrap_err();
        assert!(err.message.contains("--insecure with --base"), "{err}");
        // `--help` names the default.
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: BuildImageArgs,
        }
        let help = <Cli as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        assert!(help.contains(oci::DEFAULT_BASE), "{help}");
    }

    #[test]
    fn tags_are_parsed_and_bad_ones_named() {
        assert_eq!(
            ImageRef::parse("127.0.0.1:5000/meters/unet:v3").unwrap(),
            ImageRef {
                name: "127.0.0.1:5000/meters/unet".into(),
                tag: "v3".into()
            }
        );
        for bad in [
            "127.0.0.1:5000/meters",
            "x@sha256:00",
            "Up/x:v",
            "x:-v",
            "x:a\nb",
        ] {
            let err = ImageRef::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with("--tag "), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
