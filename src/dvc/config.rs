//! `.dvc/config` and `.dvc/config.local`: the default remote (`[core] remote = name`) and each
//! remote's section (`['remote "name"']` with `url`, `endpointurl`, `region`). DVC writes them
//! with configobj; the local file's keys override the shared one's, section by section.
//!
//! Both files come from the repository (a pull request can commit `config.local` too), so every
//! value remembers the file it came from: [`super::trust`] decides whether an `endpointurl` may
//! be used, and its errors name that file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::DvcError;

/// One remote's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteConfig {
    pub url: String,
    /// Set by the repository: used only as [`super::trust::EndpointPolicy`] allows.
    pub endpointurl: Option<ConfigValue>,
    pub region: Option<String>,
}

/// A value and the config file that set it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigValue {
    pub value: String,
    pub file: PathBuf,
}

/// The merged configuration of one repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DvcConfig {
    /// `[core] remote`: the default remote's name.
    pub default_remote: Option<String>,
    /// Sections by name: `core`, `remote "origin"`, … → key → value.
    pub sections: BTreeMap<String, BTreeMap<String, ConfigValue>>,
}

impl DvcConfig {
    /// Reads `<dvc_dir>/config` then `<dvc_dir>/config.local` (both optional).
    pub fn load(dvc_dir: &Path) -> Result<DvcConfig, DvcError> {
        let mut cfg = DvcConfig::default();
        for name in ["config", "config.local"] {
            let path = dvc_dir.join(name);
            match fs_err::read_to_string(&path) {
                Ok(text) => cfg.merge(&path, &text)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(DvcError::Fs {
                        what: "read the DVC config",
                        source,
                    });
                }
            }
        }
        cfg.default_remote = cfg
            .sections
            .get("core")
            .and_then(|c| c.get("remote"))
            .map(|v| v.value.clone());
        Ok(cfg)
    }

    /// Merges one file's text (later files override earlier keys).
    pub fn merge(&mut self, path: &Path, text: &str) -> Result<(), DvcError> {
        let mut section: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let bad = |message: &str| DvcError::Config {
                path: path.to_path_buf(),
                line: i + 1,
                message: message.to_string(),
            };
            if let Some(rest) = line.strip_prefix('[') {
                let name = rest
                    .strip_suffix(']')
                    .ok_or_else(|| bad("a section header must end with `]`"))?;
                section = Some(unquote(name.trim()));
                self.sections
                    .entry(section.clone().unwrap_or_default())
                    .or_default();
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| bad("expected `key = value`"))?;
            let Some(sec) = &section else {
                return Err(bad("a key outside of any [section]"));
            };
            self.sections.entry(sec.clone()).or_default().insert(
                key.trim().to_string(),
                ConfigValue {
                    value: unquote(value.trim()),
                    file: path.to_path_buf(),
                },
            );
        }
        Ok(())
    }

    /// The remote `name`, or the default one when `name` is `None`.
    pub fn remote(
        &self,
        name: Option<&str>,
        config_path: &Path,
    ) -> Result<(String, RemoteConfig), DvcError> {
        let name = match name.or(self.default_remote.as_deref()) {
            Some(n) => n.to_string(),
            None => {
                return Err(DvcError::NoRemote {
                    path: config_path.to_path_buf(),
                });
            }
        };
        let section = self
            .sections
            .get(&format!("remote \"{name}\""))
            .ok_or_else(|| DvcError::UnknownRemote {
                path: config_path.to_path_buf(),
                name: name.clone(),
            })?;
        let url =
            section
                .get("url")
                .map(|v| v.value.clone())
                .ok_or_else(|| DvcError::UnknownRemote {
                    path: config_path.to_path_buf(),
                    name: name.clone(),
                })?;
        Ok((
            name,
            RemoteConfig {
                url,
                endpointurl: section.get("endpointurl").cloned(),
                region: section.get("region").map(|v| v.value.clone()),
            },
        ))
    }
}

/// Strips one level of matching `'…'` or `"…"` quotes (configobj quotes section names
/// containing `"` as `'remote "x"'`).
fn unquote(s: &str) -> String {
    for q in ['\'', '"'] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return s[1..s.len() - 1].to_string();
        }
    }
    s.to_string()
}

/// `<root>/.dvc/config`, for messages.
pub fn config_path(root: &Path) -> PathBuf {
    root.join(".dvc").join("config")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_dvc_remote_add_writes_and_local_overrides() {
        let shared = "[core]\n    remote = myremote\n['remote \"myremote\"']\n    url = s3://bucket/some/prefix\n    endpointurl = http://127.0.0.1:5000\n";
        let local = "['remote \"myremote\"']\n    region = eu-west-1\n    endpointurl = http://127.0.0.1:6000\n";
        let mut cfg = DvcConfig::default();
        cfg.merge(Path::new("config"), shared).unwrap();
        cfg.merge(Path::new("config.local"), local).unwrap();
        cfg.default_remote = Some("myremote".into());
        let (name, r) = cfg.remote(None, Path::new("config")).unwrap();
        assert_eq!(name, "myremote");
        assert_eq!(r.url, "s3://bucket/some/prefix");
        let endpoint = r.endpointurl.unwrap();
        assert_eq!(endpoint.value, "http://127.0.0.1:6000");
        // The error that refuses it names the file that set it.
        assert_eq!(endpoint.file, Path::new("config.local"));
        assert_eq!(r.region.as_deref(), Some("eu-west-1"));
        assert!(matches!(
            cfg.remote(Some("other"), Path::new("config")),
            Err(DvcError::UnknownRemote { .. })
        ));
        let err = DvcConfig::default()
            .merge(Path::new("c"), "[core\n")
            .unwrap_err();
        assert!(err.to_string().contains("c:1"), "{err}");
    }
}
