#![no_main]
//! Key slots (`format::keys::KeySlot`, public JSON) and the keyring inside
//! one after decryption (`Keyring::from_json`). Argon2 never runs here: a
//! slot is only unwrapped when its parameters fail the bounds check, and
//! then the unwrap must refuse before deriving anything.
use cairn::format::id::Id;
use cairn::format::keys::{KeySlot, Keyring};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which & 1 == 0 {
        let _ = Keyring::from_json(rest);
        return;
    }
    let Ok(slot) = serde_json::from_slice::<KeySlot>(rest) else {
        return;
    };
    if slot.params.check().is_ok() {
        return;
    }
    let repo = slot.repository.parse::<Id>().unwrap_or(Id([0; 32]));
    let pass: secrecy::SecretString = "fuzz".to_string().into();
    let start = std::time::Instant::now();
    assert!(slot.unwrap_keyring(&pass, &repo).is_err());
    assert!(
        start.elapsed() < std::time::Duration::from_millis(200),
        "unwrap ran a KDF"
    );
});
