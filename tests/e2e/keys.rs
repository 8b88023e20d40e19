//! `cairn key`: slots listed, added (passphrase or generated key file),
//! removed and replaced on every replica; the slot in use and the last
//! slot are protected; a wrong passphrase writes nothing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::*;

const CHEAP: [&str; 4] = ["--kdf-memory-kib", "8192", "--kdf-iterations", "1"];

fn slots(env: &Env, repos: &[&Path], pass: &str) -> serde_json::Value {
    let out = env
        .cairn(repos)
        .env("CAIRN_PASSWORD", pass)
        .args(["--json", "key", "list"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    last_json(&out.stdout)
}

fn opens_with(env: &Env, repos: &[&Path], pass: &str) -> Option<i32> {
    let mut c = env.cairn(repos);
    c.env("CAIRN_PASSWORD", pass).arg("snapshots");
    c.output().unwrap().status.code()
}

#[test]
fn key_slots_are_managed_on_every_replica() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    env.init(&[&a, &b]);
    let list = slots(&env, &[&a, &b], PASSWORD);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["in_use"], true);
    let first = list[0]["id"].as_str().unwrap().to_string();

    // key status: everything is under epoch 1, on both replicas.
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), noise(1, 50 << 10)).unwrap();
    assert_eq!(env.backup_json(&[&a, &b], &[src.as_os_str()]).0, 0);
    let out = env
        .cairn(&[&a, &b])
        .args(["--json", "key", "status"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let st = last_json(&out.stdout);
    assert_eq!(st["current_epoch"], 1, "{st}");
    for r in st["replicas"].as_array().unwrap() {
        let e = &r["epochs"][0];
        assert_eq!(e["epoch"], 1, "{st}");
        assert_eq!(e["snapshots"], 1, "{st}");
        assert!(e["packs"].as_u64().unwrap() >= 1, "{st}");
    }

    // A wrong passphrase: exit 12, nothing written.
    let pf = env.path("new-pass");
    fs::write(&pf, "a second passphrase\n").unwrap();
    let out = env
        .cairn(&[&a, &b])
        .env("CAIRN_PASSWORD", "wrong")
        .args(["key", "add", "--new-password-file"])
        .arg(&pf)
        .args(CHEAP)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
    assert_eq!(files_in(&a, "keys").len(), 1);

    // Add a passphrase slot with a label: on both replicas, and it opens.
    let out = env
        .cairn(&[&a, &b])
        .args([
            "--json",
            "key",
            "add",
            "--label",
            "ci",
            "--new-password-file",
        ])
        .arg(&pf)
        .args(CHEAP)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ci = last_json(&out.stdout)["id"].as_str().unwrap().to_string();
    assert_eq!(files_in(&a, "keys").len(), 2);
    assert_eq!(files_in(&b, "keys").len(), 2);
    assert_eq!(opens_with(&env, &[&a], "a second passphrase"), Some(0));
    assert_eq!(opens_with(&env, &[&b], "a second passphrase"), Some(0));
    let list = slots(&env, &[&a, &b], PASSWORD);
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == ci.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["label"], "ci");
    assert_eq!(entry["kind"], "passphrase");
    assert_eq!(entry["replicas"].as_array().unwrap().len(), 2);

    // A generated key file: 0600, opens with --password-file; never over
    // an existing file.
    let kf = env.path("machine.key");
    env.cairn(&[&a, &b])
        .args(["key", "add", "--new-key-file"])
        .arg(&kf)
        .assert()
        .success();
    assert_eq!(
        fs::metadata(&kf).unwrap().permissions().mode() & 0o777,
        0o600
    );
    env.cairn(&[&a, &b])
        .env_remove("CAIRN_PASSWORD")
        .arg("--password-file")
        .arg(&kf)
        .arg("snapshots")
        .assert()
        .success();
    let out = env
        .cairn(&[&a, &b])
        .args(["key", "add", "--new-key-file"])
        .arg(&kf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // The slot in use needs --force; removing another one works by prefix
    // and its passphrase stops opening the repository.
    let out = env
        .cairn(&[&a, &b])
        .args(["key", "remove", &first[..10]])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
    env.cairn(&[&a, &b])
        .args(["key", "remove", &ci[..10]])
        .assert()
        .success();
    assert_eq!(opens_with(&env, &[&a, &b], "a second passphrase"), Some(12));

    // passwd: the old passphrase stops working, the new one opens both.
    let p2 = env.path("newer");
    fs::write(&p2, "the newest passphrase\n").unwrap();
    env.cairn(&[&a, &b])
        .args(["key", "passwd", "--new-password-file"])
        .arg(&p2)
        .args(CHEAP)
        .assert()
        .success();
    assert_eq!(opens_with(&env, &[&a, &b], PASSWORD), Some(12));
    assert_eq!(
        opens_with(&env, &[&a, &b], "the newest passphrase"),
        Some(0)
    );

    // Down to the last slot: it cannot be removed.
    let list = slots(&env, &[&a, &b], "the newest passphrase");
    let machine = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["in_use"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.cairn(&[&a, &b])
        .env("CAIRN_PASSWORD", "the newest passphrase")
        .args(["key", "remove", &machine])
        .assert()
        .success();
    let out = env
        .cairn(&[&a, &b])
        .env("CAIRN_PASSWORD", "the newest passphrase")
        .args(["key", "remove", "--force", ""])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("last"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn audit(env: &Env, repos: &[&Path]) -> (i32, serde_json::Value) {
    let out = env
        .cairn(repos)
        .args(["--json", "key", "audit"])
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), last_json(&out.stdout))
}

/// Every key operation is in the trail on every replica; an altered,
/// removed or swapped entry is reported with exit 5.
#[test]
fn the_audit_trail_records_key_operations_and_shows_tampering() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    env.init(&[&a, &b]);
    let pf = env.path("p");
    fs::write(&pf, "second audit passphrase\n").unwrap();
    for _ in 0..2 {
        let out = env
            .cairn(&[&a, &b])
            .args(["--json", "key", "add", "--new-password-file"])
            .arg(&pf)
            .args(CHEAP)
            .output()
            .unwrap();
        assert!(out.status.success());
        let id = last_json(&out.stdout)["id"].as_str().unwrap().to_string();
        env.cairn(&[&a, &b])
            .args(["key", "remove", &id])
            .assert()
            .success();
    }
    let (code, trail) = audit(&env, &[&a, &b]);
    assert_eq!(code, 0, "{trail}");
    for r in trail["replicas"].as_array().unwrap() {
        let ops: Vec<&str> = r["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["operation"].as_str().unwrap())
            .collect();
        assert_eq!(
            ops,
            ["key add", "key remove", "key add", "key remove"],
            "{trail}"
        );
        assert!(r["entries"][0]["user"].is_string() && r["entries"][0]["host"].is_string());
    }

    let entry = |n: u32| a.join("audit").join(format!("{n:010}"));
    let keep = |n: u32| fs::read(entry(n)).unwrap();
    let (e2, e3) = (keep(2), keep(3));
    // Altered.
    flip_byte(&entry(2), 60);
    let (code, t) = audit(&env, &[&a]);
    assert_eq!(code, 5, "{t}");
    assert!(t.to_string().contains("0000000002"), "{t}");
    fs::write(entry(2), &e2).unwrap();
    // Swapped.
    fs::write(entry(2), &e3).unwrap();
    fs::write(entry(3), &e2).unwrap();
    assert_eq!(audit(&env, &[&a]).0, 5);
    fs::write(entry(2), &e2).unwrap();
    fs::write(entry(3), &e3).unwrap();
    // Removed from the middle.
    fs::remove_file(entry(2)).unwrap();
    assert_eq!(audit(&env, &[&a]).0, 5);
    fs::write(entry(2), &e2).unwrap();
    assert_eq!(audit(&env, &[&a]).0, 0);
    // The other replica was never touched.
    assert_eq!(audit(&env, &[&b]).0, 0);
}

/// A slot for an external key manager: its 32-byte key comes from a
/// command (here a script that prints one), both when the slot is added
/// and, through CAIRN_PASSWORD_COMMAND, when the repository is opened.
#[test]
fn a_key_command_slot_opens_with_the_key_the_command_prints() {
    let env = Env::new();
    let a = env.path("a");
    env.init(&[&a]);
    let script = env.path("kms.sh");
    fs::write(&script, format!("#!/bin/sh\necho {}\n", "5a".repeat(32))).unwrap();
    let cmd = format!("sh {}", script.display());
    let out = env
        .cairn(&[&a])
        .args([
            "--json",
            "key",
            "add",
            "--label",
            "vault",
            "--new-key-command",
            &cmd,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = last_json(&out.stdout)["id"].as_str().unwrap().to_string();
    let list = slots(&env, &[&a], PASSWORD);
    let slot = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .unwrap();
    assert_eq!(slot["kind"], "command");
    assert_eq!(slot["label"], "vault");
    env.cairn(&[&a])
        .env_remove("CAIRN_PASSWORD")
        .env("CAIRN_PASSWORD_COMMAND", &cmd)
        .arg("snapshots")
        .assert()
        .success();

    // A command that prints something else is refused; nothing is added.
    let bad = env.path("bad.sh");
    fs::write(&bad, "#!/bin/sh\necho not-a-key\n").unwrap();
    let out = env
        .cairn(&[&a])
        .args(["key", "add", "--new-key-command"])
        .arg(format!("sh {}", bad.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("64 hex digits"));
    assert_eq!(files_in(&a, "keys").len(), 2);
}

/// A replica that missed key operations receives their audit entries from
/// `sync`, and its trail then verifies.
#[test]
fn sync_brings_the_audit_trail_to_a_lagging_replica() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    env.init(&[&a, &b]);
    let kf = env.path("k");
    env.cairn(&[&a])
        .args(["key", "add", "--new-key-file"])
        .arg(&kf)
        .assert()
        .success();
    assert_eq!(files_in(&b, "audit").len(), 0);
    let out = env
        .cairn(&[&a, &b])
        .args(["--json", "sync"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, trail) = audit(&env, &[&b]);
    assert_eq!(code, 0, "{trail}");
    assert_eq!(
        trail["replicas"][0]["entries"].as_array().unwrap().len(),
        1,
        "{trail}"
    );
}

/// A giant object planted in keys/ is not a slot: `key list` skips it
/// without downloading it.
#[test]
fn key_list_skips_a_giant_planted_object() {
    let env = Env::new();
    let a = env.path("a");
    env.init(&[&a]);
    let f = fs::File::create(a.join("keys").join("ff".repeat(32))).unwrap();
    f.set_len(3 << 30).unwrap(); // sparse
    drop(f);
    let mut c = env.cairn(&[&a]);
    c.args(["--json", "key", "list"]);
    let (out, peak_kib) = output_with_peak_rss(&c);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(last_json(&out.stdout).as_array().unwrap().len(), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a key slot"));
    assert!(peak_kib < 256 * 1024, "peak RSS {peak_kib} KiB");
}

/// `key add`, save a copy of `keys/`, `key remove`: the removed slot's
/// passphrase opens nothing, also with its slot put back from the copy;
/// after `key rotate --reencrypt` and `key retire 1`, not even with the
/// old keyring generations put back too, and the old data key is in no
/// generation stored anywhere.
#[test]
fn a_removed_slot_opens_nothing_even_from_a_saved_copy() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    env.init(&[&a, &b]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), noise(7, 300 << 10)).unwrap();
    assert_eq!(env.backup_json(&[&a, &b], &[src.as_os_str()]).0, 0);
    let pf = env.path("bob-pass");
    fs::write(&pf, "bob's passphrase\n").unwrap();
    let out = env
        .cairn(&[&a, &b])
        .args([
            "--json",
            "key",
            "add",
            "--label",
            "bob",
            "--new-password-file",
        ])
        .arg(&pf)
        .args(CHEAP)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bob = last_json(&out.stdout)["id"].as_str().unwrap().to_string();
    assert_eq!(opens_with(&env, &[&a, &b], "bob's passphrase"), Some(0));
    let saved = env.path("saved");
    fs::create_dir_all(saved.join("keys")).unwrap();
    fs::create_dir_all(saved.join("keyring")).unwrap();
    for dir in ["keys", "keyring"] {
        for f in files_in(&a, dir) {
            fs::copy(&f, saved.join(dir).join(f.file_name().unwrap())).unwrap();
        }
    }
    env.cairn(&[&a, &b])
        .args(["key", "remove", &bob[..10]])
        .assert()
        .success();
    assert_eq!(
        files_in(&a, "keyring").len(),
        1,
        "older generations are deleted"
    );
    let refused = |env: &Env| {
        let out = env
            .cairn(&[&a, &b])
            .env("CAIRN_PASSWORD", "bob's passphrase")
            .arg("snapshots")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    assert_eq!(refused(&env).0, Some(12));
    // The slot put back from the saved copy: it unlocks, but the newest
    // generation does not name it.
    let put_back = |dir: &str| {
        for f in files_in(&saved, dir) {
            fs::copy(&f, a.join(dir).join(f.file_name().unwrap())).unwrap();
        }
    };
    put_back("keys");
    let (code, err) = refused(&env);
    assert_eq!(code, Some(12), "{err}");
    assert!(err.contains("was removed"), "{err}");
    // Rotate with re-encryption, retire epoch 1.
    let out = env
        .cairn(&[&a, &b])
        .args(["--json", "key", "rotate", "--reencrypt"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rot = last_json(&out.stdout);
    assert_eq!(rot["rotate"]["epoch"], 2, "{rot}");
    assert_eq!(rot["reencrypt"]["complete"], true, "{rot}");
    env.cairn(&[&a, &b])
        .args(["key", "retire", "1"])
        .assert()
        .success();
    // Now even the old generations put back open nothing stored: the slot
    // reaches an old keyring, whose only data key encrypts no object.
    put_back("keys");
    put_back("keyring");
    for repos in [vec![a.as_path()], vec![a.as_path(), b.as_path()]] {
        let out = env
            .cairn(&repos)
            .env("CAIRN_PASSWORD", "bob's passphrase")
            .args(["restore", "latest", "--target"])
            .arg(env.path("bob-restore"))
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(0));
        assert!(!env.path("bob-restore").join("f").exists());
    }
    // The owner still opens and restores everything.
    let target = env.path("restore");
    env.cairn(&[&a, &b])
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_same_tree(&src, &restored(&target, &src));
}

/// A keyring generation planted by someone who can write to the storage
/// (sealed to the public slot key, with a higher number) is skipped with
/// a warning; the repository opens as before.
#[test]
fn a_planted_keyring_generation_is_skipped() {
    let env = Env::new();
    let a = env.path("a");
    env.init(&[&a]);
    let real = files_in(&a, "keyring").pop().unwrap();
    let mut g: serde_json::Value = serde_json::from_slice(&fs::read(&real).unwrap()).unwrap();
    g["generation"] = 99.into();
    fs::write(a.join("keyring/0000000099"), g.to_string()).unwrap();
    fs::write(a.join("keyring/0000000100"), "not json").unwrap();
    let out = env.cairn(&[&a]).arg("snapshots").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("keyring generation 99"), "{err}");
    assert!(err.contains("authentication failed"), "{err}");
}
