//! Directory archives written as a stream, with nothing to seek back to:
//! tar (POSIX ustar, with a pax header for a path, link or size ustar
//! cannot hold) and zip (entries stored uncompressed, each followed by a
//! data descriptor with its CRC-32 and sizes, then the central
//! directory). Backup data is usually compressed already and the download
//! goes over loopback or a LAN, so storing keeps the server's CPU free;
//! zip is limited to what a zip without ZIP64 holds (4 GiB, 65 535
//! entries) and a larger directory is refused up front: use tar for it.
//! Names are bytes, as the snapshot holds them: a name that is not UTF-8
//! goes into a tar as is (with pax `hdrcharset=BINARY` when a pax record
//! carries it) and into a zip without the UTF-8 flag, so `tar` and
//! `unzip` on Linux extract the same bytes.
//! Only the framing is here: the caller sends the files' bytes between
//! [`Writer::begin`] and [`Writer::end`].

/// What one archive entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    /// The link's target, as stored.
    Symlink(Vec<u8>),
}

/// One entry: its path inside the archive (relative, `/`-separated,
/// without a trailing `/`), its mode bits and time.
#[derive(Clone, Debug)]
pub struct Entry {
    pub path: Vec<u8>,
    pub kind: EntryKind,
    pub mode: u32,
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub mtime: i64,
    pub uid: u32,
    pub gid: u32,
}

/// The archive formats served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Tar,
    Zip,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Tar => "tar",
            Format::Zip => "zip",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Tar => "application/x-tar",
            Format::Zip => "application/zip",
        }
    }
}

/// The most a zip without ZIP64 can describe.
pub const ZIP_MAX_BYTES: u64 = 0xFFFF_FFFE;
pub const ZIP_MAX_ENTRIES: usize = 0xFFFE;

/// What a zip of some entries would need: counted before the first byte
/// is sent, as a zip without ZIP64 cannot describe more.
#[derive(Clone, Copy, Debug, Default)]
pub struct ZipTotals {
    entries: usize,
    bytes: u64,
    /// The longest name, with a directory's `/`.
    longest: usize,
}

impl ZipTotals {
    pub fn add(&mut self, e: &Entry) {
        self.entries += 1;
        self.bytes += e.size + 100 + 2 * e.path.len() as u64;
        self.longest = self.longest.max(e.path.len() + 1);
    }

    /// Why the entries counted cannot be put in a zip. Counting stops at
    /// the first limit passed, so the message names the limit, not a
    /// total.
    pub fn refusal(&self) -> Option<String> {
        if self.entries > ZIP_MAX_ENTRIES {
            Some(format!(
                "more than {ZIP_MAX_ENTRIES} entries, more than a zip holds: use format=tar"
            ))
        } else if self.bytes > ZIP_MAX_BYTES {
            Some("more than 4 GiB, more than a zip holds: use format=tar".into())
        } else if self.longest > usize::from(u16::MAX) {
            // A zip header gives a name's length in 16 bits.
            Some(format!(
                "a path longer than {} bytes, more than a zip holds: use format=tar",
                u16::MAX
            ))
        } else {
            None
        }
    }
}

/// An archive being written: call `begin`, feed a file's bytes to
/// `data`, call `end`, for each entry; then `finish`. Each returns the
/// bytes to send.
pub struct Writer {
    format: Format,
    offset: u64,
    current: Option<Current>,
    central: Vec<u8>,
    count: usize,
}

struct Current {
    entry: Entry,
    header_offset: u64,
    crc: Crc32,
    written: u64,
}

impl Writer {
    pub fn new(format: Format) -> Writer {
        Writer {
            format,
            offset: 0,
            current: None,
            central: Vec::new(),
            count: 0,
        }
    }

    fn out(&mut self, v: Vec<u8>) -> Vec<u8> {
        self.offset += v.len() as u64;
        v
    }

    /// The header of `entry`.
    pub fn begin(&mut self, entry: Entry) -> Vec<u8> {
        let header = match self.format {
            Format::Tar => tar_header(&entry),
            Format::Zip => zip_local_header(&entry),
        };
        self.current = Some(Current {
            entry,
            header_offset: self.offset,
            crc: Crc32::new(),
            written: 0,
        });
        let mut head = self.out(header);
        if let Some(EntryKind::Symlink(target)) =
            self.current.as_ref().map(|c| c.entry.kind.clone())
        {
            if self.format == Format::Zip {
                // A zip symlink's data is its target.
                head.extend(self.data(&target));
            }
        }
        head
    }

    /// Bytes of the current file.
    pub fn data(&mut self, bytes: &[u8]) -> Vec<u8> {
        if let Some(c) = &mut self.current {
            c.crc.update(bytes);
            c.written += bytes.len() as u64;
        }
        self.out(bytes.to_vec())
    }

    /// The end of the current entry. A file that gave fewer bytes than its
    /// size said is padded with zeros in a tar (its header is sent).
    pub fn end(&mut self) -> Vec<u8> {
        let Some(c) = self.current.take() else {
            return Vec::new();
        };
        self.count += 1;
        let tail = match self.format {
            Format::Tar => {
                let size = if c.entry.kind == EntryKind::File {
                    c.entry.size
                } else {
                    0
                };
                let mut t = vec![0u8; size.saturating_sub(c.written) as usize];
                let padded = size.max(c.written);
                t.extend(std::iter::repeat_n(
                    0u8,
                    ((512 - padded % 512) % 512) as usize,
                ));
                t
            }
            Format::Zip => {
                let crc = c.crc.finish();
                let size = c.written as u32;
                let mut d = Vec::with_capacity(16);
                d.extend(0x0807_4b50u32.to_le_bytes());
                d.extend(crc.to_le_bytes());
                d.extend(size.to_le_bytes());
                d.extend(size.to_le_bytes());
                self.central.extend(zip_central_entry(
                    &c.entry,
                    crc,
                    size,
                    c.header_offset as u32,
                ));
                d
            }
        };
        self.out(tail)
    }

    /// The archive's end.
    pub fn finish(mut self) -> Vec<u8> {
        match self.format {
            Format::Tar => vec![0u8; 1024],
            Format::Zip => {
                let cd_offset = self.offset as u32;
                let mut v = std::mem::take(&mut self.central);
                let cd_size = v.len() as u32;
                let n = self.count as u16;
                v.extend(0x0605_4b50u32.to_le_bytes());
                v.extend([0u8; 4]);
                v.extend(n.to_le_bytes());
                v.extend(n.to_le_bytes());
                v.extend(cd_size.to_le_bytes());
                v.extend(cd_offset.to_le_bytes());
                v.extend([0u8; 2]);
                v
            }
        }
    }
}

fn octal(field: &mut [u8], v: u64) {
    let n = field.len() - 1;
    let s = format!("{v:0n$o}");
    let b = s.as_bytes();
    // Callers keep values within the field (a pax record holds a larger size).
    field[..n].copy_from_slice(&b[b.len() - n..]);
}

/// One pax record: `LEN key=value\n`, LEN counting itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let mut body = format!(" {key}=").into_bytes();
    body.extend_from_slice(value);
    body.push(b'\n');
    let mut len = body.len() + 1;
    while format!("{len}").len() + body.len() != len {
        len += 1;
    }
    let mut out = len.to_string().into_bytes();
    out.extend(body);
    out
}

/// The fields of one ustar header besides its name, link and size.
struct Owner {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

fn ustar_block(o: &Owner, name: &[u8], size: u64, flag: u8, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], u64::from(o.mode & 0o7777));
    octal(&mut h[108..116], u64::from(o.uid).min(0o7777777));
    octal(&mut h[116..124], u64::from(o.gid).min(0o7777777));
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], o.mtime.clamp(0, 0o77777777777) as u64);
    h[156] = flag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// Names that fit a ustar header field (ASCII-only is not required, but
/// the length is in bytes).
fn fits(s: &[u8], n: usize) -> bool {
    s.len() < n
}

fn tar_header(e: &Entry) -> Vec<u8> {
    let mut name = e.path.clone();
    if e.kind == EntryKind::Dir {
        name.push(b'/');
    }
    let (flag, link, size) = match &e.kind {
        EntryKind::Dir => (b'5', Vec::new(), 0),
        EntryKind::File => (b'0', Vec::new(), e.size),
        EntryKind::Symlink(t) => (b'2', t.clone(), 0),
    };
    let mut out = Vec::new();
    let mut pax = Vec::new();
    let (long_name, long_link) = (!fits(&name, 100), !fits(&link, 100));
    // pax records are UTF-8 unless this says otherwise (POSIX pax,
    // `hdrcharset`); GNU tar and bsdtar then take the bytes as they are.
    if (long_name && std::str::from_utf8(&name).is_err())
        || (long_link && std::str::from_utf8(&link).is_err())
    {
        pax.extend(pax_record("hdrcharset", b"BINARY"));
    }
    if long_name {
        pax.extend(pax_record("path", &name));
    }
    if long_link {
        pax.extend(pax_record("linkpath", &link));
    }
    if size > 0o77777777777 {
        pax.extend(pax_record("size", size.to_string().as_bytes()));
    }
    if !pax.is_empty() {
        let pax_len = pax.len() as u64;
        let root = Owner {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: e.mtime,
        };
        out.extend(ustar_block(&root, b"PaxHeader", pax_len, b'x', b""));
        out.extend(&pax);
        out.extend(std::iter::repeat_n(
            0u8,
            ((512 - pax_len % 512) % 512) as usize,
        ));
    }
    let short = |s: &[u8]| -> Vec<u8> {
        if fits(s, 100) {
            return s.to_vec();
        }
        // The pax record holds it; the ustar field gets a prefix of it,
        // cut at a character boundary when it is text.
        let mut end = 99;
        if let Ok(text) = std::str::from_utf8(s) {
            while !text.is_char_boundary(end) {
                end -= 1;
            }
        }
        s[..end].to_vec()
    };
    let size_field = if size > 0o77777777777 { 0 } else { size };
    let owner = Owner {
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        mtime: e.mtime,
    };
    out.extend(ustar_block(
        &owner,
        &short(&name),
        size_field,
        flag,
        &short(&link),
    ));
    out
}

/// MS-DOS time and date of a Unix time (UTC; 1980 at the earliest).
fn dos_time(secs: i64) -> (u16, u16) {
    let t =
        jiff::Timestamp::from_second(secs.max(315_532_800)).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let d = t.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    let time = ((d.hour() as u16) << 11) | ((d.minute() as u16) << 5) | (d.second() as u16 / 2);
    let date = (((d.year() - 1980).clamp(0, 127) as u16) << 9)
        | ((d.month() as u16) << 5)
        | d.day() as u16;
    (time, date)
}

fn zip_name(e: &Entry) -> Vec<u8> {
    let mut name = e.path.clone();
    if e.kind == EntryKind::Dir {
        name.push(b'/');
    }
    name
}

/// Flags: sizes and CRC in a data descriptor (bit 3), and the name in
/// UTF-8 (bit 11) when it is; another name is left as bytes, which
/// `unzip` on Unix writes as they are for an archive made on Unix.
fn zip_flags(name: &[u8]) -> u16 {
    if std::str::from_utf8(name).is_ok() {
        0x0808
    } else {
        0x0008
    }
}

fn zip_local_header(e: &Entry) -> Vec<u8> {
    let name = zip_name(e);
    let (time, date) = dos_time(e.mtime);
    let mut v = Vec::with_capacity(30 + name.len());
    v.extend(0x0403_4b50u32.to_le_bytes());
    v.extend(20u16.to_le_bytes());
    v.extend(zip_flags(&name).to_le_bytes());
    v.extend(0u16.to_le_bytes()); // stored
    v.extend(time.to_le_bytes());
    v.extend(date.to_le_bytes());
    v.extend([0u8; 12]); // CRC and sizes: in the data descriptor
    v.extend((name.len() as u16).to_le_bytes());
    v.extend(0u16.to_le_bytes());
    v.extend(&name);
    v
}

fn zip_central_entry(e: &Entry, crc: u32, size: u32, offset: u32) -> Vec<u8> {
    let name = zip_name(e);
    let (time, date) = dos_time(e.mtime);
    let file_type: u32 = match e.kind {
        EntryKind::Dir => 0o040000,
        EntryKind::File => 0o100000,
        EntryKind::Symlink(_) => 0o120000,
    };
    let dos_dir = if e.kind == EntryKind::Dir { 0x10 } else { 0 };
    let attrs = ((file_type | (e.mode & 0o7777)) << 16) | dos_dir;
    let mut v = Vec::with_capacity(46 + name.len());
    v.extend(0x0201_4b50u32.to_le_bytes());
    v.extend((3u16 << 8 | 20).to_le_bytes()); // made on Unix, zip 2.0
    v.extend(20u16.to_le_bytes());
    v.extend(zip_flags(&name).to_le_bytes());
    v.extend(0u16.to_le_bytes());
    v.extend(time.to_le_bytes());
    v.extend(date.to_le_bytes());
    v.extend(crc.to_le_bytes());
    v.extend(size.to_le_bytes());
    v.extend(size.to_le_bytes());
    v.extend((name.len() as u16).to_le_bytes());
    v.extend([0u8; 8]); // extra, comment, disk, internal attributes
    v.extend(attrs.to_le_bytes());
    v.extend(offset.to_le_bytes());
    v.extend(&name);
    v
}

/// CRC-32 (IEEE, reflected), as zip uses it.
struct Crc32(u32);

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

impl Crc32 {
    fn new() -> Crc32 {
        Crc32(0xFFFF_FFFF)
    }
    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = CRC_TABLE[((self.0 ^ u32::from(b)) & 0xFF) as usize] ^ (self.0 >> 8);
        }
    }
    fn finish(&self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_of_the_check_string() {
        let mut c = Crc32::new();
        c.update(b"123456789");
        assert_eq!(c.finish(), 0xCBF4_3926);
    }

    #[test]
    fn pax_records_count_their_own_length() {
        let r = pax_record("path", "x".repeat(95).as_bytes());
        let text = String::from_utf8(r.clone()).unwrap();
        let len: usize = text.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(len, r.len());
    }

    #[test]
    fn tar_headers_are_blocks_with_a_good_checksum() {
        let e = Entry {
            path: b"a/b.txt".to_vec(),
            kind: EntryKind::File,
            mode: 0o644,
            size: 3,
            mtime: 1_800_000_000,
            uid: 1000,
            gid: 1000,
        };
        let mut w = Writer::new(Format::Tar);
        let mut all = w.begin(e);
        all.extend(w.data(b"abc"));
        all.extend(w.end());
        all.extend(w.finish());
        assert_eq!(all.len(), 512 + 512 + 1024);
        let h = &all[..512];
        let mut sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        sum -= h[148..156].iter().map(|&b| u32::from(b)).sum::<u32>();
        sum += 8 * u32::from(b' ');
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        assert_eq!(sum, stored);
        assert_eq!(&all[512..515], b"abc");
    }

    fn entry(path: &[u8], kind: EntryKind, size: u64) -> Entry {
        Entry {
            path: path.to_vec(),
            kind,
            mode: 0o644,
            size,
            mtime: 1_800_000_000,
            uid: 0,
            gid: 0,
        }
    }

    /// An archive of `entries`, each file's bytes being its own path.
    fn archive(format: Format, entries: &[Entry]) -> Vec<u8> {
        let mut w = Writer::new(format);
        let mut all = Vec::new();
        for e in entries {
            all.extend(w.begin(e.clone()));
            if e.kind == EntryKind::File {
                all.extend(w.data(&e.path));
            }
            all.extend(w.end());
        }
        all.extend(w.finish());
        all
    }

    #[test]
    fn names_that_are_not_utf8_reach_tar_as_their_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let long = [b"d/".as_slice(), &[0xff; 150], b".bin"].concat();
        let unicode = format!("d/{}", "ünïcode-".repeat(12)).into_bytes();
        let entries = [
            entry(b"d", EntryKind::Dir, 0),
            entry(b"d/short-\xfe", EntryKind::File, 9),
            entry(&long, EntryKind::File, long.len() as u64),
            entry(
                b"d/link",
                EntryKind::Symlink([&[0xfe; 120][..], b"/t"].concat()),
                0,
            ),
            entry(&unicode, EntryKind::File, unicode.len() as u64),
        ];
        let tar = archive(Format::Tar, &entries);
        let text = String::from_utf8_lossy(&tar);
        assert_eq!(
            text.matches("hdrcharset=BINARY").count(),
            2,
            "long names only"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.tar"), &tar).unwrap();
        let out = std::process::Command::new("tar")
            .arg("-xf")
            .arg("a.tar")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        for e in &entries[1..] {
            let p = dir.path().join(std::ffi::OsStr::from_bytes(&e.path));
            match &e.kind {
                EntryKind::File => assert_eq!(std::fs::read(&p).unwrap(), e.path),
                EntryKind::Symlink(t) => {
                    assert_eq!(
                        std::fs::read_link(&p).unwrap().as_os_str().as_bytes(),
                        &t[..]
                    )
                }
                EntryKind::Dir => unreachable!(),
            }
        }
    }

    #[test]
    fn zip_names_are_flagged_utf8_only_when_they_are() {
        let zip = archive(
            Format::Zip,
            &[
                entry(b"a\xff", EntryKind::File, 2),
                entry(b"\xc3\xbc", EntryKind::File, 2),
            ],
        );
        // Local headers: the flags at byte 6.
        let flags = |at: usize| u16::from_le_bytes([zip[at + 6], zip[at + 7]]);
        assert_eq!(flags(0), 0x0008);
        let second = 30 + 2 + 2 + 16;
        assert_eq!(&zip[second..second + 4], b"PK\x03\x04");
        assert_eq!(flags(second), 0x0808);
    }

    #[test]
    fn zip_totals_refuse_what_a_zip_cannot_hold() {
        let mut t = ZipTotals::default();
        t.add(&entry(b"a", EntryKind::File, 1 << 20));
        assert_eq!(t.refusal(), None);
        t.add(&entry(b"b", EntryKind::File, ZIP_MAX_BYTES));
        assert!(t.refusal().unwrap().contains("4 GiB"));
        let mut t = ZipTotals::default();
        for _ in 0..=ZIP_MAX_ENTRIES {
            t.add(&entry(b"e", EntryKind::Dir, 0));
        }
        assert!(t.refusal().unwrap().contains("entries"));
        let mut t = ZipTotals::default();
        t.add(&entry(
            &vec![b'a'; usize::from(u16::MAX) - 1],
            EntryKind::Dir,
            0,
        ));
        assert_eq!(t.refusal(), None, "65,535 bytes with the `/`");
        t.add(&entry(
            &vec![b'a'; usize::from(u16::MAX)],
            EntryKind::File,
            0,
        ));
        assert!(t.refusal().unwrap().contains("path longer"));
    }
}
