//! The files users copy rather than run through cargo: the systemd units,
//! the container image and the Kubernetes manifests of `deploy/`, and the
//! configurations of `examples/`. Each is checked by the tool that will
//! read it in production where one is at hand (`systemd-analyze verify`,
//! a YAML parser, `cairn config validate`), and against the others where
//! they must agree (user ids, paths, job names).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cairn::backends::conformance::loud_skip;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// The installed path of the binary in the units, replaced by the test
/// binary's for `systemd-analyze verify`, which checks that it exists.
const INSTALLED_BINARY: &str = "/usr/local/bin/cairn";

/// Say loudly that `what` is missing and skip, or fail under `CI=true`.
fn skip(what: &str) {
    let msg = format!("SKIPPED: {what}");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg} — CI=true, so this is a failure");
    }
    loud_skip(&msg);
}

fn systemd_analyze() -> Option<&'static str> {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        skip(
            "systemd-analyze not found (Debian package systemd; scripts/test installs it): \
             the units of deploy/systemd are not verified",
        );
        return None;
    }
    Some("systemd-analyze")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// deploy/systemd copied into a scratch directory with the test binary in
/// place of the installed one; the unit names to verify (every unit file,
/// and the instance of every drop-in directory with its service).
fn units_for_verify(dir: &Path) -> Vec<PathBuf> {
    let binary = assert_cmd::cargo::cargo_bin("cairn");
    assert!(binary.is_file(), "{} is not built", binary.display());
    let src = root().join("deploy/systemd");
    let mut units = BTreeSet::new();
    for entry in fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() {
            let instance = name
                .strip_suffix(".d")
                .unwrap_or_else(|| panic!("deploy/systemd/{name}: only drop-in directories"));
            fs::create_dir(dir.join(&name)).unwrap();
            for f in fs::read_dir(entry.path()).unwrap() {
                let f = f.unwrap();
                fs::copy(f.path(), dir.join(&name).join(f.file_name())).unwrap();
            }
            units.insert(dir.join(instance));
            if let Some(stem) = instance.strip_suffix(".timer") {
                units.insert(dir.join(format!("{stem}.service")));
            }
        } else if name.ends_with(".service") || name.ends_with(".timer") {
            let unit = fs::read_to_string(entry.path()).unwrap();
            if name.ends_with(".service") {
                assert!(
                    unit.contains(&format!("ExecStart={INSTALLED_BINARY} ")),
                    "deploy/systemd/{name}: ExecStart does not run {INSTALLED_BINARY}"
                );
            }
            let unit = unit.replace(INSTALLED_BINARY, binary.to_str().unwrap());
            fs::write(dir.join(&name), unit).unwrap();
            units.insert(dir.join(&name));
        }
    }
    units.into_iter().collect()
}

/// `systemd-analyze verify` on one unit: its exit status and everything
/// it printed (it exits 0 after warnings such as an unknown key).
fn verify(unit: &Path) -> (bool, String) {
    // --man=no: Documentation=man:cairn(1) is installed with the package,
    // not on a test machine.
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .output()
        .unwrap();
    (o.status.success(), text(&o))
}

#[test]
fn systemd_units_pass_systemd_analyze_verify_without_a_warning() {
    if systemd_analyze().is_none() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("cairn-deploy-")
        .tempdir()
        .unwrap();
    let units = units_for_verify(dir.path());
    let names: Vec<String> = units
        .iter()
        .map(|u| u.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "cairn-daemon.service",
        "cairn-job@.service",
        "cairn-job@.timer",
        "cairn-job@nightly.service",
        "cairn-job@nightly.timer",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    for unit in &units {
        let (ok, out) = verify(unit);
        assert!(
            ok && out.trim().is_empty(),
            "systemd-analyze verify {}: {}",
            unit.display(),
            if out.trim().is_empty() {
                "failed"
            } else {
                &out
            }
        );
    }

    // The check itself: a misspelt key in the same unit is reported (with
    // exit status 0, so the output is what must be read).
    let daemon = dir.path().join("cairn-daemon.service");
    let bad = dir.path().join("cairn-broken.service");
    let text = fs::read_to_string(&daemon)
        .unwrap()
        .replace("ProtectSystem=strict", "ProtectSystm=strict");
    fs::write(&bad, text).unwrap();
    let (_, out) = verify(&bad);
    assert!(out.contains("ProtectSystm"), "{out}");
}

/// The sandbox of a service unit: its lines from the marker comment to the
/// end of [Service], without comments.
fn sandbox(unit: &str, name: &str) -> Vec<String> {
    let start = unit
        .find("# ---- The sandbox")
        .unwrap_or_else(|| panic!("{name}: no sandbox marker"));
    unit[start..]
        .lines()
        .take_while(|l| !l.starts_with('['))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

#[test]
fn systemd_services_share_one_hardened_sandbox() {
    let daemon = read("deploy/systemd/cairn-daemon.service");
    let job = read("deploy/systemd/cairn-job@.service");
    let timer = read("deploy/systemd/cairn-job@.timer");
    assert!(daemon.contains("\nType=exec\n"), "daemon: Type=exec");
    assert!(daemon.contains(&format!("\nExecStart={INSTALLED_BINARY} daemon\n")));
    assert!(daemon.contains("\nExecReload=/bin/kill -HUP $MAINPID\n"));
    assert!(daemon.contains("\nRestart=on-failure\n"));
    assert!(job.contains("\nType=oneshot\n"), "job: Type=oneshot");
    // %i: %I would turn a job named db-main into db/main.
    assert!(job.contains(&format!("\nExecStart={INSTALLED_BINARY} run %i\n")));
    for line in [
        "Persistent=true",
        "RandomizedDelaySec=",
        "OnCalendar=",
        "WantedBy=timers.target",
    ] {
        assert!(timer.contains(line), "cairn-job@.timer lacks {line}");
    }

    let shared = sandbox(&daemon, "cairn-daemon.service");
    assert_eq!(
        shared,
        sandbox(&job, "cairn-job@.service"),
        "the two services' sandboxes differ"
    );
    for line in [
        "User=cairn",
        "StateDirectory=cairn",
        "CacheDirectory=cairn",
        "ConfigurationDirectory=cairn",
        "LoadCredential=passphrase:/etc/cairn/passphrase",
        "Environment=CAIRN_PASSWORD_FILE=%d/passphrase",
        "CapabilityBoundingSet=CAP_DAC_READ_SEARCH",
        "AmbientCapabilities=CAP_DAC_READ_SEARCH",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "PrivateTmp=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "SystemCallFilter=@system-service",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ] {
        assert!(
            shared.iter().any(|l| l == line),
            "the sandbox lacks {line}: {shared:#?}"
        );
    }
    assert!(
        !shared.iter().any(|l| l.starts_with("DynamicUser=yes")),
        "a dynamic user cannot own the state directory across upgrades"
    );
}

#[test]
fn systemd_services_exposure_is_at_most_2() {
    if systemd_analyze().is_none() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("cairn-deploy-")
        .tempdir()
        .unwrap();
    let units = units_for_verify(dir.path());
    for unit in units.iter().filter(|u| {
        let n = u.file_name().unwrap().to_string_lossy();
        // A template has no exposure of its own: its instance is measured.
        n.ends_with(".service") && !n.ends_with("@.service")
    }) {
        // --threshold is in tenths: fail above an exposure of 2.0
        // ("OK" in systemd's words; the default service is 9.6 "UNSAFE").
        let o = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager", "--threshold=20"])
            .arg(unit)
            .output()
            .unwrap();
        let out = text(&o);
        let level = out
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .unwrap_or_else(|| panic!("{}: no exposure level in\n{out}", unit.display()));
        assert!(
            o.status.success(),
            "{}: exposure {level}, more than 2.0",
            unit.display()
        );
    }
}

/// Every document of a YAML file, as JSON, parsed by Python's yaml module
/// (PyYAML, YAML 1.1 like Kubernetes' own parser).
fn yaml_documents(path: &Path) -> Option<Vec<serde_json::Value>> {
    const SCRIPT: &str = "import json, sys, yaml\n\
        with open(sys.argv[1]) as f:\n    \
        print(json.dumps([d for d in yaml.safe_load_all(f) if d is not None]))";
    let venv = std::env::var_os("CAIRN_TEST_SERVERS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/cairn-test-servers"))
        })
        .map(|d| d.join("venv/bin/python"));
    let pythons = ["python3".into(), "/usr/bin/python3".into()]
        .into_iter()
        .chain(venv);
    for python in pythons {
        let probe = Command::new(&python).args(["-c", "import yaml"]).output();
        if !probe.is_ok_and(|o| o.status.success()) {
            continue;
        }
        let o = Command::new(&python)
            .args(["-c", SCRIPT])
            .arg(path)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{} is not valid YAML:\n{}",
            path.display(),
            text(&o)
        );
        return Some(serde_json::from_slice(&o.stdout).unwrap());
    }
    skip(
        "no Python with the yaml module (Debian package python3-yaml; scripts/test installs it): \
         deploy/kubernetes is not parsed",
    );
    None
}

/// The pod template of a CronJob or Deployment.
fn pod_spec(doc: &serde_json::Value) -> &serde_json::Value {
    match doc["kind"].as_str() {
        Some("CronJob") => &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        Some("Deployment") => &doc["spec"]["template"]["spec"],
        other => panic!("no pod template in a {other:?}"),
    }
}

/// The user id of the image (`USER uid:gid` in the Containerfile).
fn image_uid() -> u64 {
    let file = read("deploy/container/Containerfile");
    let user = file
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("Containerfile: a USER line");
    let uid: u64 = user
        .split(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .expect("Containerfile: USER is numeric, so runAsNonRoot can check it");
    assert_ne!(uid, 0, "the image runs as root");
    uid
}

#[test]
fn kubernetes_manifests_parse_and_run_cairn_unprivileged() {
    let dir = root().join("deploy/kubernetes");
    let mut docs = Vec::new();
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml"),
            "{}",
            path.display()
        );
        let Some(parsed) = yaml_documents(&path) else {
            return;
        };
        docs.extend(parsed);
    }
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "CronJob",
        "Secret",
        "ConfigMap",
        "Deployment",
        "Service",
        "PersistentVolumeClaim",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    let of_kind = |k: &'static str| docs.iter().filter(move |d| d["kind"] == k);
    let config = of_kind("ConfigMap").next().unwrap()["data"]["cairn.toml"]
        .as_str()
        .expect("the ConfigMap holds cairn.toml")
        .to_string();
    let config: toml::Table = toml::from_str(&config).expect("cairn.toml of the ConfigMap");
    let jobs = config["jobs"].as_table().expect("[jobs] in the ConfigMap");

    let uid = image_uid();
    for doc in of_kind("CronJob").chain(of_kind("Deployment")) {
        let name = doc["metadata"]["name"].as_str().unwrap();
        let pod = pod_spec(doc);
        let sc = &pod["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{name}");
        assert_eq!(sc["runAsUser"], uid, "{name}: the image's user");
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        let containers = pod["containers"].as_array().unwrap();
        for c in containers {
            let csc = &c["securityContext"];
            assert_eq!(csc["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(csc["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(csc["capabilities"]["drop"][0], "ALL", "{name}");
            assert!(c["resources"]["limits"]["memory"].is_string(), "{name}");
            // With a read-only root, cairn writes only to these volumes.
            let mounts: Vec<&str> = c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["mountPath"].as_str().unwrap())
                .collect();
            for path in ["/var/lib/cairn", "/var/cache/cairn", "/etc/cairn/secrets"] {
                assert!(mounts.contains(&path), "{name}: {path} not mounted");
            }
            let args: Vec<&str> = c["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            if doc["kind"] == "CronJob" {
                assert_eq!(args[0], "run", "{name}: {args:?}");
                assert!(
                    jobs.contains_key(args[1]),
                    "{name} runs job {} which the ConfigMap lacks",
                    args[1]
                );
            } else {
                assert_eq!(args[0], "daemon", "{name}: {args:?}");
            }
        }
        // SIGTERM waits for [daemon] shutdown_timeout (10m).
        assert!(
            pod["terminationGracePeriodSeconds"].as_u64().unwrap() > 600,
            "{name}"
        );
    }
    for cron in of_kind("CronJob") {
        assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    }
    for d in of_kind("Deployment") {
        let c = &pod_spec(d)["containers"][0];
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/health");
        assert!(c["livenessProbe"]["httpGet"]["path"].is_string());
        assert_eq!(d["spec"]["replicas"], 1, "never two daemons");
    }
    // Placeholders only: nothing that could be a real credential.
    for secret in of_kind("Secret") {
        for (key, value) in secret["stringData"].as_object().unwrap() {
            assert!(
                value.as_str().unwrap().contains("CHANGE-ME"),
                "Secret key {key} is not a placeholder"
            );
        }
    }
}

#[test]
fn container_image_is_built_locked_and_runs_as_its_own_user() {
    let file = read("deploy/container/Containerfile");
    assert!(file.contains("cargo build --release --locked"));
    assert!(file.contains("\nENTRYPOINT [\"cairn\"]\n"));
    assert!(file.contains("\nCMD [\"daemon\", \"--listen\", \"0.0.0.0:9180\"]\n"));
    assert!(file.contains("useradd --system --uid 10001"));
    assert_eq!(image_uid(), 10001);
    for line in ["target/", "fuzz/corpus/"] {
        assert!(
            read(".dockerignore").lines().any(|l| l == line),
            ".dockerignore lacks {line}"
        );
    }
    let link = fs::read_link(root().join(".containerignore")).expect(".containerignore");
    assert_eq!(link, Path::new(".dockerignore"));
}

/// Every configuration in the repository a user may copy: examples/*.toml
/// and the cairn.toml of the Kubernetes ConfigMap (extracted into `dir`).
fn configurations(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    for name in ["webapp-postgres.toml", "sqlite-app.toml", "nas.toml"] {
        assert!(
            files.iter().any(|f| f.ends_with(name)),
            "examples/{name} is missing"
        );
    }
    // The ConfigMap's block scalar, unindented (no YAML parser needed).
    let map = read("deploy/kubernetes/configmap.yaml");
    let block = map
        .split_once("  cairn.toml: |\n")
        .expect("configmap.yaml: cairn.toml as a block")
        .1;
    let toml: String = block
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect();
    let extracted = dir.join("configmap-cairn.toml");
    fs::write(&extracted, toml).unwrap();
    files.push(extracted);
    files
}

/// Every `{ env = "VAR" }` in a configuration, at any depth.
fn env_references(value: &toml::Value, out: &mut BTreeSet<String>) {
    match value {
        toml::Value::Table(t) => {
            if let (Some(toml::Value::String(var)), 1) = (t.get("env"), t.len()) {
                out.insert(var.clone());
            }
            t.values().for_each(|v| env_references(v, out));
        }
        toml::Value::Array(a) => a.iter().for_each(|v| env_references(v, out)),
        _ => {}
    }
}

/// Keys whose values are secrets: they must come from `{ env }`/`{ file }`.
fn secret_key(key: &str) -> bool {
    !key.ends_with("_file")
        && ["password", "secret", "token", "access_key", "webhook"]
            .iter()
            .any(|s| key.contains(s))
}

fn no_inline_secrets(file: &Path, path: &str, value: &toml::Value) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let here = format!("{path}.{k}");
                if secret_key(k) {
                    let is_reference = v.as_table().is_some_and(|r| {
                        r.len() == 1 && (r.contains_key("env") || r.contains_key("file"))
                    });
                    assert!(
                        is_reference,
                        "{}: {here} is written inline; use {{ env = … }} or {{ file = … }}",
                        file.display()
                    );
                }
                if k == "url" {
                    let url = v.as_str().unwrap_or_default();
                    let userinfo = url
                        .split_once("://")
                        .and_then(|(_, rest)| rest.split('/').next())
                        .and_then(|authority| authority.rsplit_once('@'))
                        .map(|(userinfo, _)| userinfo);
                    assert!(
                        !userinfo.is_some_and(|u| u.contains(':')),
                        "{}: {here} holds a password",
                        file.display()
                    );
                }
                no_inline_secrets(file, &here, v);
            }
        }
        toml::Value::Array(a) => a.iter().for_each(|v| no_inline_secrets(file, path, v)),
        _ => {}
    }
}

#[test]
fn example_configurations_hold_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    for file in configurations(dir.path()) {
        let text = fs::read_to_string(&file).unwrap();
        let parsed: toml::Value =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{} is not TOML: {e}", file.display()));
        no_inline_secrets(&file, "", &parsed);
    }
}

#[test]
fn timer_drop_ins_schedule_jobs_of_the_examples() {
    let mut jobs = BTreeSet::new();
    for entry in fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let t: toml::Table = toml::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
            if let Some(j) = t.get("jobs").and_then(|j| j.as_table()) {
                jobs.extend(j.keys().cloned());
            }
        }
    }
    let mut drop_ins = 0;
    for entry in fs::read_dir(root().join("deploy/systemd")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(job) = name
            .strip_prefix("cairn-job@")
            .and_then(|n| n.strip_suffix(".timer.d"))
        {
            assert!(jobs.contains(job), "{name}: no example has a job {job}");
            drop_ins += 1;
        }
    }
    assert!(drop_ins > 0, "deploy/systemd has no schedule drop-in");
}

/// `cairn config validate` accepts every example as it is: no file it
/// names (sources, secret files, key files) exists here, only the
/// environment variables it references are set, to placeholders.
#[test]
fn example_configurations_pass_config_validate() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    fs::create_dir(&home).unwrap();
    for file in configurations(dir.path()) {
        let parsed: toml::Value = toml::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
        let mut vars = BTreeSet::new();
        env_references(&parsed, &mut vars);
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("cairn"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .args(["config", "validate", "--config"])
            .arg(&file);
        for var in &vars {
            c.env(var, "placeholder-for-config-validate");
        }
        let o = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success(),
            "cairn config validate --config {} failed ({}):\n{}",
            file.display(),
            o.status,
            text(&o)
        );
        assert!(
            !stderr.to_lowercase().contains("warn"),
            "cairn config validate --config {} warned:\n{stderr}",
            file.display()
        );
    }
}
