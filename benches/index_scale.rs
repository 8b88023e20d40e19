//! A repository whose index describes many blobs, for measuring what an
//! index of that size costs (`docs/benchmarks/index-scale.sh`): the index
//! files are real (sealed, on every replica), the packs they name do not
//! exist. A no-change backup and `check` (without `--read-data`) then load
//! the whole index; their peak RSS, divided by the blob count, is the
//! index's cost per blob.
//!
//! cargo bench --bench index_scale -- REPO_DIR BLOBS [BLOBS_PER_PACK]
//!
//! The passphrase is `CAIRN_PASSWORD`. With `SPARSE_PACKS=1` every pack
//! the index names also exists, as a sparse file of its indexed size (no
//! disk blocks), so `check` finds a whole repository instead of reporting
//! every pack missing.

use cairn::config::{select, ConfigFile, Limits};
use cairn::format::codec::Codec;
use cairn::format::crypto::{Header, ObjectKind};
use cairn::format::id::Id;
use cairn::format::index::IndexPack;
use cairn::format::pack::{BlobKind, PackEntry};
use cairn::repo::{InitOptions, Repository};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (Some(dir), Some(blobs)) = (args.first(), args.get(1)) else {
        eprintln!("usage: index_scale REPO_DIR BLOBS [BLOBS_PER_PACK]");
        std::process::exit(2);
    };
    let blobs: u64 = blobs.parse().expect("BLOBS is a number");
    let per_pack: u64 = args.get(2).map_or(16, |n| n.parse().expect("a number"));
    let pass: secrecy::SecretString = std::env::var("CAIRN_PASSWORD")
        .expect("CAIRN_PASSWORD is set")
        .into();
    let sel = select(
        &ConfigFile::default(),
        std::slice::from_ref(dir),
        Limits::default(),
    )
    .expect("a repository location");
    let mut opts = InitOptions::default();
    opts.kdf.memory_kib = 8192;
    opts.kdf.iterations = 1;
    let repo = Repository::init(sel.replicas, &pass, &opts)
        .await
        .expect("init");
    let epoch = repo.keyring().current().id;
    let mut written = 0u64;
    let mut batch = Vec::new();
    let mut files = 0u64;
    let sparse = std::env::var_os("SPARSE_PACKS").is_some_and(|v| v == "1");
    while written < blobs {
        let n = per_pack.min(blobs - written);
        // After the pack header, as a real pack lays them out.
        let mut offset = 64u32;
        let entries = (0..n)
            .map(|seq| {
                let e = PackEntry {
                    id: Id(rand::random()),
                    kind: BlobKind::Data,
                    codec: Codec::Zstd,
                    seq: seq as u32,
                    offset,
                    stored_len: 1 << 20,
                    raw_len: 1 << 20,
                };
                offset += 1 << 20;
                e
            })
            .collect();
        let (id, size) = (Id(rand::random()), u64::from(offset) + 4096);
        if sparse {
            let h = cairn::backends::Handle::new(cairn::backends::Kind::Pack, id.to_hex());
            let path = std::path::Path::new(dir).join(h.path());
            std::fs::create_dir_all(path.parent().expect("a pack has a directory"))
                .expect("creating a pack directory");
            std::fs::File::create(&path)
                .and_then(|f| f.set_len(size))
                .expect("creating a sparse pack");
        }
        batch.push(IndexPack {
            id,
            size,
            header: Header::new(ObjectKind::Pack, epoch),
            blobs: entries,
        });
        written += n;
        if batch.len() == 64 || written == blobs {
            for (name, data) in repo.seal_index_files(&batch) {
                for r in repo.replicas() {
                    repo.put_doc(r, cairn::backends::Kind::Index, &name, data.clone())
                        .await
                        .expect("storing an index file");
                }
                files += 1;
            }
            batch.clear();
        }
    }
    println!("{blobs} blobs in {files} index files at {dir}");
}
