#![no_main]
//! Key slots (`format::keys::KeySlot`, public JSON), keyring generations
//! (`format::keyring::Generation`, public JSON) and the keyring inside one
//! after decryption (`Keyring::from_json`). Argon2 never runs here: a slot
//! is only unlocked when its parameters fail the bounds check, and then the
//! unlock must refuse before deriving anything; a generation is opened with
//! a made-up slot secret and must be refused.
use cairn::format::crypto::Key32;
use cairn::format::id::Id;
use cairn::format::keyring::Generation;
use cairn::format::keys::{KeySlot, Keyring, SlotSecret};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let _ = Keyring::from_json(rest);
        }
        1 => {
            let Ok(slot) = serde_json::from_slice::<KeySlot>(rest) else {
                return;
            };
            if slot.params.check().is_ok() {
                return;
            }
            let repo = slot.repository.parse::<Id>().unwrap_or(Id([0; 32]));
            let pass: secrecy::SecretString = "fuzz".to_string().into();
            let start = std::time::Instant::now();
            assert!(slot.unlock(&pass, &repo).is_err());
            assert!(
                start.elapsed() < std::time::Duration::from_millis(200),
                "unlock ran a KDF"
            );
        }
        _ => {
            let Ok(g) = Generation::parse(rest) else {
                return;
            };
            let repo = g.repository.parse::<Id>().unwrap_or(Id([0; 32]));
            let secret = SlotSecret {
                private_key: Key32([5; 32]),
                auth_key: Key32([6; 32]),
            };
            let slot = g.recipients.first().map(|r| r.slot.clone()).unwrap_or_default();
            assert!(g.open(&slot, &[9; 32], &secret, &repo).is_err());
        }
    }
});
