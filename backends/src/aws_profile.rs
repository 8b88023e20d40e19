//! AWS profiles for the S3 backend (cargo feature `aws-profile`).
//!
//! `object_store` reads credentials from `AWS_*` variables, web identity,
//! ECS and IMDS, but not from the shared files of the AWS CLI and SDKs. With
//! this feature, the S3 backend reads the profile named by its `profile`
//! option, or else by `AWS_PROFILE` unless access keys are given directly
//! (`AWS_ACCESS_KEY_ID` or the `access_key_id` option win over
//! `AWS_PROFILE`, as in the AWS SDKs; an explicit `profile` option wins over
//! everything). Files: `AWS_SHARED_CREDENTIALS_FILE` (default
//! `~/.aws/credentials`, sections `[NAME]`) and `AWS_CONFIG_FILE` (default
//! `~/.aws/config`, sections `[profile NAME]` or `[default]`); a key in the
//! credentials file wins over the same key in the config file.
//!
//! Understood in a profile:
//! - `aws_access_key_id`, `aws_secret_access_key`, `aws_session_token`;
//! - `credential_process`: a command (run with `sh -c`) printing the JSON
//!   of the AWS CLI's external-process protocol (`Version` 1,
//!   `AccessKeyId`, `SecretAccessKey`, `SessionToken`, `Expiration`); it is
//!   run on first use and again 5 minutes before `Expiration`;
//! - `region`, used when no region is given otherwise (`region` option,
//!   `AWS_REGION`, `AWS_DEFAULT_REGION`).
//!
//! Not understood, with an error that says what to do instead: assumed roles
//! (`role_arn`, `source_profile`, `credential_source`), SSO (`sso_session`,
//! `sso_start_url`) and `web_identity_token_file` in a profile. For those,
//! `credential_process = aws configure export-credentials --profile NAME
//! --format process` lets the AWS CLI do the work. This is a reader of its
//! own rather than `aws-config`: that crate brings about twenty AWS crates
//! (STS among them) into every `--all-features` build.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredential};
use object_store::{CredentialProvider, StaticCredentialProvider};
use serde::Deserialize;

use crate::object_store_backend::header_safe;
use crate::{BackendError, ErrorKind, Result};

/// Credentials from `credential_process` are fetched again this long before
/// they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// The settings of one profile, merged from both files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    /// Keys (lower case) and values, the credentials file's winning.
    pub settings: BTreeMap<String, String>,
}

/// Where a profile's credentials come from.
enum Source {
    Static(AwsCredential),
    Process(String),
}

/// Point `builder` at the profile `explicit` or `AWS_PROFILE` (see the module
/// docs); unchanged when no profile applies.
pub fn apply(builder: AmazonS3Builder, explicit: Option<&str>) -> Result<AmazonS3Builder> {
    let name = match explicit {
        Some(name) => name.trim().to_string(),
        None => {
            let keys_given = builder
                .get_config_value(&AmazonS3ConfigKey::AccessKeyId)
                .is_some();
            match std::env::var("AWS_PROFILE") {
                Ok(name) if !name.trim().is_empty() && !keys_given => name.trim().to_string(),
                _ => return Ok(builder),
            }
        }
    };
    if name.is_empty() {
        return Err(error(ErrorKind::Other, "s3 option profile is empty"));
    }
    let profile = load(&name, &credentials_file(), &config_file())?;
    let mut builder = builder;
    if builder
        .get_config_value(&AmazonS3ConfigKey::Region)
        .is_none()
    {
        if let Some(region) = profile.settings.get("region") {
            builder = builder.with_region(region);
        }
    }
    let provider: object_store::aws::AwsCredentialProvider = match source(&profile)? {
        Source::Static(credential) => Arc::new(StaticCredentialProvider::new(credential)),
        Source::Process(command) => Arc::new(ProcessProvider {
            profile: profile.name.clone(),
            command,
            cached: tokio::sync::Mutex::new(None),
        }),
    };
    Ok(builder.with_credentials(provider))
}

/// `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`.
fn credentials_file() -> PathBuf {
    file_from_env("AWS_SHARED_CREDENTIALS_FILE", "credentials")
}

/// `AWS_CONFIG_FILE`, else `~/.aws/config`.
fn config_file() -> PathBuf {
    file_from_env("AWS_CONFIG_FILE", "config")
}

fn file_from_env(var: &str, name: &str) -> PathBuf {
    match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(path) => crate::home::expand(path),
        // Without a home, a fixed place rather than one relative to
        // wherever cairn was started.
        None => crate::home::dir()
            .unwrap_or_else(|| PathBuf::from("/"))
            .join(".aws")
            .join(name),
    }
}

fn error(kind: ErrorKind, message: impl Into<String>) -> BackendError {
    BackendError::new(kind, message)
}

/// Read profile `name` from the two files (either may be missing, not both
/// may lack the profile).
pub fn load(name: &str, credentials: &Path, config: &Path) -> Result<Profile> {
    let read = |path: &Path| -> Result<Option<String>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BackendError::from_io(
                format_args!("read AWS profile file {}", path.display()),
                e,
            )),
        }
    };
    let mut found = false;
    let mut settings = BTreeMap::new();
    if let Some(text) = read(config)? {
        // `[default]` or `[profile default]`; other profiles only with the
        // `profile ` prefix.
        for (section, values) in parse_ini(&text) {
            let section_name = match section.strip_prefix("profile ") {
                Some(rest) => rest.trim(),
                None if section == "default" => "default",
                None => continue,
            };
            if section_name == name {
                found = true;
                settings.extend(values);
            }
        }
    }
    if let Some(text) = read(credentials)? {
        for (section, values) in parse_ini(&text) {
            if section == name {
                found = true;
                settings.extend(values);
            }
        }
    }
    if !found {
        return Err(error(
            ErrorKind::Unauthenticated,
            format!(
                "AWS profile {name:?} is in neither {} nor {}",
                credentials.display(),
                config.display()
            ),
        ));
    }
    Ok(Profile {
        name: name.to_string(),
        settings,
    })
}

/// Sections of an INI file in order, each with its `key = value` pairs
/// (keys lower-cased). Comments start with `#` or `;`; indented lines after
/// a key with an empty value are that key's sub-settings (e.g. `s3 =`) and
/// are skipped.
pub(crate) fn parse_ini(text: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let mut sections: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    let mut in_nested = false;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let indented = raw.starts_with([' ', '\t']);
        if in_nested && indented {
            continue;
        }
        in_nested = false;
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let section = section.split_whitespace().collect::<Vec<_>>().join(" ");
            sections.push((section, BTreeMap::new()));
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let Some((_, values)) = sections.last_mut() else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim();
        if value.is_empty() {
            in_nested = true;
            continue;
        }
        values.insert(key, value.to_string());
    }
    sections
}

/// How the profile supplies credentials, or why cairn cannot use it.
fn source(profile: &Profile) -> Result<Source> {
    let s = &profile.settings;
    let name = &profile.name;
    if let (Some(key_id), Some(secret)) =
        (s.get("aws_access_key_id"), s.get("aws_secret_access_key"))
    {
        return Ok(Source::Static(AwsCredential {
            key_id: key_id.clone(),
            secret_key: secret.clone(),
            token: s.get("aws_session_token").cloned(),
        }));
    }
    if let Some(command) = s.get("credential_process") {
        return Ok(Source::Process(command.clone()));
    }
    let unsupported = [
        ("role_arn", "assumes a role"),
        ("sso_session", "uses SSO"),
        ("sso_start_url", "uses SSO"),
        ("web_identity_token_file", "uses web identity"),
    ];
    for (key, what) in unsupported {
        if s.contains_key(key) {
            return Err(error(
                ErrorKind::Unsupported,
                format!(
                    "AWS profile {name:?} {what} ({key}), which cairn does not do itself; add \
                     `credential_process = aws configure export-credentials --profile {name} --format process` \
                     to a profile of its own and use that"
                ),
            ));
        }
    }
    Err(error(
        ErrorKind::Unauthenticated,
        format!(
            "AWS profile {name:?} has no credentials (aws_access_key_id and aws_secret_access_key, or credential_process)"
        ),
    ))
}

/// Runs `credential_process` and keeps its answer until shortly before it
/// expires.
struct ProcessProvider {
    profile: String,
    command: String,
    cached: tokio::sync::Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

impl std::fmt::Debug for ProcessProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The command line could hold a secret: show the profile only.
        f.debug_struct("ProcessProvider")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// The JSON `credential_process` prints.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ProcessOutput {
    version: u32,
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    expiration: Option<String>,
}

#[async_trait]
impl CredentialProvider for ProcessProvider {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        if let Some((credential, expires)) = cached.as_ref() {
            let fresh = match expires {
                None => true,
                Some(t) => SystemTime::now() + REFRESH_BEFORE_EXPIRY < *t,
            };
            if fresh {
                return Ok(Arc::clone(credential));
            }
        }
        let (credential, expires) =
            self.run()
                .await
                .map_err(|e| object_store::Error::Unauthenticated {
                    path: String::new(),
                    source: Box::new(e),
                })?;
        let credential = Arc::new(credential);
        *cached = Some((Arc::clone(&credential), expires));
        Ok(credential)
    }
}

impl ProcessProvider {
    async fn run(&self) -> Result<(AwsCredential, Option<SystemTime>)> {
        let what = format!("credential_process of AWS profile {:?}", self.profile);
        // Without cairn's passphrase and other backends' secrets; the
        // profile variables (AWS_PROFILE, AWS_CONFIG_FILE…) pass.
        let output = crate::child::shell_async(&self.command)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| BackendError::from_io(format_args!("run {what}"), e))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.trim().lines().last().unwrap_or_default();
            return Err(error(
                ErrorKind::Unauthenticated,
                format!("{what} failed ({}): {last}", output.status),
            ));
        }
        parse_process_output(&output.stdout)
            .map_err(|why| error(ErrorKind::Unauthenticated, format!("{what}: {why}")))
    }
}

/// The credential and its expiry from `credential_process` output.
pub(crate) fn parse_process_output(
    stdout: &[u8],
) -> std::result::Result<(AwsCredential, Option<SystemTime>), String> {
    let out: ProcessOutput = serde_json::from_slice(stdout)
        .map_err(|e| format!("output is not the expected JSON: {e}"))?;
    if out.version != 1 {
        return Err(format!("unknown Version {} (expected 1)", out.version));
    }
    let expires = match &out.expiration {
        None => None,
        Some(t) => Some(parse_rfc3339(t).ok_or_else(|| format!("bad Expiration {t:?}"))?),
    };
    let token = out.session_token.filter(|t| !t.is_empty());
    if !header_safe(&out.access_key_id) || !token.as_deref().is_none_or(header_safe) {
        return Err(
            "AccessKeyId or SessionToken contains a line break or control character".into(),
        );
    }
    Ok((
        AwsCredential {
            key_id: out.access_key_id,
            secret_key: out.secret_access_key,
            token,
        },
        expires,
    ))
}

/// An RFC 3339 time (`2030-01-02T03:04:05Z`, with a fraction or an offset)
/// as a time; `None` for anything else, or a time before 1970.
fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let t: jiff::Timestamp = text.trim().parse().ok()?;
    // An expiry before 1970 is a broken clock or a broken process: refused
    // as malformed rather than taken as "expired", which would run the
    // process again for every request.
    (t >= jiff::Timestamp::UNIX_EPOCH).then(|| t.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn profiles_merge_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let creds = write(
            dir.path(),
            "credentials",
            "# comment\n[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = d\n\n\
             [work]\naws_access_key_id=AKIAWORK\naws_secret_access_key = s3cr=t\naws_session_token = tok\n",
        );
        let config = write(
            dir.path(),
            "config",
            "[default]\nregion = us-west-2\n[profile  work]\nregion = eu-west-2\ns3 =\n  max_concurrent_requests = 20\n  region = nested\noutput = json\n\
             [work]\nregion = not-this-one\n",
        );
        let p = load("work", &creds, &config).unwrap();
        assert_eq!(p.settings["region"], "eu-west-2");
        assert_eq!(p.settings["output"], "json");
        assert_eq!(p.settings["aws_secret_access_key"], "s3cr=t");
        match source(&p).unwrap() {
            Source::Static(c) => {
                assert_eq!(c.key_id, "AKIAWORK");
                assert_eq!(c.token.as_deref(), Some("tok"));
            }
            Source::Process(_) => panic!("static keys expected"),
        }
        let d = load("default", &creds, &config).unwrap();
        assert_eq!(d.settings["region"], "us-west-2");
        let missing = load("nope", &creds, &config).unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::Unauthenticated);
        assert!(missing.to_string().contains("nope"), "{missing}");
        // No files at all: the profile is missing, not an I/O error.
        let none = load("x", &dir.path().join("a"), &dir.path().join("b")).unwrap_err();
        assert_eq!(none.kind(), ErrorKind::Unauthenticated);
    }

    #[test]
    fn unsupported_profiles_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let config = write(
            dir.path(),
            "config",
            "[profile sso]\nsso_session = corp\n[profile role]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = default\n[profile empty]\nregion = x\n",
        );
        let creds = dir.path().join("none");
        for name in ["sso", "role"] {
            let Err(e) = source(&load(name, &creds, &config).unwrap()) else {
                panic!("{name} accepted");
            };
            assert_eq!(e.kind(), ErrorKind::Unsupported);
            assert!(e.to_string().contains("export-credentials"), "{e}");
        }
        let Err(e) = source(&load("empty", &creds, &config).unwrap()) else {
            panic!("empty accepted");
        };
        assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    }

    #[test]
    fn process_output_parses() {
        let (c, exp) = parse_process_output(
            br#"{"Version":1,"AccessKeyId":"AKIA1","SecretAccessKey":"s","SessionToken":"t","Expiration":"2030-01-02T03:04:05Z"}"#,
        )
        .unwrap();
        assert_eq!(
            (c.key_id.as_str(), c.token.as_deref()),
            ("AKIA1", Some("t"))
        );
        assert_eq!(
            exp.unwrap().duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_893_553_445
        );
        assert!(
            parse_process_output(br#"{"Version":2,"AccessKeyId":"a","SecretAccessKey":"s"}"#)
                .is_err()
        );
        assert!(parse_process_output(b"not json").is_err());
    }

    #[test]
    fn rfc3339_times() {
        let secs =
            |t: &str| parse_rfc3339(t).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs());
        assert_eq!(secs("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(secs("2000-03-01T00:00:00.123Z"), Some(951_868_800));
        assert_eq!(secs("2000-03-01T02:00:00+02:00"), Some(951_868_800));
        assert_eq!(secs("2000-02-29T23:00:00-01:00"), Some(951_868_800));
        assert_eq!(secs("2000-13-01T00:00:00Z"), None);
        assert_eq!(secs("yesterday"), None);
    }

    #[tokio::test]
    async fn credential_process_is_run_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("count");
        let provider = ProcessProvider {
            profile: "p".into(),
            command: format!(
                "echo x >> '{}'; echo '{{\"Version\": 1, \"AccessKeyId\": \"AKIAP\", \"SecretAccessKey\": \"sp\", \"Expiration\": \"2999-01-01T00:00:00Z\"}}'",
                count.display()
            ),
            cached: tokio::sync::Mutex::new(None),
        };
        let a = provider.get_credential().await.unwrap();
        let b = provider.get_credential().await.unwrap();
        assert_eq!(a.key_id, "AKIAP");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 1);
        let failing = ProcessProvider {
            profile: "p".into(),
            command: "echo nope >&2; exit 3".into(),
            cached: tokio::sync::Mutex::new(None),
        };
        let e = failing.get_credential().await.unwrap_err();
        assert!(
            matches!(e, object_store::Error::Unauthenticated { .. }),
            "{e}"
        );
        assert!(e.to_string().contains("nope") || format!("{e:?}").contains("nope"));
    }

    #[tokio::test]
    async fn credential_process_gets_no_secrets_but_its_profile() {
        // Variables no other test reads, so setting them races with nothing.
        std::env::set_var("CAIRN_TEST_CREDPROC_PASSWORD", "credproc-secret-1");
        std::env::set_var("AWS_TEST_CREDPROC_SESSION_TOKEN", "credproc-secret-2");
        std::env::set_var("AWS_TEST_CREDPROC_PROFILE", "credproc-profile");
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("env");
        let provider = ProcessProvider {
            profile: "p".into(),
            command: format!(
                "env > '{}'; echo '{{\"Version\": 1, \"AccessKeyId\": \"AKIAP\", \"SecretAccessKey\": \"sp\"}}'",
                env.display()
            ),
            cached: tokio::sync::Mutex::new(None),
        };
        provider.get_credential().await.unwrap();
        let env = std::fs::read_to_string(&env).unwrap();
        assert!(!env.contains("credproc-secret"), "{env}");
        assert!(
            env.contains("AWS_TEST_CREDPROC_PROFILE=credproc-profile"),
            "{env}"
        );
        assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
    }
}
